"""The trainer on real GPUs: every family, bf16 and fp16, ZeRO-2 and ZeRO-3, resume, export.

Marked ``gpu``: collected everywhere, run wherever a CUDA device is visible (one rank per
GPU, at most two), and reported as not run in one summary line elsewhere (tests/conftest.py).
The CPU-side guarantees of the same paths are in test_trainer_devices.py. To run them on a
GPU machine in one go: tests/benchmarks/gpu_check.sh.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from workload_harness import base_config, launch

from strata_workloads.train.config import parse_config
from strata_workloads.train.data import load_training_data
from strata_workloads.train.models import make_family

pytestmark = [pytest.mark.gpu, pytest.mark.deepspeed]


def gpu_ranks() -> int:
    import torch

    return min(torch.cuda.device_count(), 2)


# (family, precision, ZeRO stage, extra settings): each family in bf16 and fp16 (the GAN is
# bf16 only, by configuration), each under ZeRO-2 and ZeRO-3, the speed settings and every
# quantized export among them.
GPU_RUNS = [
    ("transformer", "bf16", 2, {"model": {"numClasses": 0}, "data": {"packing": True},
                                "performance": {"compile": True}, "export": {"quantization": "int8"}}),
    ("transformer", "fp16", 3, {"model": {"numClasses": 0}, "data": {"packing": True, "documentAttention": True},
                                "performance": {"activationCheckpointing": True}, "export": {"quantization": "fp16"}}),
    ("vae", "bf16", 3, {"export": {"quantization": "bf16"}}),
    ("vae", "fp16", 2, {"export": {"quantization": "int8"}}),
    ("gan", "bf16", 2, {}),
    ("gan", "bf16", 3, {}),
    ("diffusion", "bf16", 3, {"performance": {"activationCheckpointing": True}}),
    ("diffusion", "fp16", 2, {"performance": {"compile": True}, "export": {"quantization": "fp16"}}),
]


def gpu_config(family, precision, stage, extra, data, workdir, **overrides):
    config = base_config(family, data, workdir, zero_stage=stage)
    defaults = {"deepspeed": {"precision": precision}, "hyperparameters": {"maxSteps": 12},
                "export": {"dir": str(workdir / "repository"), "modelName": family, "samples": 2}}
    for changes in (defaults, overrides, extra):
        for section, values in changes.items():
            config.setdefault(section, {}).update(values)
    return config


@pytest.mark.parametrize(("family", "precision", "stage", "extra"), [
    pytest.param(*run, id=f"{run[0]} {run[1]} ZeRO-{run[2]}" + (f" {sorted(run[3].get('performance', {}))}"
                                                                  if run[3].get("performance") else ""))
    for run in GPU_RUNS
])
def test_family_trains_on_gpus_and_exports(tmp_path, text_dataset, image_dataset, family, precision, stage, extra):
    data = text_dataset if family == "transformer" else image_dataset
    config = gpu_config(family, precision, stage, extra, data, tmp_path)
    run = launch(config, tmp_path, nproc=gpu_ranks(), timeout=540)
    assert run.returncode == 0, run.stderr[-4000:]
    started = run.one("started")
    assert (started["precision"], started["zeroStage"]) == (precision, stage)
    parsed = parse_config(config)
    unpartitioned = sum(p.numel() for m in make_family(parsed, load_training_data(parsed).info).build().values()
                        for p in m.parameters())
    assert started["parameters"] == unpartitioned

    steps = run.of("step")
    assert [e["step"] for e in steps] == list(range(1, 13))
    assert all(e["peakMemoryBytes"] > 0 for e in steps), "steps ran on the GPU and report its memory"
    metric = "momentDistance" if family == "gan" else "loss"
    validations = run.validations(metric)
    assert validations[-1] < validations[0], validations

    exported = run.one("exported")
    assert Path(exported["models"]["torchscript"], "samples.json").is_file()
    kind = extra.get("export", {}).get("quantization")
    if kind:
        metadata = json.loads((Path(exported["models"][kind]) / "strata-metadata.json").read_text())
        assert abs(metadata["quantization"]["change"]["loss"]) < 0.5, metadata["quantization"]


def test_gpu_run_killed_after_a_checkpoint_resumes_where_it_left_off(tmp_path, text_dataset):
    checkpoints = tmp_path / "checkpoints"
    config = gpu_config("transformer", "bf16", 3, {"model": {"numClasses": 0}, "data": {"packing": True}},
                        text_dataset, tmp_path, checkpoints={"dir": str(checkpoints), "everySteps": 4},
                        hyperparameters={"maxSteps": 24}, export={"dir": None})
    rank_pids: dict[int, int] = {}
    killed: list[int] = []

    def kill_ranks(event, _process):
        # The ranks themselves, as a lost node would: torchrun starts each worker in a session of
        # its own, so killing the launcher's process group leaves them running to the end.
        if event["event"] == "process":
            rank_pids[event["rank"]] = event["pid"]
        if event["event"] == "step" and event["step"] >= 6 and not killed:
            for pid in rank_pids.values():
                os.kill(pid, signal.SIGKILL)
            killed.append(event["step"])

    first = launch(config, tmp_path, nproc=gpu_ranks(), on_event=kill_ranks, timeout=300)
    assert killed and first.returncode != 0
    assert not first.of("completed")
    latest = json.loads((checkpoints / "latest.json").read_text())
    assert latest["step"] == max(e["step"] for e in first.of("checkpoint")) < 24

    second = launch(config, tmp_path, nproc=gpu_ranks(), timeout=300)
    assert second.returncode == 0, second.stderr[-4000:]
    assert second.one("resumed")["step"] == latest["step"]
    assert [e["step"] for e in second.of("step")] == list(range(latest["step"] + 1, 25))
    original, resumed = first.step_losses(), second.step_losses()
    overlap = sorted(set(original) & set(resumed))
    assert overlap and overlap[0] == latest["step"] + 1, (latest, sorted(original))
    for step in overlap:  # same weights, optimizer state, data and noise (GPU kernels may differ in the last bits)
        assert resumed[step] == pytest.approx(original[step], rel=2e-2), (step, original[step], resumed[step])
