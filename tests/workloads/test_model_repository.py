"""The ModelDeployment init step (strata_workloads.model_repository): the served repository it
builds, and the real tritonserver serving it with the declared settings and version."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml
from serving_models import expected_output, write_doubling_model
from workload_harness import start_tritonserver

from strata.api.deployment import ModelDeploymentSpec
from strata.render.serving import ServedModel, render_repository_config
from strata_workloads.model_repository import RepositoryError, build


def settings_for(spec: dict, source, target, name="doubler", version=None) -> dict:
    """What the operator mounts, rendered from a spec by the operator's own code."""
    parsed = ModelDeploymentSpec.model_validate(spec)
    config = render_repository_config(parsed, ServedModel(name=name, version=version, claim="models"))
    return {**config, "source": str(source), "target": str(target)}


SPEC = {
    "model": {"repository": {"location": {"pvc": {"claimName": "models"}}, "name": "doubler", "version": 2}},
    "resources": {"gpus": 0},
    "triton": {"maxBatchSize": 2, "dynamicBatching": {"preferredBatchSizes": [2], "maxQueueDelayMicroseconds": 300},
               "instanceGroups": [{"kind": "CPU", "count": 2}]},
}


@pytest.fixture
def source(tmp_path):
    write_doubling_model(tmp_path / "source", "doubler", versions=(1, 2, 3))
    return tmp_path / "source"


@pytest.mark.parametrize("version, served", [
    pytest.param(2, 2, id="the declared version is the only one linked"),
    pytest.param(None, 3, id="without a version the newest is served"),
])
def test_the_served_repository_links_one_version_and_merges_the_settings(tmp_path, source, version, served):
    model_dir, chosen = build(settings_for(SPEC, source, tmp_path / "served", version=version))
    assert chosen == served
    assert sorted(p.name for p in model_dir.iterdir()) == [str(served), "config.pbtxt"]
    assert (model_dir / str(served)).resolve() == (source / "doubler" / str(served)).resolve()
    config = (model_dir / "config.pbtxt").read_text()
    assert "max_batch_size: 2" in config and "preferred_batch_size: 2" in config
    assert "max_queue_delay_microseconds: 300" in config and "count: 2" in config
    assert f"versions: {served}" in config
    assert 'name: "INPUT0"' in config  # the source's own tensors are kept


@pytest.mark.parametrize("settings, message", [
    pytest.param({"version": 7}, "version 7 of model 'doubler' is not in", id="a version the repository lacks is named"),
    pytest.param({"model": "other"}, "model 'other' is not in the repository", id="a model the repository lacks is named"),
])
def test_what_the_repository_lacks_is_named(tmp_path, source, settings, message):
    with pytest.raises(RepositoryError, match=message):
        build({**settings_for(SPEC, source, tmp_path / "served"), **settings})


def test_the_command_exits_non_zero_saying_why(tmp_path, source):
    config = tmp_path / "repo.yaml"
    config.write_text(yaml.safe_dump({**settings_for(SPEC, source, tmp_path / "served"), "version": 9}))
    result = subprocess.run([sys.executable, "-m", "strata_workloads.model_repository", "--config", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "version 9" in result.stderr


@pytest.mark.triton
def test_tritonserver_serves_the_declared_version_with_the_declared_settings(tmp_path, source):
    import tritonclient.grpc as grpcclient

    build(settings_for(SPEC, source, tmp_path / "served", version=2))
    server, url = start_tritonserver(tmp_path / "served", ["doubler"], tmp_path / "triton")
    try:
        client = grpcclient.InferenceServerClient(url)
        assert client.is_model_ready("doubler", "2")
        assert not client.is_model_ready("doubler", "3") and not client.is_model_ready("doubler", "1")
        config = client.get_model_config("doubler", as_json=True)["config"]
        assert config["max_batch_size"] == 2
        assert config["dynamic_batching"]["preferred_batch_size"] == [2]
        assert [(g["kind"], g["count"]) for g in config["instance_group"]] == [("KIND_CPU", 2)]
        values = np.array([[1, 2, 3, 4]], dtype=np.float32)
        tensor = grpcclient.InferInput("INPUT0", list(values.shape), "FP32")
        tensor.set_data_from_numpy(values)
        result = client.infer("doubler", [tensor]).as_numpy("OUTPUT0")
        assert result.tolist() == [expected_output([1, 2, 3, 4], 2)]
    finally:
        server.close()
