"""The prometheus-adapter rule the chart ships serves the metric the operator's HPAs target,
from the series Triton exports and the operator's recording rule reads."""

from __future__ import annotations

from pathlib import Path

import yaml

from strata.render.serving import QUEUE_COMPUTE_METRIC, render_prometheus_rule

ADAPTER_VALUES = Path(__file__).resolve().parents[2] / "helm" / "strata" / "prometheus-adapter" / "values.yaml"


def test_the_adapter_serves_the_metric_the_hpa_targets_from_tritons_series():
    (rule,) = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    assert rule["name"]["as"] == QUEUE_COMPUTE_METRIC
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    for series in ("nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us"):
        assert series in rule["metricsQuery"]


def test_the_recording_rule_computes_the_same_ratio_from_the_same_series():
    from strata.api import MODEL_DEPLOYMENT
    from strata.api.deployment import ModelDeploymentSpec

    spec = ModelDeploymentSpec.model_validate({"model": {"trainingJob": {"name": "lm"}}})
    rule = render_prometheus_rule(MODEL_DEPLOYMENT, {"metadata": {"name": "lm", "namespace": "ml", "uid": "u"}}, spec)
    record = rule["spec"]["groups"][0]["rules"][0]
    assert record["record"] == f"strata:{QUEUE_COMPUTE_METRIC}"
    assert record["expr"].index("nv_inference_queue_duration_us") < record["expr"].index("nv_inference_compute_infer_duration_us")
