"""The operator renders the sidecar's config file; the sidecar must accept every rendering,
and every access and monitoring field of a ModelDeployment must change what it is given."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from strata.api import MODEL_DEPLOYMENT
from strata.render import sidecar as contract
from strata.render.sidecar import render_sidecar_config
from strata_workloads.serve import config as sidecar_config
from strata_workloads.serve.config import ConfigError, parse_config
from tests_support import example_spec

REPO = Path(__file__).resolve().parents[2]
BASE = example_spec("ModelDeployment")


def variant(access: dict | None | str = "keep", monitoring: dict | None = None) -> dict:
    spec = copy.deepcopy(BASE)
    if access is None:
        spec.pop("access", None)
    elif access != "keep":
        spec["access"] = access
    if monitoring is not None:
        spec["monitoring"] = monitoring
    return spec


KEYS = {"apiKeys": {"secretRef": {"name": "keys"}}}
SPECS = [
    pytest.param(BASE, id="the example deployment"),
    pytest.param(variant(access=None), id="open access"),
    pytest.param(variant(access={"auth": KEYS}), id="keys without a rate limit"),
    pytest.param(variant(access={"rateLimit": {"requestsPerSecond": 5, "burst": 5, "per": "clientIP"}}),
                 id="a per-client-IP limit without keys"),
    pytest.param(variant(access={"rateLimit": {"requestsPerSecond": 5, "burst": 10}}),
                 id="a per-key limit without keys"),
    pytest.param(variant(access={"auth": KEYS, "rateLimit": {"requestsPerSecond": 0.5, "burst": 1, "per": "global"}}),
                 id="a global limit below one request per second"),
    pytest.param(variant(monitoring={"auditSampleRate": 0, "redact": [], "drift": False, "toxicity": False}),
                 id="monitoring all off"),
    pytest.param(variant(monitoring={"auditSampleRate": 1, "redact": ["secrets", "pii", "pii"]}),
                 id="everything audited, both redactions"),
    pytest.param(variant(monitoring={"storage": {"pvc": {"claimName": "records", "path": "qa"}, "retentionDays": 3}}),
                 id="records kept on a shared claim"),
]


@pytest.mark.parametrize("raw", SPECS)
def test_the_sidecar_accepts_every_rendering(raw):
    spec = MODEL_DEPLOYMENT.spec_model.model_validate(raw)
    config = parse_config(render_sidecar_config(spec, "support-lm-python"))
    assert config.model_name == "support-lm-python"
    assert (config.listen.http_port, config.listen.grpc_port, config.listen.metrics_port) == (
        contract.SIDECAR_HTTP_PORT, contract.SIDECAR_GRPC_PORT, contract.SIDECAR_METRICS_PORT)
    assert (config.upstream.host, config.upstream.http_port, config.upstream.grpc_port) == (
        "127.0.0.1", contract.TRITON_HTTP_PORT, contract.TRITON_GRPC_PORT)
    assert config.state_dir == contract.SIDECAR_STATE_DIR
    monitoring = spec.monitoring
    assert config.audit.sample_rate == monitoring.audit_sample_rate
    assert set(config.audit.redact) == set(monitoring.redact)
    assert config.drift.enabled == monitoring.drift and config.toxicity.enabled == monitoring.toxicity
    assert config.drift.input_samples_per_minute == monitoring.input_samples_per_minute
    keyed = bool(spec.access and spec.access.auth and spec.access.auth.api_keys)
    assert (config.auth is not None) == keyed
    if keyed:
        assert config.auth.api_keys_dir == contract.API_KEYS_DIR
    limit = spec.access.rate_limit if spec.access else None
    assert (config.rate_limit is not None) == (limit is not None)
    if limit is not None:
        assert config.rate_limit.requests_per_second == limit.requests_per_second
        assert config.rate_limit.burst == limit.burst


def test_a_per_key_limit_without_keys_is_one_limit_for_everyone():
    spec = MODEL_DEPLOYMENT.spec_model.model_validate(variant(access={"rateLimit": {"requestsPerSecond": 5, "burst": 10}}))
    assert parse_config(render_sidecar_config(spec, "m")).rate_limit.per == "global"


# Every access and monitoring field of the API, with two values: the renderings must differ.
FIELD_EFFECTS = [
    pytest.param({"access": None}, {"access": {"auth": KEYS}}, id="access.auth.apiKeys"),
    pytest.param({"access": {"rateLimit": {"requestsPerSecond": 5, "burst": 10}, "auth": KEYS}},
                 {"access": {"rateLimit": {"requestsPerSecond": 6, "burst": 10}, "auth": KEYS}},
                 id="access.rateLimit.requestsPerSecond"),
    pytest.param({"access": {"rateLimit": {"requestsPerSecond": 5, "burst": 10}, "auth": KEYS}},
                 {"access": {"rateLimit": {"requestsPerSecond": 5, "burst": 11}, "auth": KEYS}},
                 id="access.rateLimit.burst"),
    pytest.param({"access": {"rateLimit": {"requestsPerSecond": 5, "burst": 10, "per": "apiKey"}, "auth": KEYS}},
                 {"access": {"rateLimit": {"requestsPerSecond": 5, "burst": 10, "per": "clientIP"}, "auth": KEYS}},
                 id="access.rateLimit.per"),
    pytest.param({"monitoring": {"auditSampleRate": 0.05}}, {"monitoring": {"auditSampleRate": 0.5}},
                 id="monitoring.auditSampleRate"),
    pytest.param({"monitoring": {"redact": []}}, {"monitoring": {"redact": ["pii"]}}, id="monitoring.redact pii"),
    pytest.param({"monitoring": {"redact": ["pii"]}}, {"monitoring": {"redact": ["pii", "secrets"]}},
                 id="monitoring.redact secrets"),
    pytest.param({"monitoring": {"drift": True}}, {"monitoring": {"drift": False}}, id="monitoring.drift"),
    pytest.param({"monitoring": {"driftSampleRate": 0.1}}, {"monitoring": {"driftSampleRate": 1.0}},
                 id="monitoring.driftSampleRate"),
    pytest.param({"monitoring": {"toxicity": True}}, {"monitoring": {"toxicity": False}}, id="monitoring.toxicity"),
    pytest.param({"monitoring": {}}, {"monitoring": {"inputSamplesPerMinute": 60}},
                 id="monitoring.inputSamplesPerMinute"),
    pytest.param({"monitoring": {}}, {"monitoring": {"storage": {"pvc": {"claimName": "records"}}}},
                 id="monitoring.storage"),
    pytest.param({"monitoring": {"storage": {"pvc": {"claimName": "records"}, "retentionDays": 30}}},
                 {"monitoring": {"storage": {"pvc": {"claimName": "records"}, "retentionDays": 7}}},
                 id="monitoring.storage.retentionDays"),
]


@pytest.mark.parametrize("before, after", FIELD_EFFECTS)
def test_each_access_and_monitoring_field_changes_the_sidecars_config(before, after):
    def parsed(change: dict) -> dict:
        spec = copy.deepcopy(BASE)
        for section, value in change.items():
            if value is None:
                spec.pop(section, None)
            else:
                spec[section] = value
        rendered = render_sidecar_config(MODEL_DEPLOYMENT.spec_model.model_validate(spec), "m")
        return parse_config(rendered).model_dump()

    assert parsed(before) != parsed(after)


def test_every_access_and_monitoring_field_is_in_the_effects_table():
    from strata.api.deployment import Access, Monitoring, RateLimit

    def camel(name: str) -> str:
        head, *rest = name.split("_")
        return head + "".join(part.title() for part in rest)

    fields = {"access.auth.apiKeys"} | {f"access.rateLimit.{camel(n)}" for n in RateLimit.model_fields}
    fields |= {f"monitoring.{camel(n)}" for n in Monitoring.model_fields}
    assert set(Access.model_fields) == {"auth", "rate_limit"}  # a new field needs a row above
    covered = {param.id.split(" ")[0] for param in FIELD_EFFECTS}
    assert fields <= covered, f"fields without a test of their effect: {sorted(fields - covered)}"


def test_the_sidecars_defaults_are_the_contracts_ports_and_paths():
    defaults = parse_config({"modelName": "m"})
    assert (defaults.listen.http_port, defaults.listen.grpc_port, defaults.listen.metrics_port) == (
        contract.SIDECAR_HTTP_PORT, contract.SIDECAR_GRPC_PORT, contract.SIDECAR_METRICS_PORT)
    assert (defaults.upstream.http_port, defaults.upstream.grpc_port) == (contract.TRITON_HTTP_PORT,
                                                                        contract.TRITON_GRPC_PORT)
    assert defaults.state_dir == contract.SIDECAR_STATE_DIR
    assert sidecar_config.CONFIG_ENV == "STRATA_SIDECAR_CONFIG"


@pytest.mark.parametrize(
    "raw, message",
    [
        pytest.param({"modelName": "m", "rateLimit": {"requestsPerSecond": 5, "burst": 0, "per": "global"}},
                     "rateLimit.burst: must be at least 1, got 0", id="a zero burst"),
        pytest.param({"modelName": "m", "audit": {"sampleRate": 1.5}}, "audit.sampleRate: must be at most 1",
                     id="a sample rate above one"),
        pytest.param({"modelName": "m", "audit": {"redact": ["names"]}}, "audit.redact.0: must be one of 'pii' or 'secrets'",
                     id="an unknown redaction"),
        pytest.param({"modelName": "m", "listen": {"grpcPrt": 1}}, "listen.grpcPrt: unknown setting", id="a typo"),
        pytest.param({"listen": {}}, "modelName: required setting is missing", id="no model name"),
        pytest.param({"modelName": "m", "rateLimit": {"requestsPerSecond": 5, "burst": 5}},
                     "per: apiKey needs auth.apiKeysDir", id="a per-key limit without keys"),
    ],
)
def test_bad_settings_are_named(raw, message):
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    assert message in str(error.value)


def test_the_sidecar_runs_without_the_operator_package():
    probe = ("import json, sys; import strata_workloads.serve.supervisor, strata_workloads.serve.worker, "
             "strata_workloads.serve.grpc_proxy, strata_workloads.serve.http_proxy, strata_workloads.serve.cli; "
             "print(json.dumps(sorted(m for m in sys.modules if m == 'strata' or m.startswith('strata.'))))")
    env = {**os.environ, "PYTHONPATH": str(REPO / "workloads")}
    # -I would drop site-packages; instead hide the editable operator install by running from /.
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd="/", check=True)
    assert json.loads(result.stdout) == []


def test_a_bad_config_file_stops_the_sidecar_with_the_setting_named(tmp_path):
    path = tmp_path / "sidecar.yaml"
    path.write_text("modelName: m\nrateLimit: {requestsPerSecond: 5, burst: 1, per: global}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "workloads"), sidecar_config.CONFIG_ENV: str(path)}
    result = subprocess.run([sys.executable, "-m", "strata_workloads.serve"], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 2
    assert "rateLimit: burst (1) must be at least requestsPerSecond (5.0)" in result.stderr
