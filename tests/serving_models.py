"""A tiny Triton python-backend model for serving tests: OUTPUT0 = INPUT0 * 2 + version, so a
caller can tell which version answered. Written into any directory (a PVC, a tmp dir)."""

from __future__ import annotations

from pathlib import Path

MODEL_PY = '''
import os
import sys

# Triton's python stub ignores PYTHONPATH; the serving image points it at numpy this way.
for _entry in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
    if _entry not in sys.path:
        sys.path.insert(0, _entry)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.version = float(args["model_version"])

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = (values * 2 + self.version).astype(np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
'''

CONFIG = '''name: "{name}"
backend: "python"
max_batch_size: 4
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
'''


def write_doubling_model(repository: Path, name: str, versions: tuple[int, ...] = (1,)) -> Path:
    model_dir = repository / name
    for version in versions:
        (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
        (model_dir / str(version) / "model.py").write_text(MODEL_PY)
    (model_dir / "config.pbtxt").write_text(CONFIG.format(name=name))
    return model_dir


def expected_output(values, version: int):
    return [value * 2 + version for value in values]
