"""Run the trainer in this process with the default device standing in for "not the GPU".

On a GPU node the trainer's tensors must all be on ``cuda:LOCAL_RANK``; a tensor made without
naming its device lands on the CPU and the step fails ("Expected all tensors to be on the
same device"), a CPU generator cannot draw GPU noise, and NCCL refuses CPU tensors. On a
CPU-only machine all of these are silently fine, because the default device *is* the
engine's device. This driver makes them visible on the CPU:

* every tensor factory (``torch.ones``, ``torch.tensor``, ``torch.randn``, ...) called from the
  trainer's device-side code (models, trainer, export, CLI) without a ``device`` is recorded
  and its tensor created on the ``meta`` device instead, so using it with the engine's (CPU)
  tensors fails exactly as a CPU tensor next to GPU tensors fails on a GPU;
* ``torch.Generator()`` without a device from that code is recorded (it would draw on the
  CPU while the step runs on the GPU);
* every tensor given to a collective is checked to be on the engine's device.

Usage (one process, world size 1, real DeepSpeed on CPU over gloo)::

    python device_standin.py CONFIG REPORT_JSON

The exit status is the trainer's; the report lists what was recorded.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode

STANDIN = torch.device("meta")
FACTORIES = frozenset({
    torch.arange, torch.as_tensor, torch.empty, torch.eye, torch.full, torch.linspace, torch.normal,
    torch.ones, torch.rand, torch.randint, torch.randn, torch.randperm, torch.tensor, torch.zeros,
})
# Code that runs on the engine's device. data.py is deliberately absent: it builds host
# batches, which the trainer copies to the device.
DEVICE_SIDE = tuple(os.path.join("strata_workloads", "train", part) for part in (
    "models" + os.sep, "trainer.py", "export.py", "cli.py", "device.py"))


def _caller(depth: int = 2) -> str | None:
    """``file:line`` of the device-side code making the call, or None for any other caller."""
    frame = sys._getframe(depth)
    filename = frame.f_code.co_filename
    if not any(part in filename for part in DEVICE_SIDE):
        return None
    return f"{filename.split('strata_workloads' + os.sep)[-1]}:{frame.f_lineno}"


class ImplicitDeviceIsElsewhere(TorchFunctionMode):
    """Tensors the device-side code makes without naming a device go to ``meta`` (and are recorded)."""

    def __init__(self) -> None:
        super().__init__()
        self.implicit: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in FACTORIES and kwargs.get("device") is None:
            caller = _caller()
            if caller is not None:
                self.implicit.append(f"torch.{func.__name__} at {caller}")
                kwargs["device"] = STANDIN
        return func(*args, **kwargs)


def main(config_path: str, report_path: str) -> int:
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1"})
    os.environ.setdefault("MASTER_PORT", "29555")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from strata_workloads.train import cli
    from strata_workloads.train.device import local_device

    expected = local_device()
    report: dict = {"expectedDevice": str(expected), "implicit": [], "generatorsWithoutDevice": [],
                    "collectives": {}, "misplacedCollectives": []}

    real_generator = torch.Generator

    class _GeneratorType(type):
        def __instancecheck__(cls, instance):
            return isinstance(instance, real_generator)

        def __call__(cls, *args, **kwargs):
            if not args and kwargs.get("device") is None:
                caller = _caller()
                if caller is not None:
                    report["generatorsWithoutDevice"].append(caller)
            return real_generator(*args, **kwargs)

    class CheckedGenerator(metaclass=_GeneratorType):
        pass

    def checked(name, collective):
        def wrapper(*args, **kwargs):
            caller = _caller() or "elsewhere"
            report["collectives"][caller] = report["collectives"].get(caller, 0) + 1
            for tensor in (*args, *kwargs.values()):
                if isinstance(tensor, torch.Tensor) and tensor.device != expected:
                    report["misplacedCollectives"].append(f"{name} of a {tensor.device} tensor from {caller}")
            return collective(*args, **kwargs)
        return wrapper

    for name in ("all_reduce", "broadcast", "all_gather_into_tensor", "reduce_scatter_tensor"):
        setattr(dist, name, checked(name, getattr(dist, name)))
    torch.Generator = CheckedGenerator
    mode = ImplicitDeviceIsElsewhere()
    try:
        with mode:
            status = cli.main(["--config", config_path])
    except BaseException:
        traceback.print_exc()
        status = 99
    finally:
        torch.Generator = real_generator
        report["implicit"] = sorted(set(mode.implicit))
        report["generatorsWithoutDevice"] = sorted(set(report["generatorsWithoutDevice"]))
        Path(report_path).write_text(json.dumps(report, indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
