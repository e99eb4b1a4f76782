"""The Dataset pipeline as the pod runs it: its CLI, termination message, quality gates, and sources
that need credentials (HTTP headers from a mounted Secret's files)."""

from __future__ import annotations

import http.server
import json
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from strata_workloads.data import gates
from strata_workloads.data.config import QualityGates
from strata_workloads.data.result import (
    EXIT_INVALID_CONFIG,
    EXIT_SOURCE_ERROR,
    TERMINATION_MESSAGE_LIMIT,
    GateVerdict,
    RunResult,
    parse_termination_message,
)

_WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november".split()


def _jsonl(path: Path, count: int, seed: int, words: int, duplicates: int = 0, labels: int = 2) -> Path:
    rng = random.Random(seed)
    records = [{"text": " ".join(rng.choice(_WORDS) + str(rng.randrange(100)) for _ in range(words)),
                "label": i % labels} for i in range(count)]
    records += [dict(records[i]) for i in range(duplicates)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def _config(tmp_path: Path, source: Path, **extra) -> Path:
    config = {
        "name": "cli", "sources": [{"path": str(source), "format": "jsonl"}],
        "schema": {"textField": "text", "labelField": "label"},
        "preprocessing": {"text": {"tokenizer": {"kind": "byte"}}},
        "output": str(tmp_path / "storage"), **extra,
    }
    path = tmp_path / f"pipeline-{len(list(tmp_path.glob('pipeline-*')))}.yaml"
    path.write_text(json.dumps(config))
    return path


def _run(config: Path, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, RunResult | None]:
    log = tmp_path / "termination-log"
    log.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "strata_workloads.data", "--config", str(config),
                           "--termination-log", str(log), *args], capture_output=True, text=True, timeout=300)
    message = log.read_text() if log.exists() else None
    assert message is None or len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    return done, parse_termination_message(message)


def test_the_termination_message_reports_the_version_counts_and_a_rerun_finds_it(tmp_path):
    source = _jsonl(tmp_path / "in" / "a.jsonl", 40, seed=1, words=12, duplicates=4)
    config = _config(tmp_path, source, qualityGates={"maxDuplicateRatio": 0.5, "minRecords": 10})
    done, result = _run(config, tmp_path)
    assert done.returncode == 0, done.stderr
    assert result is not None and result.version and result.created and result.promoted
    assert result.path == str(tmp_path / "storage" / result.version)
    assert (tmp_path / "storage" / result.version / "manifest.json").is_file()
    assert result.records == {"in": 44, "out": 40, "duplicates": 4, "nearDuplicates": 0, "missing": 0,
                              "quarantined": 0, "synthetic": 0}
    assert [(gate.name, gate.passed) for gate in result.gates] == [("maxDuplicateRatio", True), ("minRecords", True)]
    assert result.gates[0].value == pytest.approx(4 / 44, abs=1e-6)
    # The stdout line says the same as the termination message.
    assert json.loads(done.stdout)["version"] == result.version

    again_done, again = _run(config, tmp_path, "--parent-version", result.version)
    assert again_done.returncode == 0 and again is not None
    assert (again.version, again.created, again.promoted) == (result.version, False, True)
    assert sorted(path.name for path in (tmp_path / "storage").iterdir()) == [result.version]


def test_a_failed_gate_keeps_the_version_but_does_not_promote_it_and_says_why(tmp_path):
    source = _jsonl(tmp_path / "in" / "a.jsonl", 20, seed=2, words=10, duplicates=10)
    done, result = _run(_config(tmp_path, source, qualityGates={"maxDuplicateRatio": 0.2}), tmp_path)
    assert done.returncode == 0, done.stderr
    assert result is not None and result.version and not result.promoted
    [gate] = result.failed_gates
    assert gate.name == "maxDuplicateRatio" and gate.value == pytest.approx(10 / 30, abs=1e-6)
    assert "10 of 30 records read were exact or near duplicates" in gate.message and "over the limit" in gate.message
    assert "quality gate maxDuplicateRatio failed" in done.stderr
    assert (tmp_path / "storage" / result.version / "manifest.json").is_file()


def test_drift_is_measured_against_the_parent_versions_reference_statistics(tmp_path):
    short = _jsonl(tmp_path / "short" / "a.jsonl", 60, seed=3, words=3)
    long = _jsonl(tmp_path / "long" / "a.jsonl", 60, seed=4, words=60)
    first_done, first = _run(_config(tmp_path, short, qualityGates={"maxDrift": 0.2}), tmp_path)
    assert first_done.returncode == 0 and first is not None
    assert first.promoted and first.gates[0].message.startswith("no previous version")

    similar = _jsonl(tmp_path / "similar" / "a.jsonl", 60, seed=5, words=3)
    _, same = _run(_config(tmp_path, similar, qualityGates={"maxDrift": 0.2}), tmp_path, "--parent-version", first.version)
    assert same is not None and same.promoted and same.version != first.version
    assert same.gates[0].value < 0.2

    _, drifted = _run(_config(tmp_path, long, qualityGates={"maxDrift": 0.2}), tmp_path, "--parent-version", first.version)
    assert drifted is not None and not drifted.promoted and drifted.parent_version == first.version
    [gate] = drifted.failed_gates
    assert gate.name == "maxDrift" and gate.value > 1.0 and "lengthDistribution" in gate.message


