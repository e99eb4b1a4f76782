"""Every tensor of a training step follows the engine's device.

No GPU here, so the GPU failure modes are made visible on the CPU: the trainer runs (real
DeepSpeed, one rank) under ``device_standin``, where a tensor or generator made without
naming its device lands somewhere else (``meta``) and fails the step exactly as a CPU tensor
next to GPU tensors does on a GPU; collectives are checked to get tensors on the engine's
device. The ``gpu`` tests run the same paths on real GPUs where one is visible.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from device_standin import ImplicitDeviceIsElsewhere
from workload_harness import PYTHON, free_port, write_config

from strata_workloads.train.config import ConfigError, parse_config
from strata_workloads.train.data import load_training_data
from strata_workloads.train.device import device_for_rank, to_device, uses_pinned_copies
from strata_workloads.train.export import quantization_device
from strata_workloads.train.models import make_family

STANDIN = Path(__file__).with_name("device_standin.py")


@pytest.mark.parametrize(("local_rank", "gpus", "device"), [
    pytest.param(0, 0, "cpu", id="no GPU: the CPU"),
    pytest.param(3, 0, "cpu", id="no GPU: the CPU for every rank"),
    pytest.param(0, 8, "cuda:0", id="rank 0 takes GPU 0"),
    pytest.param(5, 8, "cuda:5", id="local rank 5 takes GPU 5"),
])
def test_each_rank_takes_the_gpu_of_its_local_rank(local_rank, gpus, device):
    assert device_for_rank(local_rank, gpus) == torch.device(device)


def test_more_ranks_than_gpus_is_a_configuration_error():
    with pytest.raises(ConfigError, match="LOCAL_RANK 2 has no GPU: 2 visible on this node"):
        device_for_rank(2, 2)


def test_batches_are_copied_through_pinned_memory_only_to_gpus():
    assert uses_pinned_copies(torch.device("cuda", 0))
    assert not uses_pinned_copies(torch.device("cpu")) and not uses_pinned_copies(torch.device("meta"))
    batch = {"tokens": torch.zeros((2, 3), dtype=torch.long), "mask": torch.ones((2, 3), dtype=torch.bool)}
    assert to_device(batch, torch.device("cpu")) is batch  # already there: no copy
    moved = to_device(batch, torch.device("meta"))
    assert {t.device.type for t in moved.values()} == {"meta"}
    assert {name: t.dtype for name, t in moved.items()} == {name: t.dtype for name, t in batch.items()}


@pytest.mark.parametrize(("kind", "training", "evaluated"), [
    pytest.param("int8", "cuda:0", "cpu", id="int8 is measured on the CPU, where its kernels are"),
    pytest.param("bf16", "cuda:0", "cuda:0", id="bf16 is measured on the training GPU"),
    pytest.param("fp16", "cuda:1", "cuda:1", id="fp16 is measured on the training GPU"),
    pytest.param("int8", "cpu", "cpu", id="CPU training measures on the CPU"),
])
def test_quantized_variants_are_measured_where_their_kernels_run(kind, training, evaluated):
    assert quantization_device(kind, torch.device(training)) == torch.device(evaluated)


def test_the_stand_in_turns_a_tensor_made_without_a_device_into_a_device_mismatch():
    # Code compiled as if it were a model file: the stand-in treats it as device-side.
    source = "import torch\ndef step(x):\n    return x + torch.ones(x.shape)\ndef fixed(x):\n" \
             "    return x + torch.ones(x.shape, device=x.device)\n"
    namespace: dict = {}
    exec(compile(source, os.path.join("strata_workloads", "train", "models", "probe.py"), "exec"), namespace)
    mode = ImplicitDeviceIsElsewhere()
    with mode, pytest.raises(RuntimeError, match="meta"):
        namespace["step"](torch.zeros(2))
    assert mode.implicit == ["torch.ones at train/models/probe.py:3"]
    with ImplicitDeviceIsElsewhere() as clean:
        assert namespace["fixed"](torch.zeros(2)).tolist() == [1.0, 1.0]
    assert clean.implicit == []


STANDIN_RUNS = [
    pytest.param("transformer", {"deepspeed": {"zeroStage": 3}, "model": {"numClasses": 0},
                                 "data": {"packing": True, "documentAttention": True},
                                 "performance": {"activationCheckpointing": True},
                                 "export": {"quantization": "int8"}},
                 id="packed transformer with document attention and recomputation under ZeRO-3, int8 export"),
    pytest.param("transformer", {"deepspeed": {"zeroStage": 2, "precision": "bf16"},
                                 "export": {"quantization": "bf16"}},
                 id="label-conditioned transformer in bf16 under ZeRO-2, bf16 export"),
    pytest.param("gan", {"deepspeed": {"zeroStage": 2, "precision": "bf16"}}, id="gan in bf16 under ZeRO-2"),
    pytest.param("vae", {"deepspeed": {"zeroStage": 3}, "export": {"quantization": "fp16"}},
                 id="vae under ZeRO-3, fp16 export"),
    pytest.param("diffusion", {"deepspeed": {"zeroStage": 2}, "performance": {"activationCheckpointing": True},
                               "export": {"quantization": "int8"}},
                 id="diffusion with recomputation under ZeRO-2, int8 export"),
]


@pytest.mark.deepspeed
@pytest.mark.parametrize(("family", "changes"), STANDIN_RUNS)
def test_every_tensor_of_training_validation_and_export_is_on_the_engines_device(
        tmp_path, text_dataset, image_dataset, family, changes):
    text = family == "transformer"
    config = {
        "model": {"family": family, "size": {"layers": 2, "hidden": 32, "heads": 2, "contextLength": 48,
                                             "latentDim": 8, "baseChannels": 8, "diffusionSteps": 20}},
        "deepspeed": {"microBatchSize": 8, "gradientAccumulation": 2},
        "hyperparameters": {"learningRate": 3e-3, "warmupSteps": 1, "maxSteps": 4},
        "validation": {"everySteps": 2, "maxBatches": 2},
        "data": {"path": str(text_dataset if text else image_dataset)},
        "export": {"dir": str(tmp_path / "repository"), "modelName": family, "samples": 2},
        "observability": {"metricsPort": 0, "terminationLog": str(tmp_path / "termination-log")},
    }
    for section, values in changes.items():
        config.setdefault(section, {}).update(values)
    config_path = write_config(tmp_path, config)
    report_path = tmp_path / "report.json"
    completed = subprocess.run([PYTHON, str(STANDIN), str(config_path), str(report_path)], capture_output=True,
                               text=True, timeout=600, cwd=tmp_path,
                               env={**os.environ, "MASTER_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"})
    report = json.loads(report_path.read_text())
    assert completed.returncode == 0, completed.stderr[-4000:] + json.dumps(report)
    assert report["implicit"] == [], "tensors made without naming the engine's device"
    assert report["generatorsWithoutDevice"] == [], "generators that would draw on the CPU"
    assert report["misplacedCollectives"] == []
    # The step's reduce and the validation's reduce both ran (and were checked).
    assert sum(count for caller, count in report["collectives"].items() if caller.startswith("train/trainer.py")) >= 4

    events = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith('{"event"')]
    started = next(e for e in events if e["event"] == "started")
    parsed = parse_config(config)
    family_ = make_family(parsed, load_training_data(parsed).info)
    unpartitioned = sum(p.numel() for module in family_.build().values() for p in module.parameters())
    assert started["parameters"] == unpartitioned, "ZeRO-3 partitions must not hide parameters from the count"
    exported = next(e for e in events if e["event"] == "exported")
    assert Path(exported["models"]["torchscript"], "samples.json").is_file()
    if "quantization" in changes.get("export", {}):
        assert exported["quantization"]["kind"] == changes["export"]["quantization"]
