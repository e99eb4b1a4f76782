"""The ModelDeployment init step (strata_workloads.model_repository): the served repository it
builds, from a mounted directory or downloaded from a real S3 server (SeaweedFS), and the real
tritonserver serving it with the declared settings and version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from s3_support import BUCKET
from serving_models import expected_output, write_doubling_model
from workload_harness import start_tritonserver

from strata.api.deployment import ModelDeploymentSpec
from strata.controllers.modeldeployment import model_from_spec
from strata.render.serving import S3_CREDENTIALS_DIR, ServedModel, render_repository_config
from strata_workloads.model_repository import RepositoryError, build, fetch


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


def s3_spec(endpoint: str, secret: str | None = "model-keys", prefix: str = "models", version: int | None = 2) -> dict:
    location = {"s3": {"uri": f"s3://{BUCKET}/{prefix}/", "endpoint": endpoint,
                       **({"secretRef": {"name": secret}} if secret else {})}}
    return {**SPEC, "model": {"repository": {"location": location, "name": "doubler", "version": version}}}


def s3_settings_for(spec: dict, credentials: Path | None, download: Path, target: Path) -> dict:
    """What the operator renders for an S3 repository (through the controller's own reading of
    the spec), with the mounted paths moved to this test's directories."""
    parsed = ModelDeploymentSpec.model_validate(spec)
    config = render_repository_config(parsed, model_from_spec(parsed))
    if "credentialsPath" in config["s3"]:
        assert config["s3"]["credentialsPath"] == S3_CREDENTIALS_DIR
        config["s3"]["credentialsPath"] = str(credentials)
    return {**config, "source": str(download), "target": str(target)}


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
@pytest.mark.parametrize("origin", ["a mounted directory", "an S3 repository"])
def test_tritonserver_serves_the_declared_version_with_the_declared_settings(tmp_path, source, origin, request):
    import tritonclient.grpc as grpcclient

    if origin == "an S3 repository":
        server = request.getfixturevalue("s3_repository")
        settings = s3_settings_for(s3_spec(server.endpoint), server.credentials(tmp_path / "keys"),
                                   tmp_path / "download", tmp_path / "served")
        fetch(settings)
        build(settings)
    else:
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


@pytest.fixture(scope="module")
def s3_repository(s3_server, tmp_path_factory):
    """Three versions of the doubler and a file beside them, under s3://corpora/models/."""
    local = tmp_path_factory.mktemp("s3-repository")
    write_doubling_model(local, "doubler", versions=(1, 2, 3))
    (local / "doubler" / "labels.txt").write_text("doubled\n")
    s3_server.upload(local, "models")
    return s3_server


@pytest.mark.parametrize("version, served", [
    pytest.param(2, 2, id="the declared version is the only one downloaded"),
    pytest.param(None, 3, id="without a version the newest is downloaded"),
])
def test_an_s3_repository_is_downloaded_served_version_only_by_the_init_command(tmp_path, s3_repository, version,
                                                                               served):
    settings = s3_settings_for(s3_spec(s3_repository.endpoint, version=version),
                               s3_repository.credentials(tmp_path / "keys"), tmp_path / "download", tmp_path / "served")
    config = tmp_path / "repo.yaml"
    config.write_text(yaml.safe_dump(settings))
    result = subprocess.run([sys.executable, "-m", "strata_workloads.model_repository", "--config", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"Serving doubler version {served} from s3://{BUCKET}/models" in result.stdout
    downloaded = tmp_path / "download" / "doubler"
    assert sorted(str(p.relative_to(downloaded)) for p in downloaded.rglob("*") if p.is_file()) == [
        f"{served}/model.py", "config.pbtxt", "labels.txt"]
    served_dir = tmp_path / "served" / "doubler"
    assert sorted(p.name for p in served_dir.iterdir()) == [str(served), "config.pbtxt", "labels.txt"]
    assert (served_dir / str(served)).resolve() == (downloaded / str(served)).resolve()
    assert f"versions: {served}" in (served_dir / "config.pbtxt").read_text()


@pytest.mark.parametrize("change, message", [
    pytest.param({"version": 7}, rf"version 7 of model 'doubler' is not in s3://{BUCKET}/models/doubler "
                                 r"\(versions there: 1, 2, 3\)", id="a version the repository lacks is named"),
    pytest.param({"model": "other"}, rf"model 'other' is not in the repository s3://{BUCKET}/models \(it has: doubler\)",
                 id="a model the repository lacks is named, with the ones it has"),
], )
def test_what_an_s3_repository_lacks_is_named(tmp_path, s3_repository, change, message):
    settings = s3_settings_for(s3_spec(s3_repository.endpoint), s3_repository.credentials(tmp_path / "keys"),
                               tmp_path / "download", tmp_path / "served")
    with pytest.raises(RepositoryError, match=message):
        fetch({**settings, **change})


def test_wrong_s3_keys_end_the_init_command_saying_why(tmp_path, s3_repository):
    settings = s3_settings_for(s3_spec(s3_repository.endpoint),
                               s3_repository.credentials(tmp_path / "keys", secret_key="not-the-secret"),
                               tmp_path / "download", tmp_path / "served")
    config = tmp_path / "repo.yaml"
    config.write_text(yaml.safe_dump(settings))
    result = subprocess.run([sys.executable, "-m", "strata_workloads.model_repository", "--config", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("Cannot serve the model:") and "models/doubler" in result.stderr, result.stderr
    assert not (tmp_path / "served").exists()


def test_a_half_set_secret_is_refused_naming_both_keys(tmp_path, s3_repository):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "AWS_ACCESS_KEY_ID").write_text("strata")
    settings = s3_settings_for(s3_spec(s3_repository.endpoint), keys, tmp_path / "download", tmp_path / "served")
    with pytest.raises(RepositoryError, match="set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY as files in"):
        fetch(settings)