@pytest.mark.parametrize("config, code, words", [
    pytest.param({"sources": []}, EXIT_INVALID_CONFIG, "sources", id="a config without sources exits 2 naming sources"),
    pytest.param({"sources": [{"path": "/nonexistent/strata", "format": "jsonl"}], "output": "/tmp/x"},
                 EXIT_SOURCE_ERROR, "/nonexistent/strata does not exist", id="an unreadable source exits 1 naming it"),
    pytest.param({"sources": [{"path": "/tmp", "format": "jsonl"}]}, EXIT_INVALID_CONFIG, "output",
                 id="a config without an output exits 2 naming output"),
])
def test_failures_exit_with_the_contracts_code_and_an_error_message(tmp_path, config, code, words):
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(config))
    done, result = _run(path, tmp_path)
    assert done.returncode == code
    assert result is not None and result.version is None and words in result.error


def test_malformed_records_are_quarantined_and_counted_never_fatal(tmp_path):
    source = tmp_path / "in" / "a.jsonl"
    _jsonl(source, 10, seed=6, words=8)
    with source.open("a") as handle:
        handle.write("{broken\n[1]\n" + json.dumps({"text": 5, "label": 0}) + "\n")
    done, result = _run(_config(tmp_path, source, qualityGates={"maxQuarantinedRatio": 0.1}), tmp_path)
    assert done.returncode == 0 and result is not None
    assert result.records["quarantined"] == 3 and result.records["out"] == 10
    assert result.failed_gates[0].name == "maxQuarantinedRatio"


class _HeaderCheckingHandler(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.headers.get("Authorization") != "Bearer s3cret":
            self.send_response(401)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_http_headers_come_from_a_mounted_secrets_files(tmp_path):
    _HeaderCheckingHandler.body = _jsonl(tmp_path / "body.jsonl", 5, seed=7, words=6).read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HeaderCheckingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/export.jsonl"
    try:
        secret = tmp_path / "secret"
        (secret / "..2024_01_01").mkdir(parents=True)  # what a Secret volume also holds
        (secret / "Authorization").write_text("Bearer s3cret\n")
        config = {"sources": [{"http": {"url": url, "headersPath": str(secret)}, "format": "jsonl"}],
                  "preprocessing": {"text": {"tokenizer": {"kind": "byte"}}}, "output": str(tmp_path / "storage")}
        path = tmp_path / "ok.yaml"
        path.write_text(json.dumps(config))
        done, result = _run(path, tmp_path)
        assert done.returncode == 0 and result is not None and result.records["out"] == 5
        config["sources"][0]["http"].pop("headersPath")
        path.write_text(json.dumps(config))
        done, result = _run(path, tmp_path)
        assert done.returncode == EXIT_SOURCE_ERROR and "answered HTTP 401" in result.error
    finally:
        server.shutdown()


@pytest.mark.parametrize("statistics, reference, parent, expected", [
    pytest.param({"recordsIn": 100, "recordsOut": 70, "duplicates": 20, "nearDuplicates": 5,
                  "missing": {"dropped": {"text": 3}}, "quarantined": 2}, {}, None,
                 [("maxDuplicateRatio", True, 0.25), ("maxMissingRatio", True, 0.03), ("maxQuarantinedRatio", False, 0.02),
                  ("maxDrift", True, 0.0), ("minRecords", True, 70)],
                 id="ratios are shares of the records read and drift passes without a parent"),
    pytest.param({"recordsIn": 0, "recordsOut": 0}, {}, None,
                 [("maxDuplicateRatio", True, 0.0), ("maxMissingRatio", True, 0.0), ("maxQuarantinedRatio", True, 0.0),
                  ("maxDrift", True, 0.0), ("minRecords", False, 0)],
                 id="an empty input fails only minRecords"),
    pytest.param({"recordsIn": 10, "recordsOut": 10}, {"classDistribution": {"0": 0.5, "1": 0.5}},
                 {"classDistribution": {"0": 0.5, "1": 0.5}},
                 [("maxDuplicateRatio", True, 0.0), ("maxMissingRatio", True, 0.0), ("maxQuarantinedRatio", True, 0.0),
                  ("maxDrift", True, 0.0), ("minRecords", True, 10)],
                 id="identical distributions do not drift"),
])
def test_gate_verdicts(statistics, reference, parent, expected):
    limits = QualityGates(max_duplicate_ratio=0.3, max_missing_ratio=0.05, max_quarantined_ratio=0.01, max_drift=0.1,
                          min_records=5)
    verdicts = gates.evaluate(limits, statistics, reference, parent, "v0" if parent else None)
    assert [(v.name, v.passed, pytest.approx(v.value)) for v in verdicts] == [
        (name, passed, pytest.approx(value)) for name, passed, value in expected]


def test_psi_grows_with_the_shift_and_is_symmetric_in_its_terms():
    base = {"a": 0.5, "b": 0.5}
    assert gates.population_stability_index(base, base) == 0.0
    small = gates.population_stability_index(base, {"a": 0.6, "b": 0.4})
    large = gates.population_stability_index(base, {"a": 0.9, "b": 0.1})
    assert 0 < small < large
    assert gates.population_stability_index({"a": 1.0}, {"b": 1.0}) > 10  # disjoint: very large, still finite


def test_a_long_result_is_cut_to_the_termination_message_limit():
    verdicts = tuple(GateVerdict(f"gate{i}", False, 1.0, 0.5, "x" * 2000) for i in range(8))
    result = RunResult(version="v" * 20, path="/p", promoted=False, records={"in": 1}, gates=verdicts, error=None)
    message = result.to_message()
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    parsed = parse_termination_message(message)
    assert parsed is not None and [g.name for g in parsed.gates] == [g.name for g in verdicts]


def test_the_operator_can_import_the_contract_without_pyarrow_numpy_or_torch():
    code = ("import sys; import strata_workloads.data.result; "
            "heavy = [m for m in ('pyarrow', 'numpy', 'torch', 'pydantic') if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
