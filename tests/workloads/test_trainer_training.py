"""Real DeepSpeed training on CPU (gloo, two ranks): every family under ZeRO-2 and ZeRO-3."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from workload_harness import base_config, free_port, launch

from strata_workloads.train.config import Hyperparameters
from strata_workloads.train.reporting import TERMINATION_MESSAGE_LIMIT
from strata_workloads.train.schedule import learning_rate_at

pytestmark = pytest.mark.deepspeed

FAMILY_STAGES = [
    pytest.param(family, stage, id=f"{family} trains under ZeRO-{stage}")
    for family in ("transformer", "vae", "gan", "diffusion")
    for stage in (2, 3)
]


@pytest.mark.parametrize(("family", "zero_stage"), FAMILY_STAGES)
def test_family_trains_and_validation_metric_goes_down(family_run, family, zero_stage):
    run = family_run(family, zero_stage)
    assert run.returncode == 0, run.stderr[-4000:]
    started = run.one("started")
    assert (started["family"], started["zeroStage"], started["worldSize"]) == (family, zero_stage, 2)

    max_steps = run.config["hyperparameters"]["maxSteps"]
    steps = run.of("step")
    assert [e["step"] for e in steps] == list(range(1, max_steps + 1))
    # Validation runs on fixed batches with fixed noise, so its trend is what training did.
    # GAN losses are adversarial; its progress measure is the moment distance to the data.
    metric = "momentDistance" if family == "gan" else "loss"
    validations = run.validations(metric)
    assert len(validations) == max_steps // run.config["validation"]["everySteps"], run.of("validation")
    assert validations[-1] < validations[0], f"{metric} did not go down: {validations}"
    if family != "gan":
        losses = [e["losses"]["loss"] for e in steps]
        assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    assert all(e["samplesPerSecond"] > 0 for e in steps)


@pytest.mark.parametrize(("family", "zero_stage"), FAMILY_STAGES)
def test_family_generates_samples_and_exports(family_run, family, zero_stage):
    run = family_run(family, zero_stage)
    assert run.returncode == 0, run.stderr[-4000:]
    exported = run.one("exported")
    primary = Path(exported["models"]["torchscript"])
    samples = json.loads((primary / "samples.json").read_text())
    if family == "transformer":
        assert len(samples["text"]) == 2
        assert all(s["text"].startswith("The ") and len(s["text"]) > len("The ") for s in samples["text"])
    else:
        images = samples["images"]
        assert len(images) == 2 and len(images[0]) == 1 and len(images[0][0]) == 8  # [N, C, H, W]
        assert all(-1.0 <= v <= 1.0 for row in images[0][0] for v in row)
    metadata = json.loads((primary / "strata-metadata.json").read_text())
    assert metadata["family"] == family and metadata["dataset"]["version"] == "v1"
    assert metadata["trainingStep"] == run.config["hyperparameters"]["maxSteps"]
    assert metadata["metrics"] == run.one("completed")["metrics"]


def test_transformer_reports_perplexity_and_tokens_per_second(transformer_run):
    run = transformer_run
    assert run.returncode == 0, run.stderr[-4000:]
    for validation in run.of("validation"):
        assert validation["metrics"]["perplexity"] == pytest.approx(math.exp(validation["metrics"]["loss"]))
    assert all(e["tokensPerSecond"] > 0 for e in run.of("step"))


def test_learning_rate_warms_up_then_decays(transformer_run):
    rates = [e["learningRate"] for e in transformer_run.of("step")]
    hp = Hyperparameters.model_validate(transformer_run.config["hyperparameters"])
    # Each step reports the rate it applied: linear warmup to the peak, then cosine decay.
    assert rates == pytest.approx([learning_rate_at(step, hp) for step in range(hp.max_steps)])
    assert rates[1] == pytest.approx(hp.learning_rate) and rates[0] == pytest.approx(hp.learning_rate / 2)
    assert all(later < earlier for earlier, later in zip(rates[2:], rates[3:], strict=False))  # decay starts at step 2


def test_termination_message_is_the_final_result(transformer_run):
    run = transformer_run
    result = run.termination
    assert result is not None, "rank 0 wrote no termination message"
    assert len(json.dumps(result, separators=(",", ":")).encode()) <= TERMINATION_MESSAGE_LIMIT
    assert result["status"] == "succeeded" and result["step"] == 16
    assert result["metrics"] == run.of("validation")[-1]["metrics"]
    assert Path(result["checkpoint"], "latest.json").exists()
    assert result["export"]["modelName"] == "textgen" and result["export"]["version"] == 1
    assert result["dataset"] == "synthetic-text@v1"


def test_checkpoints_keep_only_the_last_n(transformer_run):
    checkpoints = Path(transformer_run.termination["checkpoint"])
    latest = json.loads((checkpoints / "latest.json").read_text())
    assert latest["step"] == 16
    assert sorted(p.name for p in (checkpoints / "model").iterdir() if p.is_dir()) == ["step00000016"]
    assert [e["step"] for e in transformer_run.of("checkpoint")] == [8, 16]


def test_prometheus_endpoint_serves_progress(transformer_run):
    text = transformer_run.scraped_metrics
    assert text is not None, "the metrics endpoint was not scraped during the run"
    samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    assert samples['strata_train_total_steps{family="transformer"}'] == 16
    assert samples['strata_train_step{family="transformer"}'] >= 1
    assert samples['strata_train_loss{family="transformer",name="loss"}'] > 0
    assert samples['strata_train_samples_per_second{family="transformer"}'] > 0


def test_mlflow_run_has_params_metrics_and_artifacts(transformer_run, mlflow_server):
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("strata-tests")
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'transformer-zero2'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["deepspeed.zeroStage"] == "2"
    assert run.data.params["model.family"] == "transformer"
    assert run.data.tags["strata.configHash"] == transformer_run.termination["configHash"]
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, 17))
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
        list(transformer_run.step_losses().values()))
    assert client.get_metric_history(run.info.run_id, "validation/perplexity")
    checkpoint_artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert checkpoint_artifacts == ["checkpoints/step00000008", "checkpoints/step00000016"]
    exported = [a.path for a in client.list_artifacts(run.info.run_id, "export/torchscript")]
    assert "export/torchscript/model.pt" in exported


@pytest.fixture(scope="module")
def bf16_offload_early_stopped_run(tmp_path_factory, text_dataset):
    """ZeRO-1 with the optimizer offloaded to CPU, bf16, and an early-stopping rule that must fire."""
    workdir = tmp_path_factory.mktemp("run-bf16-offload")
    config = base_config(
        "transformer", text_dataset, workdir, zero_stage=1,
        deepspeed={"precision": "bf16", "offload": "cpu"},
        hyperparameters={"maxSteps": 40},
        # No validation can improve on the first by 100 nats: stop after `patience` more.
        validation={"everySteps": 4, "maxBatches": 1,
                    "earlyStopping": {"metric": "perplexity", "patience": 2, "minDelta": 100.0}},
        export={"dir": str(workdir / "repository"), "modelName": "textgen", "quantization": "bf16", "samples": 0},
        # Nothing listens here: tracking must fail without failing the run.
        tracking={"mlflowUri": f"http://127.0.0.1:{free_port()}"},
    )
    return launch(config, workdir)


def test_an_unreachable_mlflow_server_is_reported_and_training_goes_on(bf16_offload_early_stopped_run):
    run = bf16_offload_early_stopped_run
    assert run.returncode == 0, run.stderr[-4000:]
    failures = run.of("tracking_failed")
    assert len(failures) == 1 and failures[0]["action"] == "start" and failures[0]["disabled"] is True
    assert run.one("completed")


def test_bf16_with_cpu_offload_trains_and_stops_early(bf16_offload_early_stopped_run):
    run = bf16_offload_early_stopped_run
    assert run.returncode == 0, run.stderr[-4000:]
    started = run.one("started")
    assert (started["precision"], started["zeroStage"]) == ("bf16", 1)
    stopped = run.one("early_stopped")
    assert stopped["step"] == 12 and stopped["metric"] == "perplexity"
    assert [e["step"] for e in run.of("validation")] == [4, 8, 12]
    assert max(e["step"] for e in run.of("step")) == 12
    assert run.termination["status"] == "early-stopped" and run.termination["step"] == 12
    losses = run.validations("loss")
    assert losses[-1] < losses[0]


def test_bf16_export_records_its_metric_change(bf16_offload_early_stopped_run):
    run = bf16_offload_early_stopped_run
    exported = run.one("exported")
    metadata = json.loads((Path(exported["models"]["bf16"]) / "strata-metadata.json").read_text())
    quantization = metadata["quantization"]
    assert quantization["kind"] == "bf16"
    assert quantization["change"]["loss"] == pytest.approx(
        quantization["quantized"]["loss"] - quantization["baseline"]["loss"])
    assert abs(quantization["change"]["loss"]) < 0.1


@pytest.fixture(scope="module")
def packed_run(tmp_path_factory, text_dataset):
    """Two ranks, ZeRO-2, documents packed into full windows with document attention."""
    workdir = tmp_path_factory.mktemp("run-packed")
    config = base_config("transformer", text_dataset, workdir, zero_stage=2, model={"numClasses": 0},
                         data={"packing": True, "documentAttention": True}, hyperparameters={"maxSteps": 12})
    return launch(config, workdir)


def test_packed_transformer_trains(packed_run):
    assert packed_run.returncode == 0, packed_run.stderr[-4000:]
    losses = packed_run.validations("loss")
    assert losses[-1] < losses[0], losses


def test_tokens_per_second_counts_real_tokens(packed_run, transformer_run):
    # A packed window is all real tokens: contextLength targets per example. Padded examples
    # of ~30-byte sentences have far fewer real targets than their 48 slots.
    def tokens_per_example(run):
        return [e["tokensPerSecond"] / e["samplesPerSecond"] for e in run.of("step")]

    context = packed_run.config["model"]["size"]["contextLength"]
    assert tokens_per_example(packed_run) == pytest.approx([context] * 12, rel=1e-3)
    assert max(tokens_per_example(transformer_run)) < 0.8 * context
