"""Helpers for the trainer tests: launching torchrun, reading the JSON-lines contract, servers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from tests_support import wait_for

from strata.devcluster import free_port  # noqa: F401 - also used by the test modules

PYTHON = sys.executable
SITE_PACKAGES = sysconfig.get_paths()["purelib"]


@dataclass
class TrainerRun:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    termination: dict[str, Any] | None
    duration: float
    scraped_metrics: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of(kind)
        assert len(found) == 1, f"expected one {kind!r} event, got {len(found)}; stderr tail:\n{self.stderr[-3000:]}"
        return found[0]

    def step_losses(self, name: str = "loss") -> dict[int, float]:
        return {e["step"]: e["losses"][name] for e in self.of("step")}

    def validations(self, metric: str) -> list[float]:
        return [e["metrics"][metric] for e in self.of("validation")]


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launch(config: dict[str, Any], workdir: Path, nproc: int = 2,
           on_event: Callable[[dict[str, Any], subprocess.Popen], None] | None = None,
           timeout: float = 300) -> TrainerRun:
    """Run the trainer under torchrun with ``nproc`` CPU ranks; collect its JSON events.

    ``on_event`` is called for each event as it arrives (to scrape metrics, or kill a rank).
    """
    config_path = write_config(workdir, config)
    termination = workdir / "termination-log"
    termination.unlink(missing_ok=True)
    env = {**os.environ, "STRATA_TERMINATION_LOG": str(termination), "PYTHONUNBUFFERED": "1"}
    # The launcher worker pods run: torchrun, exiting with the trainer's own exit code.
    command = [PYTHON, "-m", "strata_workloads.train.launch", f"--nproc_per_node={nproc}",
               f"--master_port={free_port()}", "-m", "strata_workloads.train", "--config", str(config_path)]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=workdir, start_new_session=True)
    stderr_chunks: list[str] = []
    drain = threading.Thread(target=lambda: stderr_chunks.append(process.stderr.read()), daemon=True)
    drain.start()
    events = []
    timer = threading.Timer(timeout, lambda: os.killpg(process.pid, signal.SIGKILL))
    timer.start()
    try:
        for line in process.stdout:
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            events.append(event)
            if on_event:
                on_event(event, process)
        process.wait()
    finally:
        timer.cancel()
    drain.join(timeout=10)
    return TrainerRun(
        returncode=process.returncode,
        events=events,
        stderr="".join(stderr_chunks),
        termination=json.loads(termination.read_text()) if termination.exists() else None,
        duration=time.monotonic() - started,
        config=config,
    )


def base_config(family: str, data_path: Path, workdir: Path, zero_stage: int = 2, **overrides: Any) -> dict[str, Any]:
    """A tiny configuration that trains in a few seconds on two CPU ranks."""
    text = family == "transformer"
    config: dict[str, Any] = {
        "model": {"family": family,
                  "size": {"layers": 2, "hidden": 32 if text else 64, "heads": 2, "contextLength": 48,
                           "latentDim": 8, "baseChannels": 8, "diffusionSteps": 50}},
        "deepspeed": {"zeroStage": zero_stage, "microBatchSize": 8 if text else 16, "gradientAccumulation": 2,
                      "gradientClipping": 1.0},
        "hyperparameters": {"learningRate": 3e-3, "warmupSteps": 2, "maxSteps": 12, "decay": "cosine"},
        "validation": {"everySteps": 4, "maxBatches": 2},
        "data": {"path": str(data_path)},
        "observability": {"metricsPort": 0},
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    return config


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


class ManagedProcess:
    """A server subprocess in its own process group, stopped (then killed) on close."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.log_path = log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        self.log.flush()
        return self.log_path.read_text()[-chars:]

    def close(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def start_mlflow_server(directory: Path) -> tuple[ManagedProcess, str]:
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    command = [PYTHON, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}",
               "--artifacts-destination", str(directory / "artifacts")]
    server = ManagedProcess(command, directory / "mlflow.log")
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if not server.alive():
            raise RuntimeError(f"mlflow server exited:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(healthy, timeout=120, what="the mlflow server")
    return server, uri


def tritonserver_paths() -> tuple[Path, Path, Path]:
    """(tritonserver binary, its shared-library directory, python backend stub) from nvidia-pytriton."""
    root = Path(SITE_PACKAGES) / "pytriton" / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return (root / "bin" / "tritonserver", Path(SITE_PACKAGES) / "nvidia_pytriton.libs",
            root / "python_backend_stubs" / version / "triton_python_backend_stub")


def start_tritonserver(repository: Path, models: list[str], workdir: Path, grpc_port: int | None = None,
                       http_port: int | None = None) -> tuple[ManagedProcess, str]:
    """Start the real tritonserver (CPU, python backend) with ``models`` loaded explicitly.

    Free ports unless given (a test that restarts Triton needs the same ones again).
    """
    binary, libraries, stub = tritonserver_paths()
    # The python backend looks for its stub next to libtriton_python.so; pytriton ships one
    # stub per Python version separately, so assemble a backend directory for ours.
    backends = workdir / "backends"
    python_backend = backends / "python"
    python_backend.mkdir(parents=True, exist_ok=True)
    shipped = binary.parent.parent / "backends" / "python"
    for source in (shipped / "libtriton_python.so", shipped / "triton_python_backend_utils.py", stub):
        shutil.copy2(source, python_backend / source.name)
    grpc_port, http_port = grpc_port or free_port(), http_port or free_port()
    env = {**os.environ,
           "LD_LIBRARY_PATH": f"{libraries}:{os.environ.get('LD_LIBRARY_PATH', '')}",
           # The stub's interpreter ignores PYTHONPATH; the generated model.py reads it to find torch.
           "PYTHONPATH": SITE_PACKAGES}
    command = [str(binary), f"--model-repository={repository}", f"--backend-directory={backends}",
               "--model-control-mode=explicit", *[f"--load-model={m}" for m in models],
               f"--grpc-port={grpc_port}", f"--http-port={http_port}", "--allow-metrics=false",
               "--exit-on-error=true"]
    server = ManagedProcess(command, workdir / "tritonserver.log", env=env)
    server.grpc_port, server.http_port = grpc_port, http_port
    url = f"127.0.0.1:{grpc_port}"

    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)

    def ready() -> bool:
        if not server.alive():
            raise RuntimeError(f"tritonserver exited:\n{server.log_tail()}")
        try:
            return client.is_server_ready() and all(client.is_model_ready(m) for m in models)
        except Exception:
            return False

    wait_for(ready, timeout=120, what="tritonserver readiness")
    return server, url
