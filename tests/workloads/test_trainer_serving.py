"""Exported repositories served by the real tritonserver (python backend, CPU) over gRPC."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from workload_harness import start_tritonserver

pytestmark = [pytest.mark.triton, pytest.mark.deepspeed]

# Triton runs the same TorchScript file as the reference below, but in another process with
# its own thread count; fp32 reductions may be ordered differently, nothing more.
SERVING_TOLERANCE = 1e-4


def _infer(url: str, model: str, inputs: dict[str, np.ndarray], output: str) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    request = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
        tensor.set_data_from_numpy(array)
        request.append(tensor)
    return client.infer(model, request).as_numpy(output)


def _reference(version_dir: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    module = torch.jit.load(str(version_dir / "model.pt"))
    with torch.no_grad():
        return module(*[torch.from_numpy(a) for a in inputs.values()]).numpy()


@pytest.fixture(scope="module")
def text_server(transformer_run, tmp_path_factory):
    assert transformer_run.returncode == 0, transformer_run.stderr[-4000:]
    repository = Path(transformer_run.one("exported")["repository"])
    server, url = start_tritonserver(repository, ["textgen-python", "textgen-int8-python"],
                                     tmp_path_factory.mktemp("triton-text"))
    yield repository, url
    server.close()


def test_repository_layout_and_config(transformer_run):
    repository = Path(transformer_run.one("exported")["repository"])
    assert sorted(p.name for p in repository.iterdir()) == ["textgen", "textgen-int8", "textgen-int8-python",
                                                           "textgen-python"]
    libtorch = (repository / "textgen" / "config.pbtxt").read_text()
    assert 'platform: "pytorch_libtorch"' in libtorch and "max_batch_size: 8" in libtorch
    assert "dynamic_batching" in libtorch and 'name: "tokens"' in libtorch and 'name: "logits"' in libtorch
    assert 'backend: "python"' in (repository / "textgen-python" / "config.pbtxt").read_text()
    metadata = json.loads((repository / "textgen" / "1" / "strata-metadata.json").read_text())
    assert metadata["configHash"] == transformer_run.termination["configHash"]
    assert metadata["dataset"] == {"name": "synthetic-text", "version": "v1"}


def test_served_logits_match_the_pytorch_model(text_server):
    repository, url = text_server
    prompt = np.array([[256] + list(b"The cat sat")], dtype=np.int64)
    inputs = {"tokens": prompt, "label": np.array([[0]], dtype=np.int64)}
    served = _infer(url, "textgen-python", inputs, "logits")
    expected = _reference(repository / "textgen" / "1", inputs)
    assert served.shape == (1, prompt.shape[1], 259)
    np.testing.assert_allclose(served, expected, atol=SERVING_TOLERANCE, rtol=0)


def test_concurrent_requests_are_batched_and_answered_individually(text_server):
    import tritonclient.grpc as grpcclient

    repository, url = text_server
    client = grpcclient.InferenceServerClient(url)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, 256, size=(1, 10), dtype=np.int64) for _ in range(4)]
    results: dict[int, np.ndarray] = {}

    def callback(index):
        def done(result, error):
            assert error is None, error
            results[index] = result.as_numpy("logits")
        return done

    for index, tokens in enumerate(prompts):
        request = []
        for name, array in (("tokens", tokens), ("label", np.array([[index % 2]], dtype=np.int64))):
            tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array)
            request.append(tensor)
        client.async_infer("textgen-python", request, callback(index))
    import time

    deadline = time.monotonic() + 60
    while len(results) < len(prompts) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(results) == len(prompts)
    for index, tokens in enumerate(prompts):
        expected = _reference(repository / "textgen" / "1",
                              {"tokens": tokens, "label": np.array([[index % 2]], dtype=np.int64)})
        np.testing.assert_allclose(results[index], expected, atol=SERVING_TOLERANCE, rtol=0)


def test_int8_export_serves_and_records_its_accuracy_change(text_server):
    repository, url = text_server
    inputs = {"tokens": np.array([[256] + list(b"A puppy ran")], dtype=np.int64),
              "label": np.array([[1]], dtype=np.int64)}
    served = _infer(url, "textgen-int8-python", inputs, "logits")
    np.testing.assert_allclose(served, _reference(repository / "textgen-int8" / "1", inputs),
                               atol=SERVING_TOLERANCE, rtol=0)
    full_precision = _reference(repository / "textgen" / "1", inputs)
    # Quantized, so not identical, but close: int8 weights perturb logits slightly.
    difference = np.abs(served - full_precision).max()
    assert 0 < difference < 0.05 * np.abs(full_precision).max()

    metadata = json.loads((repository / "textgen-int8" / "1" / "strata-metadata.json").read_text())
    quantization = metadata["quantization"]
    assert quantization["kind"] == "int8"
    for metric in ("loss", "perplexity"):
        change = quantization["change"][metric]
        assert change == pytest.approx(quantization["quantized"][metric] - quantization["baseline"][metric])
        assert math.isfinite(change)
    assert abs(quantization["change"]["loss"]) < 0.1
    assert metadata["metrics"] == quantization["quantized"]


def _image_family_inputs(family: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A batch of three requests for each image family's served signature (latentDim 8, 8x8 images)."""
    labels = np.array([[0], [1], [0]], dtype=np.int64)
    if family == "vae":
        return {"latent": rng.standard_normal((3, 8)).astype(np.float32), "label": labels}
    if family == "gan":
        return {"noise": rng.standard_normal((3, 8)).astype(np.float32), "label": labels}
    return {"noisy_image": rng.standard_normal((3, 1, 8, 8)).astype(np.float32),
            "timestep": np.array([[0], [25], [49]], dtype=np.int64), "label": labels}


@pytest.mark.parametrize(
    "family, zero_stage, models, output",
    [
        pytest.param("vae", 3, ("vae", "vae-int8"), "image", id="the vae decoder, fp32 and int8"),
        pytest.param("gan", 2, ("gan",), "image", id="the gan generator"),
        pytest.param("diffusion", 2, ("diffusion",), "predicted_noise", id="the diffusion denoiser"),
    ],
)
def test_image_family_export_serves(family_run, tmp_path_factory, family, zero_stage, models, output):
    run = family_run(family, zero_stage)
    assert run.returncode == 0, run.stderr[-4000:]
    repository = Path(run.one("exported")["repository"])
    served_models = [f"{model}-python" for model in models]
    server, url = start_tritonserver(repository, served_models, tmp_path_factory.mktemp(f"triton-{family}"))
    try:
        inputs = _image_family_inputs(family, np.random.default_rng(1))
        for model, directory in zip(served_models, models, strict=True):
            served = _infer(url, model, inputs, output)
            assert served.shape == (3, 1, 8, 8)
            np.testing.assert_allclose(served, _reference(repository / directory / "1", inputs),
                                       atol=SERVING_TOLERANCE, rtol=0)
    finally:
        server.close()


def test_the_termination_message_names_every_exported_variants_model(transformer_run):
    """What the operator records in status.exportedModel.variants, and a ModelDeployment serves."""
    export = transformer_run.termination["export"]
    assert export["variants"] == {"torchscript": "textgen", "python": "textgen-python",
                                  "int8": "textgen-int8", "int8-python": "textgen-int8-python"}
    for name in export["variants"].values():
        model_dir = Path(export["repository"], name)
        assert (model_dir / "config.pbtxt").is_file() and (model_dir / str(export["version"])).is_dir()
