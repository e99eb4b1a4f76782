"""The text Dataset pipeline on real files made here, local and over a local HTTP server."""

from __future__ import annotations

import csv
import http.server
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash, MinHashLSH
from tests_support import version_files
from workload_harness import base_config, launch

from strata_workloads.data.config import PipelineConfig, TextAugmentation
from strata_workloads.data.layout import read_manifest, read_split
from strata_workloads.data.minhash import BatchMinHasher, NearDuplicateIndex, shingle_hashes
from strata_workloads.data import pipeline
from strata_workloads.data.pipeline import run_pipeline
from strata_workloads.data.result import parse_termination_message
from strata_workloads.data.text import augment, record_rng

_WORDS = ("river stone window garden silver morning candle harbor meadow lantern orbit pepper canyon "
          "velvet thunder marble ginger falcon willow copper").split()


def _texts(count: int, seed: int, words: int = 40) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) + str(rng.randrange(50)) for _ in range(words)) for _ in range(count)]


def _near_copy(text: str) -> str:
    words = text.split()
    words[len(words) // 2] = "zzzchanged"
    return " ".join(words)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """Four files with planted problems; the counts expected from them are in EXPECTED."""
    root = tmp_path_factory.mktemp("sources")
    base = _texts(62, seed=7)
    jsonl = [{"text": t, "label": i % 2} for i, t in enumerate(base[:40])]
    jsonl += [{"text": "  " + base[i].upper() + "  ", "label": 0} for i in range(5)]  # exact (case, spaces)
    jsonl += [{"text": _near_copy(base[i]), "label": 1} for i in range(5, 9)]  # near duplicates
    jsonl += [{"text": None, "label": 1}, {"label": 0}]  # missing text: dropped
    jsonl += [{"text": base[40]}, {"text": base[41], "label": ""}]  # missing label: imputed
    jsonl += [{"text": "hi", "label": 0}, {"text": "BUY NOW " + base[0][:50], "label": 0}]  # filtered
    jsonl += [{"text": base[42] + " x", "label": "abc"}]  # schema: label not an integer
    lines = [json.dumps(record) for record in jsonl]
    lines[3:3] = ["{not json", "[1, 2]"]  # malformed
    (root / "a.jsonl").write_text("\n".join(lines) + "\n")
    with (root / "b.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(42, 52):
            writer.writerow([base[i], i % 2])
        writer.writerow([base[9], 1])  # exact duplicate across sources
        writer.writerow(["too", "many", "fields"])  # malformed
    (root / "c.txt").write_bytes("\n".join(base[52:57]).encode() + b"\n\xff\xfe broken utf-8\n")
    pq.write_table(pa.table({"text": base[57:62], "label": [1] * 5}), root / "d.parquet")
    return root


EXPECTED = {"read": 77, "malformed": 4, "schema": 1, "missingDropped": {"text": 2}, "imputed": {"label": 7},
            "filtered": {"tooShort": 1, "pattern": 1}, "duplicates": 6, "nearDuplicates": 4, "out": 62}


def _config(sources: Path, **overrides) -> PipelineConfig:
    raw = {
        "name": "planted",
        "sources": [{"path": str(sources / name), "format": fmt}
                    for name, fmt in (("a.jsonl", "jsonl"), ("b.csv", "csv"), ("c.txt", "text"), ("d.parquet", "parquet"))],
        "schema": {"textField": "text", "labelField": "label"},
        "cleaning": {"dedup": {"exact": True, "nearDuplicate": {"threshold": 0.7, "numPerm": 128}},
                     "missingValues": [{"field": "label", "action": "impute", "value": "0"}],
                     "filters": {"minLength": 10, "dropPatterns": ["BUY NOW"]}},
        "preprocessing": {"text": {"normalize": "NFKC", "tokenizer": {"kind": "bpe", "vocabSize": 400}}},
        "validationFraction": 0.2,
        "rowsPerShard": 20,
        "batchSize": 16,
    }
    raw.update(overrides)
    return PipelineConfig.model_validate(raw)


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("versions")
    return run_pipeline(_config(sources), out), out


def test_planted_duplicates_missing_values_and_malformed_records_are_counted(built):
    result, _ = built
    stats = result.manifest.pipeline.statistics
    assert stats["recordsIn"] == EXPECTED["read"] + EXPECTED["malformed"]
    assert stats["quarantined"] == EXPECTED["malformed"] + EXPECTED["schema"]
    assert stats["quarantineReasons"] == {"json": 2, "csv": 1, "encoding": 1, "schema": 1}
    assert stats["missing"] == {"dropped": EXPECTED["missingDropped"], "imputed": EXPECTED["imputed"]}
    assert stats["filtered"] == EXPECTED["filtered"]
    assert stats["duplicates"] == EXPECTED["duplicates"]
    assert stats["nearDuplicates"] == EXPECTED["nearDuplicates"]
    assert stats["recordsOut"] == EXPECTED["out"]
    steps = {step.step: step for step in result.manifest.pipeline.steps}
    assert steps["read"].records_in == 81 and steps["nearDedup"].records_out == 62
    quarantined = [json.loads(line) for line in (result.path / "quarantine.jsonl").read_text().splitlines()]
    assert len(quarantined) == 5 and all(item["reason"] and item["source"] for item in quarantined)


def test_output_is_the_trainers_layout_with_tokens_and_lineage(built, sources):
    result, _ = built
    manifest = read_manifest(result.path)
    texts = []
    for split in manifest.splits:
        table = read_split(result.path, split, verify_checksums=True)
        texts += table.column("text").to_pylist()
        assert table.column("tokens").type == pa.list_(pa.int32())
    assert len(texts) == 62 == len(set(texts))
    assert sum(int(v) for v in manifest.pipeline.statistics["classCounts"].values()) == 62
    assert manifest.num_classes == 2 and sum(manifest.splits["train"].statistics["labelCounts"].values()) == manifest.splits["train"].rows
    assert [s.source for s in manifest.pipeline.lineage.sources][0] == str(sources / "a.jsonl")
    assert manifest.pipeline.lineage.sources[3].records == 5
    assert sum(manifest.pipeline.statistics["tokenHistogram"].values()) == 62
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(result.path / manifest.pipeline.tokenizer))
    first = read_split(result.path, "train").slice(0, 1).to_pylist()[0]
    assert tokenizer.encode(first["text"], add_special_tokens=False).ids == first["tokens"]


def test_rerun_gives_the_same_version_and_changes_give_new_ones(built, sources, tmp_path, monkeypatch):
    result, out = built
    with monkeypatch.context() as patch:
        # Unchanged local input: the version is found from the input bytes alone, before any processing.
        patch.setattr(pipeline, "_map_parts", lambda *args: pytest.fail("the unchanged input was processed again"))
        again = run_pipeline(_config(sources), out)
    assert (again.version, again.created) == (result.version, False)
    assert sorted(p.name for p in out.iterdir()) == [result.version]  # no new data, no leftovers
    changed_spec = run_pipeline(_config(sources, validationFraction=0.3), tmp_path)
    assert changed_spec.version != result.version
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in sources.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    with (copy / "c.txt").open("a") as handle:
        handle.write(_texts(1, seed=99)[0] + "\n")
    changed_input = run_pipeline(_config(copy), tmp_path)
    assert changed_input.version not in (result.version, changed_spec.version)
    assert changed_input.manifest.pipeline.statistics["recordsOut"] == 63


class _Handler(http.server.SimpleHTTPRequestHandler):
    pages = [[{"text": t, "label": 0} for t in _texts(3, seed=11)], [{"text": t, "label": 1} for t in _texts(2, seed=12)]]

    def do_GET(self):  # noqa: N802 - http.server's naming
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/api/records":
            return super().do_GET()
        page = int(dict(urllib.parse.parse_qsl(url.query)).get("after", "0"))
        body = {"items": self.pages[page], "next": page + 1 if page + 1 < len(self.pages) else None}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(sources):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(sources)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_files_and_a_paginated_json_api(http_server, tmp_path):
    config = PipelineConfig.model_validate({
        "sources": [{"http": {"url": f"{http_server}/b.csv"}, "format": "csv"},
                    {"http": {"url": f"{http_server}/d.parquet"}, "format": "parquet"},
                    {"http": {"url": f"{http_server}/api/records", "recordsField": "items",
                              "pagination": {"cursorField": "next", "cursorParam": "after"}}, "format": "json"}],
        "schema": {"labelField": "label"},
        "preprocessing": {"text": {"tokenizer": {"kind": "byte"}}},
    })
    result = run_pipeline(config, tmp_path)
    lineage = result.manifest.pipeline.lineage.sources
    assert [source.records for source in lineage] == [11, 5, 5]
    assert result.manifest.pipeline.statistics["quarantineReasons"] == {"csv": 1}
    assert result.manifest.pipeline.statistics["recordsOut"] == 11 + 5 + 5
    missing = PipelineConfig.model_validate({**config.model_dump(by_alias=True, exclude_none=True),
                                             "sources": [{"http": {"url": f"{http_server}/nope.csv"}, "format": "csv"}]})
    from strata_workloads.data.sources import SourceError

    with pytest.raises(SourceError, match="nope.csv answered HTTP 404"):
        run_pipeline(missing, tmp_path)


def test_batch_minhash_equals_datasketch_minhash():
    ids = [[5, 9, 2, 7, 7, 1], [3], [], [5, 9, 2, 7, 7, 2]]
    hashes, counts = shingle_hashes(ids, 3)
    assert counts.tolist() == [4, 1, 0, 4]
    signatures = BatchMinHasher(64, seed=3).signatures(hashes, counts)
    for row, (lo, hi) in enumerate([(0, 4), (4, 5), (5, 9)]):
        reference = MinHash(num_perm=64, seed=3, scheme="affine32", hashfunc=int)
        reference.update_batch([int(h) for h in hashes[lo:hi]])
        assert np.array_equal(reference.hashvalues, signatures[row if row < 2 else 3])


def test_near_duplicate_decisions_equal_datasketch_minhash_lsh():
    rng = random.Random(5)
    base = [[rng.randrange(500) for _ in range(30)] for _ in range(300)]
    records = base + [ids[:10] + [999] + ids[11:] for ids in base[:100]] + [ids[:15] for ids in base[100:150]]
    rng.shuffle(records)
    hashes, counts = shingle_hashes(records, 3)
    index = NearDuplicateIndex(threshold=0.6, num_perm=64)
    keep = index.filter(hashes, counts)
    lsh = MinHashLSH(threshold=0.6, num_perm=64)
    expected = []
    for row, signature in enumerate(index.hasher.signatures(hashes, counts)):
        minhash = MinHash(num_perm=64, seed=1, scheme="affine32", hashvalues=signature)
        duplicate = bool(lsh.query(minhash))
        if not duplicate:
            lsh.insert(row, minhash)
        expected.append(not duplicate)
    assert keep.tolist() == expected
    assert 100 <= keep.size - keep.sum() <= 150  # the planted near copies (the halves may or may not reach 0.6)


def test_augmentation_is_seeded_and_the_synthetic_share_capped(sources, tmp_path):
    augmentation = TextAugmentation(synonymReplacement=0.5, masking=0.2, randomDeletion=0.1)
    text = "The big dog ran to the house and the small cat sat on the mat."
    assert augment(text, augmentation, record_rng(1, b"k")) == augment(text, augmentation, record_rng(1, b"k"))
    assert augment(text, augmentation, record_rng(1, b"k")) != text
    result = run_pipeline(_config(sources, augmentation={"text": {"masking": 0.3}, "maxSyntheticFraction": 0.25,
                                                       "seed": 4}), tmp_path)
    train = read_split(result.path, "train")
    synthetic = sum(train.column("synthetic").to_pylist())
    assert synthetic > 0 and synthetic / train.num_rows <= 0.25
    assert all("[MASK]" in row["text"] for row in train.to_pylist() if row["synthetic"])


@pytest.mark.parametrize("setting, value, message", [
    ("cleaning", {"dedup": {"nearDuplicate": {"threshold": 1.5}}}, "cleaning.dedup.nearDuplicate.threshold"),
    ("cleaning", {"filters": {"dropPatterns": ["(unclosed"]}}, "cleaning.filters.dropPatterns"),
    ("cleaning", {"missingValues": [{"field": "label", "action": "impute"}]}, "action impute needs a value"),
    ("sources", [{"format": "jsonl"}], "set exactly one of path, http or s3"),
], ids=["threshold above one", "a regex that does not compile", "impute without a value", "a source without a location"])
def test_cli_refuses_a_bad_config_with_exit_2_naming_the_setting(tmp_path, setting, value, message):
    raw = {"sources": [{"path": str(tmp_path), "format": "jsonl"}], setting: value}
    config = tmp_path / "config.json"
    config.write_text(json.dumps(raw))
    done = subprocess.run([sys.executable, "-m", "strata_workloads.data", "--config", str(config), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_the_trainer_trains_on_a_pipeline_version(built, tmp_path):
    result, _ = built
    config = base_config("transformer", result.path, tmp_path, zero_stage=1,
                         hyperparameters={"maxSteps": 4}, validation={"everySteps": 2, "maxBatches": 1},
                         deepspeed={"zeroStage": 1, "microBatchSize": 4, "gradientAccumulation": 1})
    run = launch(config, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    steps = run.step_losses()
    assert sorted(steps) == [1, 2, 3, 4] and all(np.isfinite(list(steps.values())))


def test_a_tokenizer_loaded_from_a_path_is_used_and_its_content_is_part_of_the_spec(built, sources, tmp_path):
    result, _ = built
    tokenizer_path = tmp_path / "tokenizer.json"
    tokenizer_path.write_bytes((result.path / "tokenizer.json").read_bytes())
    config = _config(sources, preprocessing={"text": {"tokenizer": {"path": str(tokenizer_path)}}})
    loaded = run_pipeline(config, tmp_path / "versions")
    assert loaded.version != result.version
    by_text = {row["text"]: row["tokens"] for row in read_split(result.path, "train").to_pylist()}
    rows = read_split(loaded.path, "train").to_pylist()
    assert rows and all(row["tokens"] == by_text[row["text"]] for row in rows if row["text"] in by_text)
    before = config.spec_hash()
    tokenizer_path.write_text(tokenizer_path.read_text().replace('"[MASK]"', '"[HIDE]"'))
    assert config.spec_hash() != before


def test_stop_words_are_removed_after_normalization_and_make_a_new_version(built, sources, tmp_path):
    stripped = run_pipeline(_config(sources, preprocessing={"text": {"stripStopwords": True}}), tmp_path / "versions")
    assert stripped.version != built[0].version
    (tmp_path / "prose.jsonl").write_text(json.dumps({"text": "The parcel is AT the depot, and it will be sent on Monday"}) + "\n")
    prose = PipelineConfig.model_validate({"sources": [{"path": str(tmp_path / "prose.jsonl"), "format": "jsonl"}],
                                           "preprocessing": {"text": {"stripStopwords": True, "tokenizer": {"kind": "byte"}}},
                                           "validationFraction": 0.0})
    rows = read_split(run_pipeline(prose, tmp_path / "prose").path, "train").to_pylist()
    assert [row["text"] for row in rows] == ["parcel depot, sent Monday"]


def test_cli_builds_a_version_reruns_unchanged_and_exits_1_on_an_unreadable_source(sources, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(_config(sources).model_dump(mode="json", by_alias=True, exclude_none=True)))

    def cli(config_path):
        return subprocess.run([sys.executable, "-m", "strata_workloads.data", "--config", str(config_path),
                               "--out", str(tmp_path / "out")], capture_output=True, text=True)

    first, second = cli(config), cli(config)
    assert first.returncode == 0 and second.returncode == 0, first.stderr
    first_line, second_line = json.loads(first.stdout), json.loads(second.stdout)
    assert (first_line["created"], second_line["created"]) == (True, False)
    assert first_line["version"] == second_line["version"] and first_line["records"]["out"] == 62
    broken = tmp_path / "broken.yaml"
    broken.write_text(json.dumps({"sources": [{"path": str(tmp_path / "absent"), "format": "jsonl"}]}))
    done = cli(broken)
    assert done.returncode == 1 and "absent does not exist" in done.stderr


def _model_of(annotation):
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_of(argument)
        if found is not None:
            return found
    return None


def _shared_paths(model, operator_model, prefix=""):
    """(path, present in the operator's model) for each pipeline field not marked pipeline-only."""
    operator_fields = {field.alias or name: field for name, field in operator_model.model_fields.items()}
    for name, field in model.model_fields.items():
        if (field.description or "").startswith("(pipeline only)"):
            continue
        alias = field.alias or name
        yield prefix + alias, alias in operator_fields
        nested, operator_nested = _model_of(field.annotation), None
        if alias in operator_fields:
            operator_nested = _model_of(operator_fields[alias].annotation)
        if nested is not None and operator_nested is not None:
            yield from _shared_paths(nested, operator_nested, prefix + alias + ".")


def test_pipeline_config_uses_the_dataset_apis_field_names():
    """Every setting not marked pipeline-only has the same name and place as in the Dataset spec."""
    from strata.api.dataset import DatasetSpec

    paths = dict(_shared_paths(PipelineConfig, DatasetSpec))
    assert "cleaning.dedup.nearDuplicate.threshold" in paths and "preprocessing.text.tokenizer.vocabSize" in paths
    assert [path for path, shared in paths.items() if not shared] == []


# ---- the drift reference: the version's token sketch, compared with served traffic ----

def test_the_reference_sketch_is_what_the_sidecar_makes_of_the_same_tokens_and_alarms_only_on_shifted_inputs(tmp_path):
    from tokenizers import Tokenizer

    from strata_workloads.monitor.sketch import TOKENS_COLUMN, TokenSketch, sketch_drift

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(_texts(3000, seed=1, words=12)) + "\n")
    config = PipelineConfig.model_validate({
        "name": "reference", "sources": [{"path": str(corpus), "format": "text"}],
        "preprocessing": {"text": {"tokenizer": {"kind": "bpe", "vocabSize": 400}}}, "validationFraction": 0.1})
    result = run_pipeline(config, tmp_path / "out")
    reference = TokenSketch.from_dict(result.manifest.pipeline.reference_statistics["sketches"][TOKENS_COLUMN])

    # Both sides agree: the sidecar's sketch of the version's records, each sent as a
    # [1, n] INT64 request, is the reference.
    served = TokenSketch()
    for split in result.manifest.splits:
        for tokens in read_split(result.path, split).column("tokens").to_pylist():
            served.add_rows(np.asarray([tokens], dtype=np.int64), [1, len(tokens)])
    assert served == reference and reference.rows == result.manifest.pipeline.statistics["recordsOut"]

    tokenizer = Tokenizer.from_file(str(result.path / result.manifest.pipeline.tokenizer))

    def window(lines: list[str]) -> TokenSketch:
        sketch = TokenSketch()
        for encoding in tokenizer.encode_batch(lines, add_special_tokens=False):
            sketch.add_rows(np.asarray([encoding.ids], dtype=np.int64), [1, len(encoding.ids)])
        return sketch

    def verdicts(windows) -> list[str]:
        return [sketch_drift({TOKENS_COLUMN: reference}, {TOKENS_COLUMN: sketch}, 0.2, 100, "1h").verdict
                for sketch in windows]

    # False alarms: windows of 100 new records from the same distribution.
    same = verdicts(window(_texts(100, seed=1000 + i, words=12)) for i in range(200))
    false_alarms = same.count("Breached") / len(same)
    print(f"false-alarm rate over {len(same)} windows of 100 inputs: {false_alarms:.3f}")
    assert false_alarms <= 0.02 and same.count("OK") == len(same) - same.count("Breached")
    # Shifted: longer texts; other words; random ids as a client that ignores the tokenizer sends.
    longer = verdicts(window(_texts(100, seed=5000 + i, words=30)) for i in range(20))
    other_words = verdicts(window([" ".join(random.Random(i * 100 + j).choice(("alpha", "beta", "gamma", "delta"))
                                            + " quarterly report" for _ in range(6)) for j in range(100)])
                           for i in range(20))
    rng = np.random.default_rng(3)
    random_ids = []
    for _ in range(20):
        sketch = TokenSketch()
        for _ in range(100):
            sketch.add_rows(rng.integers(1, 200, size=(1, 8)), [1, 8])
        random_ids.append(sketch)
    assert set(longer) == set(other_words) == set(verdicts(random_ids)) == {"Breached"}


def test_the_text_reference_is_what_the_sidecar_makes_of_the_same_texts_and_alarms_only_on_shifted_ones(tmp_path):
    """Models that take text (BYTES inputs named like the text column) are compared with the
    version's texts as UTF-8 bytes, letters folded to lower case on both sides."""
    from strata_workloads.monitor.sketch import TEXT_COLUMN, TokenSketch, sketch_drift

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(_texts(3000, seed=1, words=12)) + "\n")
    config = PipelineConfig.model_validate({
        "name": "reference", "sources": [{"path": str(corpus), "format": "text"}],
        "preprocessing": {"text": {"lowercase": True, "tokenizer": {"kind": "byte"}}}, "validationFraction": 0.1})
    result = run_pipeline(config, tmp_path / "out")
    reference = TokenSketch.from_dict(result.manifest.pipeline.reference_statistics["sketches"][TEXT_COLUMN])
    served = TokenSketch()
    for split in result.manifest.splits:
        served.add_texts(text.encode() for text in read_split(result.path, split).column("text").to_pylist())
    assert served == reference and reference.rows == result.manifest.pipeline.statistics["recordsOut"]

    def verdicts(windows) -> list[str]:
        results = []
        for texts in windows:
            sketch = TokenSketch()
            sketch.add_texts(text.encode() for text in texts)
            results.append(sketch_drift({TEXT_COLUMN: reference}, {TEXT_COLUMN: sketch}, 0.2, 100, "1h").verdict)
        return results

    # Served as clients type them: upper case where the version was lowercased is no drift.
    same = verdicts([text.upper() if n % 2 else text for n, text in enumerate(_texts(100, seed=1000 + i, words=12))]
                    for i in range(100))
    assert same.count("Breached") <= 2 and same.count("OK") == len(same) - same.count("Breached")
    longer = verdicts(_texts(100, seed=5000 + i, words=30) for i in range(10))
    digits = verdicts([" ".join(str(random.Random(i * 100 + j).randrange(10 ** 6)) for _ in range(12)) for j in range(100)]
                      for i in range(10))
    assert set(longer) == set(digits) == {"Breached"}


def test_three_shards_build_the_same_version_as_one(sources, tmp_path):
    """parallelism: the input's parts shared among three processes of the CLI (as an Indexed
    Job's pods run them, each its own index) give the version one process gives: the same id,
    records, files, statistics and quarantine, with duplicates and near duplicates found across
    shards."""
    base = _texts(30, seed=11)
    folder = tmp_path / "folder"
    folder.mkdir()
    for number in range(5):  # parts 4..8: shards 1, 2, 0, 1, 2
        own = base[number * 6:(number + 1) * 6]
        # Copies of records other shards read: exact (a file and a source earlier), near, and a malformed line.
        lines = [json.dumps({"text": text, "label": number % 2}) for text in own]
        lines.append(json.dumps({"text": base[((number + 1) % 5) * 6], "label": 0}))
        lines.append(json.dumps({"text": _near_copy(base[((number + 2) % 5) * 6 + 1]), "label": 1}))
        lines.append(json.dumps({"text": _texts(62, seed=7)[number], "label": 0}))
        lines.append("{broken")
        (folder / f"part-{number}.jsonl").write_text("\n".join(lines) + "\n")
    raw = _config(sources).model_dump(mode="json", by_alias=True)
    raw["sources"].append({"path": str(folder), "format": "jsonl"})
    raw["output"] = str(tmp_path / "three")
    config = PipelineConfig.model_validate(raw)
    (tmp_path / "pipeline.yaml").write_text(json.dumps(raw))

    one = run_pipeline(config, tmp_path / "one")
    assert one.manifest.pipeline.statistics["duplicates"] > 0 and one.manifest.pipeline.statistics["nearDuplicates"] > 0

    logs = {shard: tmp_path / f"termination-{shard}" for shard in range(3)}
    shards = [subprocess.Popen([sys.executable, "-m", "strata_workloads.data", "--config", str(tmp_path / "pipeline.yaml"),
                                "--shards", "3", "--run-id", "run-1", "--shard-timeout", "120",
                                "--termination-log", str(logs[shard])],
                               env={**os.environ, "JOB_COMPLETION_INDEX": str(shard)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for shard in (0, 2, 1)]  # shard 0 first: it waits for the others
    for process in shards:
        _out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    result = parse_termination_message(logs[0].read_text())
    assert result is not None and result.version == one.version and result.created
    assert parse_termination_message(logs[1].read_text()) is None  # a shard's summary is not a result
    assert json.loads(logs[2].read_text())["shard"] == 2

    three = read_manifest(Path(result.path))
    assert three.model_dump(exclude={"created_at"}) == one.manifest.model_dump(exclude={"created_at"})
    assert version_files(Path(result.path)) == version_files(one.path)
    assert [p.name for p in (tmp_path / "three").iterdir()] == [one.version]  # the shards' work is gone


def test_work_left_by_a_failed_parallel_run_is_removed_once_no_shard_can_still_be_running(sources, tmp_path):
    stale, fresh = tmp_path / ".runs" / "failed-run" / "shard-1", tmp_path / ".runs" / "running" / "shard-1"
    for directory in (stale, fresh):
        directory.mkdir(parents=True)
        (directory / "spill.parquet").write_bytes(b"x")
    two_days_ago = time.time() - 2 * 24 * 3600
    for path in (stale / "spill.parquet", stale, stale.parent):
        os.utime(path, (two_days_ago, two_days_ago))
    run_pipeline(_config(sources), tmp_path, shard_timeout=24 * 3600)
    assert not stale.parent.exists() and (fresh / "spill.parquet").is_file()
