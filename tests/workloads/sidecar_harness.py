"""Helpers for the sidecar's tests and benchmark: small python-backend models, the sidecar process."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from tests_support import sidecar_env, wait_for
from workload_harness import ManagedProcess, free_port

# One model.py for every test model: copies its input to its output after sleeping for the
# model's `sleep_seconds` parameter (a stand-in for GPU time). Triton's python stub ignores
# PYTHONPATH, so the model extends sys.path from it (see ecosystem-parts-facts.md).
MODEL_PY = '''
import json
import os
import sys
import time

for _entry in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
    if _entry not in sys.path:
        sys.path.insert(0, _entry)

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.sleep = float(config.get("parameters", {}).get("sleep_seconds", {}).get("string_value", "0"))
        self.input = config["input"][0]["name"]
        self.output = config["output"][0]["name"]

    def execute(self, requests):
        responses = []
        for request in requests:
            if self.sleep:
                time.sleep(self.sleep)
            array = pb_utils.get_input_tensor_by_name(request, self.input).as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output, array)]))
        return responses
'''

CONFIG_PBTXT = '''name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT", data_type: {datatype}, dims: [ -1, -1 ] }} ]
output [ {{ name: "OUTPUT", data_type: {datatype}, dims: [ -1, -1 ] }} ]
instance_group [ {{ kind: KIND_CPU, count: {instances} }} ]
parameters: {{ key: "sleep_seconds", value: {{ string_value: "{sleep}" }} }}
'''

# name -> (datatype, sleep seconds)
MODELS = {"identity": ("TYPE_FP32", 0.0), "sleep-0.5ms": ("TYPE_FP32", 0.0005), "sleep-5ms": ("TYPE_FP32", 0.005),
          "text": ("TYPE_STRING", 0.0), "ids": ("TYPE_INT64", 0.0)}


def write_model_repository(root: Path, models: dict[str, tuple[str, float]] = MODELS, instances: int = 1) -> Path:
    for name, (datatype, sleep) in models.items():
        version = root / name / "1"
        version.mkdir(parents=True, exist_ok=True)
        (version / "model.py").write_text(MODEL_PY)
        (root / name / "config.pbtxt").write_text(
            CONFIG_PBTXT.format(name=name, datatype=datatype, sleep=sleep, instances=instances))
    return root


class Sidecar:
    """``python -m strata_workloads.serve`` on free ports, in front of a Triton."""

    def __init__(self, workdir: Path, triton_grpc_port: int, triton_http_port: int, **settings: Any):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.config = {
            "modelName": "identity",
            "listen": {"host": "127.0.0.1", "httpPort": self.http_port, "grpcPort": self.grpc_port,
                       "metricsPort": self.metrics_port},
            "upstream": {"host": "127.0.0.1", "httpPort": triton_http_port, "grpcPort": triton_grpc_port},
            "stateDir": str(workdir / "state"),
            **settings,
        }
        self.config_path = workdir / "sidecar.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.process: ManagedProcess | None = None
        self.starts = 0

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def start(self, upstream_up: bool = True) -> "Sidecar":
        """Start, and wait until it answers (through to Triton when ``upstream_up``)."""
        self.starts += 1
        self.process = ManagedProcess([sys.executable, "-m", "strata_workloads.serve", "--config",
                                       str(self.config_path)], self.workdir / f"sidecar-{self.starts}.log",
                                      env=sidecar_env(self.config))
        wait_for(self._ready if upstream_up else self._listening, timeout=60, interval=0.1,
                 what="the sidecar's ports")
        return self

    def _check_alive(self) -> None:
        if not self.process.alive():
            raise RuntimeError(f"the sidecar exited:\n{self.process.log_tail()}")

    def _ready(self) -> bool:
        self._check_alive()
        try:
            # Health passes through to Triton without a key: both the sidecar and Triton answer.
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                http_ok = response.status == 200
            health = self.get("/healthz")
        except (OSError, urllib.error.HTTPError):
            return False
        import tritonclient.grpc as grpcclient
        try:
            grpc_ok = grpcclient.InferenceServerClient(self.grpc_url).is_server_live()
        except Exception:
            return False
        return http_ok and grpc_ok and health["ready"] == health["workers"]

    def _listening(self) -> bool:
        self._check_alive()
        health = self.get_or_none("/healthz")
        return bool(health) and health["ready"] == health["workers"]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as response:
            body = response.read().decode()
        return json.loads(body) if path != "/metrics" else body

    def get_or_none(self, path: str) -> Any:
        try:
            return self.get(path)
        except OSError:
            return None

    def metrics(self) -> str:
        return self.get("/metrics")

    def kill(self) -> None:
        """SIGKILL every process of the sidecar, as when its container is killed."""
        import os
        import signal
        os.killpg(self.process.process.pid, signal.SIGKILL)
        self.process.process.wait()

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
