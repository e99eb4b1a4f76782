"""A trainer's export to an S3 repository (SeaweedFS): uploaded under the next version the
repository lacks, then downloaded by the ModelDeployment init step and served by the real
tritonserver with the trained model's own answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyarrow import fs
from s3_support import BUCKET
from workload_harness import base_config, launch, start_tritonserver

from strata_workloads.model_repository import build, fetch

pytestmark = [pytest.mark.triton, pytest.mark.deepspeed]

PREFIX = "exports"


def objects(server, prefix: str) -> set[str]:
    root = f"{BUCKET}/{prefix}"
    listing = server.client.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True))
    return {item.path[len(root) + 1:] for item in listing if item.type == fs.FileType.File}


@pytest.fixture(scope="module")
def exported(s3_server, text_dataset, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("s3-export")
    # An older version already there: the export is numbered after it, as on a PVC.
    s3_server.put(f"{PREFIX}/lm/4/model.pt", b"an older export")
    keys = s3_server.credentials(workdir / "keys")
    config = base_config("transformer", text_dataset, workdir, export={
        "dir": str(workdir / "scratch"), "modelName": "lm", "samples": 0,
        "s3": {"uri": f"s3://{BUCKET}/{PREFIX}", "endpoint": s3_server.endpoint, "credentialsPath": str(keys)}})
    run = launch(config, workdir / "run", nproc=1)
    assert run.returncode == 0, run.stderr[-4000:]
    return run, keys


def test_the_export_is_uploaded_as_the_next_version_with_every_variants_config(s3_server, exported):
    run, _ = exported
    summary = run.one("exported")
    assert (summary["version"], summary["repository"]) == (5, f"s3://{BUCKET}/{PREFIX}")
    assert summary["variants"] == {"torchscript": "lm", "python": "lm-python"}
    uploaded = objects(s3_server, PREFIX)
    assert {"lm/config.pbtxt", "lm/5/model.pt", "lm/5/strata-metadata.json", "lm-python/config.pbtxt",
            "lm-python/5/model.py", "lm-python/5/model.pt", "lm-python/5/strata-metadata.json"} <= uploaded
    assert not any(name.startswith(("lm/1/", "lm-python/1/")) for name in uploaded)
    assert run.termination["export"]["version"] == 5


def test_the_uploaded_export_is_downloaded_and_served_with_the_trained_models_answers(s3_server, exported, tmp_path):
    import tritonclient.grpc as grpcclient

    _, keys = exported
    settings = {"model": "lm-python", "version": None, "source": str(tmp_path / "download"),
                "target": str(tmp_path / "served"), "maxBatchSize": 8, "instanceGroups": [{"kind": "CPU", "count": 1}],
                "dynamicBatching": None,
                "s3": {"uri": f"s3://{BUCKET}/{PREFIX}", "endpoint": s3_server.endpoint, "credentialsPath": str(keys)}}
    assert fetch(settings) == 5
    build(settings)
    server, url = start_tritonserver(tmp_path / "served", ["lm-python"], tmp_path / "triton")
    try:
        prompt = np.array([[256] + list(b"The cat sat")], dtype=np.int64)
        tensors = []
        for name, array in (("tokens", prompt), ("label", np.array([[0]], dtype=np.int64))):
            tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        served = grpcclient.InferenceServerClient(url).infer("lm-python", tensors).as_numpy("logits")
    finally:
        server.close()
    module = torch.jit.load(str(tmp_path / "download" / "lm-python" / "5" / "model.pt"))
    with torch.no_grad():
        expected = module(torch.from_numpy(prompt), torch.zeros((1, 1), dtype=torch.int64)).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-4, rtol=0)


def test_an_export_target_the_keys_cannot_reach_fails_the_start_not_the_end_of_training(s3_server, text_dataset,
                                                                                       tmp_path):
    keys = s3_server.credentials(tmp_path / "keys", secret_key="not-the-secret")
    config = base_config("transformer", text_dataset, tmp_path, export={
        "dir": str(tmp_path / "scratch"), "modelName": "lm",
        "s3": {"uri": f"s3://{BUCKET}/{PREFIX}", "endpoint": s3_server.endpoint, "credentialsPath": str(keys)}})
    run = launch(config, tmp_path / "run", nproc=1)
    assert run.returncode == 1, run.stderr[-3000:]
    assert not run.of("step")
    assert run.termination["reason"] == "TrainingError"
    assert run.termination["error"].startswith(f"export.s3: s3://{BUCKET}/{PREFIX} cannot be reached from rank 0"), \
        run.termination
