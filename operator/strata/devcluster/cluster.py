"""A real, local Kubernetes control plane with kwok-simulated nodes.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as plain processes
on 127.0.0.1 with ports picked at start; kwok plays the kubelet for fake CPU and GPU
nodes. Everything lives in one state directory:

    <state>/kubeconfig          admin kubeconfig (system:masters)
    <state>/pki/                CA, serving and client certs, service-account key
    <state>/etcd/               etcd data (kept across restarts)
    <state>/kubeconfigs/        kubeconfigs of the controller-manager and scheduler
    <state>/kwok.yaml           kwok's Stage config
    <state>/logs/<name>.log     each process's output (the previous start's in .log.1)
    <state>/run/<name>.pid      pid files
    <state>/cluster.json        ports and pids of the running cluster

Use it attached (`with DevCluster(path) as cluster:`; processes die with the thread that
started them, so a crashed test run leaves nothing behind) or detached (`up(path)`,
`down(path)`, `status(path)`: what the `strata dev` CLI uses).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import binaries as binaries_module
from .api import ApiClient, ApiError
from .kubeconfig import write_kubeconfig
from .kubectl import kubectl_path
from .kwok_stages import DEFAULT_STAGES_YAML
from .pki import (
    ADMIN,
    CONTROLLER_MANAGER,
    FRONT_PROXY_CLIENT,
    SCHEDULER,
    SERVICE_CLUSTER_IP_RANGE,
    Pki,
    ensure_pki,
)
from .processes import ManagedProcess, find_running, terminate

LOOPBACK = "127.0.0.1"
DEFAULT_STATE_DIR = Path(".strata/dev")
# Pod IPs kwok hands out; must not overlap the service range.
POD_CIDR = "10.244.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_NODE_SELECTOR = "type=kwok"
# kwok renews node leases at this duration, as kwokctl does, so the node lifecycle
# controller keeps the fake nodes Ready.
NODE_LEASE_SECONDS = 40
GPU_RESOURCE = "nvidia.com/gpu"

_START_ATTEMPTS = 3

# Start order; stop runs in reverse.
COMPONENT_ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class DevClusterError(RuntimeError):
    """The dev cluster could not be started (message includes the relevant log tail)."""


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl run; unlike its base class, its message includes kubectl's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{(self.stderr or '').strip()}"


@dataclass(frozen=True)
class FakeNode:
    name: str
    gpus: int = 0
    cpu: str = "32"
    memory: str = "256Gi"
    pods: str = "250"

    def manifest(self) -> dict:
        labels = {
            "type": "kwok",
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }
        resources = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods,
                     "ephemeral-storage": "1Ti"}
        if self.gpus:
            labels["nvidia.com/gpu.present"] = "true"
            labels["nvidia.com/gpu.count"] = str(self.gpus)
            resources[GPU_RESOURCE] = str(self.gpus)
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                # Marks the node as fake; no taint, so ordinary pods schedule onto it.
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            # Nodes may set their status on create; kwok then fills in conditions etc.
            "status": {"capacity": resources, "allocatable": dict(resources)},
        }


def default_nodes(cpu_nodes: int = 2, gpu_nodes: int = 2, gpus_per_node: int = 8) -> list[FakeNode]:
    return [FakeNode(f"kwok-cpu-{i}") for i in range(cpu_nodes)] + [
        FakeNode(f"kwok-gpu-{i}", gpus=gpus_per_node) for i in range(gpu_nodes)
    ]


def free_port() -> int:
    """One loopback port the kernel considers free right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Ports the kernel considers free right now (held open together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(*free_ports(5))


class DevCluster:
    """The local control plane; a context manager that starts and stops it."""

    def __init__(
        self,
        state_dir: str | os.PathLike = DEFAULT_STATE_DIR,
        *,
        nodes: list[FakeNode] | None = None,
        detached: bool = False,
        startup_timeout: float = 120.0,
        stop_grace_seconds: float = 10.0,
    ):
        self.state_dir = Path(state_dir).resolve()
        self.nodes = default_nodes() if nodes is None else nodes
        self.detached = detached
        self.startup_timeout = startup_timeout
        self.stop_grace_seconds = stop_grace_seconds
        self.ports: Ports | None = None
        self.processes: dict[str, ManagedProcess] = {}
        self._pki: Pki | None = None

    # -- paths ---------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def server(self) -> str:
        if self.ports is None:
            raise DevClusterError("the cluster is not started")
        return f"https://{LOOPBACK}:{self.ports.apiserver}"

    def _log_path(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def _pid_path(self, name: str) -> Path:
        return self.state_dir / "run" / f"{name}.pid"

    # -- client helpers ---------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """os.environ plus KUBECONFIG pointing at this cluster's admin kubeconfig."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        """Run kubectl as cluster admin; raises KubectlError (a CalledProcessError) if check."""
        command = [str(kubectl_path()), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(command, input=input, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, command, result.stdout, result.stderr)
        return result

    def admin_api(self) -> ApiClient:
        pki = self._require_pki()
        return ApiClient(LOOPBACK, self.ports.apiserver, ca_cert=pki.ca_cert,
                         client_cert=pki.client_cert(ADMIN), client_key=pki.client_key(ADMIN))

    # -- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> DevCluster:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> DevCluster:
        """Start every component and wait until nodes are Ready; cleans up on failure."""
        binaries = binaries_module.ensure_binaries()
        self._refuse_if_running()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._pki = ensure_pki(self.state_dir / "pki")
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_once(binaries)
                return self
            except DevClusterError as error:
                # Free ports are picked before the processes bind them, so another
                # process can take one in between; that alone is worth a retry.
                if "address already in use" not in str(error) or attempt == _START_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, binaries: dict[str, Path]) -> None:
        self.ports = Ports.pick()
        self._write_configs()
        try:
            self._start_control_plane(binaries)
            self._register_nodes()
            self._wait_for_nodes_ready()
            self._wait_for_default_service_account()
        except BaseException:
            self.stop()
            raise
        self._write_cluster_record()

    def stop(self) -> None:
        """Stop all processes (SIGTERM, SIGKILL after a grace period) and reap them."""
        for name in reversed(COMPONENT_ORDER):
            process = self.processes.get(name)
            if process is not None:
                terminate([process], self.stop_grace_seconds)
        self.processes.clear()
        (self.state_dir / "cluster.json").unlink(missing_ok=True)

    # -- start steps ------------------------------------------------------------------

    def _require_pki(self) -> Pki:
        if self._pki is None:
            raise DevClusterError("the cluster is not started")
        return self._pki

    def _refuse_if_running(self) -> None:
        running = running_components(self.state_dir)
        if running:
            names = ", ".join(f"{name} (pid {pid})" for name, pid in running.items())
            raise DevClusterError(
                f"a dev cluster is already running from {self.state_dir}: {names}; stop it first"
            )

    def _write_configs(self) -> None:
        pki = self._require_pki()
        write_kubeconfig(self.kubeconfig, self.server, pki.ca_cert, pki.client_cert(ADMIN),
                         pki.client_key(ADMIN), ADMIN.user)
        for identity in (CONTROLLER_MANAGER, SCHEDULER):
            write_kubeconfig(self._component_kubeconfig(identity.file_stem), self.server,
                             pki.ca_cert, pki.client_cert(identity), pki.client_key(identity),
                             identity.user)
        (self.state_dir / "kwok.yaml").write_text(DEFAULT_STAGES_YAML)

    def _component_kubeconfig(self, name: str) -> Path:
        return self.state_dir / "kubeconfigs" / f"{name}.kubeconfig"

    def _start_control_plane(self, binaries: dict[str, Path]) -> None:
        arguments = self._arguments()
        self._launch("etcd", binaries, arguments)
        self._wait_until("etcd to be healthy", self._etcd_is_healthy, ["etcd"])
        self._launch("kube-apiserver", binaries, arguments)
        self._wait_until("kube-apiserver /readyz and /livez", self._apiserver_is_ready,
                         ["kube-apiserver", "etcd"], explain=self._apiserver_readyz_report)
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            self._launch(name, binaries, arguments)
        self._wait_until("kube-controller-manager /healthz",
                         lambda: self._component_is_healthy(self.ports.controller_manager),
                         ["kube-controller-manager"])
        self._wait_until("kube-scheduler /healthz",
                         lambda: self._component_is_healthy(self.ports.scheduler),
                         ["kube-scheduler"])

    def _launch(self, name: str, binaries: dict[str, Path], arguments: dict[str, list[str]]) -> None:
        process = ManagedProcess(name, binaries[name], arguments[name], self._log_path(name),
                                 self._pid_path(name))
        process.start(cwd=self.state_dir, detached=self.detached)
        self.processes[name] = process

    def _arguments(self) -> dict[str, list[str]]:
        pki = self._require_pki()
        ports = self.ports
        etcd_url = f"http://{LOOPBACK}:{ports.etcd_client}"
        etcd_peer_url = f"http://{LOOPBACK}:{ports.etcd_peer}"
        kcm_kubeconfig = str(self._component_kubeconfig(CONTROLLER_MANAGER.file_stem))
        scheduler_kubeconfig = str(self._component_kubeconfig(SCHEDULER.file_stem))
        return {
            "etcd": [
                "--name=strata-dev",
                f"--data-dir={self.state_dir / 'etcd'}",
                # Plain HTTP on loopback only: nothing but the local apiserver talks to it.
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={etcd_peer_url}",
                f"--initial-advertise-peer-urls={etcd_peer_url}",
                f"--initial-cluster=strata-dev={etcd_peer_url}",
                # Throwaway data: skipping fsync makes the apiserver far snappier.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            "kube-apiserver": [
                f"--etcd-servers={etcd_url}",
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                f"--secure-port={ports.apiserver}",
                f"--tls-cert-file={pki.apiserver_cert}",
                f"--tls-private-key-file={pki.apiserver_key}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.service_account_public_key}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                # Front-proxy (request header) auth, so aggregated API servers work and
                # components that read it from kube-system don't log errors about it.
                f"--requestheader-client-ca-file={pki.front_proxy_ca_cert}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.front_proxy_client_cert}",
                f"--proxy-client-key-file={pki.front_proxy_client_key}",
                "--allow-privileged=true",
                # No kubelet serves the fake nodes, and there's no pod network to expose
                # a loopback endpoint to.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
            "kube-controller-manager": [
                f"--kubeconfig={kcm_kubeconfig}",
                f"--authentication-kubeconfig={kcm_kubeconfig}",
                f"--authorization-kubeconfig={kcm_kubeconfig}",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={ports.controller_manager}",
                "--leader-elect=false",
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--profiling=false",
            ],
            "kube-scheduler": [
                f"--kubeconfig={scheduler_kubeconfig}",
                f"--authentication-kubeconfig={scheduler_kubeconfig}",
                f"--authorization-kubeconfig={scheduler_kubeconfig}",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={ports.scheduler}",
                "--leader-elect=false",
                "--profiling=false",
            ],
            "kwok": [
                f"--kubeconfig={self.kubeconfig}",
                f"--config={self.state_dir / 'kwok.yaml'}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-label-selector={KWOK_NODE_SELECTOR}",
                f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
                f"--cidr={POD_CIDR}",
                f"--node-ip={LOOPBACK}",
            ],
        }

    # -- readiness --------------------------------------------------------------------

    def _wait_until(self, what: str, condition: Callable[[], bool], suspects: list[str],
                    *, explain: Callable[[], str] | None = None) -> None:
        """Poll `condition`; fail fast if any process exits, with its log tail."""
        deadline = time.monotonic() + self.startup_timeout
        while True:
            self._raise_if_any_exited()
            if condition():
                return
            if time.monotonic() > deadline:
                detail = f"\n{explain()}" if explain else ""
                raise DevClusterError(
                    f"timed out after {self.startup_timeout:.0f}s waiting for {what}{detail}"
                    + self._log_tails(suspects)
                )
            time.sleep(0.2)

    def _raise_if_any_exited(self) -> None:
        for name, process in self.processes.items():
            code = process.exit_code()
            if code is not None:
                raise DevClusterError(f"{name} exited with status {code}" + self._log_tails([name]))

    def _log_tails(self, names: list[str]) -> str:
        return "".join(
            f"\n--- tail of {self.processes[name].log_path} ---\n{self.processes[name].log_tail()}"
            for name in names
            if name in self.processes
        )

    def _etcd_is_healthy(self) -> bool:
        url = f"http://{LOOPBACK}:{self.ports.etcd_client}/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.load(response).get("health") == "true"
        except (OSError, ValueError):
            return False

    def _apiserver_is_ready(self) -> bool:
        api = self.admin_api()
        try:
            return all(api.request("GET", path)[0] == 200 for path in ("/livez", "/readyz"))
        except OSError:
            return False

    def _apiserver_readyz_report(self) -> str:
        try:
            return self.admin_api().request("GET", "/readyz?verbose")[1]
        except OSError as error:
            return f"/readyz unreachable: {error}"

    def _component_is_healthy(self, port: int) -> bool:
        # These serve self-signed in-memory certs; /healthz needs no credentials.
        try:
            return ApiClient(LOOPBACK, port).request("GET", "/healthz")[0] == 200
        except OSError:
            return False

    def _register_nodes(self) -> None:
        api = self.admin_api()
        for node in self.nodes:
            api.create("/api/v1/nodes", node.manifest())

    def _nodes_ready(self) -> bool:
        try:
            listed = self.admin_api().get_json(
                f"/api/v1/nodes?labelSelector={KWOK_NODE_SELECTOR}")
        except (OSError, ApiError):
            return False
        ready = {
            item["metadata"]["name"]
            for item in listed["items"]
            if any(c["type"] == "Ready" and c["status"] == "True"
                   for c in item.get("status", {}).get("conditions", []))
        }
        return {node.name for node in self.nodes} <= ready

    def _wait_for_nodes_ready(self) -> None:
        self._wait_until(f"{len(self.nodes)} kwok nodes to be Ready", self._nodes_ready,
                         ["kwok", "kube-controller-manager"])

    def _default_service_account_exists(self) -> bool:
        # Pods are rejected until the controller-manager has created this.
        try:
            self.admin_api().get_json("/api/v1/namespaces/default/serviceaccounts/default")
            return True
        except (OSError, ApiError):
            return False

    def _wait_for_default_service_account(self) -> None:
        self._wait_until("the default ServiceAccount", self._default_service_account_exists,
                         ["kube-controller-manager"])

    def _write_cluster_record(self) -> None:
        record = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "ports": vars(self.ports),
            "pids": {name: process.pid for name, process in self.processes.items()},
            "nodes": [node.name for node in self.nodes],
        }
        (self.state_dir / "cluster.json").write_text(json.dumps(record, indent=2) + "\n")


# -- detached use (the `strata dev` CLI) ------------------------------------------------


def running_components(state_dir: str | os.PathLike) -> dict[str, int]:
    """Components of the cluster in `state_dir` that are running, by name -> pid."""
    state_dir = Path(state_dir).resolve()
    running = {}
    for name in COMPONENT_ORDER:
        pid = find_running(name, name, state_dir / "run" / f"{name}.pid", state_dir)
        if pid is not None:
            running[name] = pid
    return running


def up(state_dir: str | os.PathLike = DEFAULT_STATE_DIR, **options) -> DevCluster:
    """Start a cluster whose processes outlive the caller; stop it with `down`."""
    return DevCluster(state_dir, detached=True, **options).start()


def down(state_dir: str | os.PathLike = DEFAULT_STATE_DIR, grace_seconds: float = 10.0) -> list[str]:
    """Stop the cluster started from `state_dir`; returns the names of what was stopped."""
    state_dir = Path(state_dir).resolve()
    running = running_components(state_dir)
    for name in reversed(COMPONENT_ORDER):
        if name in running:
            process = ManagedProcess(name, Path(name), [], state_dir / "logs" / f"{name}.log",
                                     state_dir / "run" / f"{name}.pid", pid=running[name])
            terminate([process], grace_seconds)
    # Stale pid files of our components only: others (e.g. the demo's operator) share run/.
    for name in COMPONENT_ORDER:
        (state_dir / "run" / f"{name}.pid").unlink(missing_ok=True)
    (state_dir / "cluster.json").unlink(missing_ok=True)
    return list(running)


def status(state_dir: str | os.PathLike = DEFAULT_STATE_DIR) -> dict:
    """What is running from `state_dir`, and where to reach it."""
    state_dir = Path(state_dir).resolve()
    running = running_components(state_dir)
    record_path = state_dir / "cluster.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    return {
        "state_dir": str(state_dir),
        "running": running,
        "stopped": [name for name in COMPONENT_ORDER if name not in running],
        "server": record.get("server") if running else None,
        "kubeconfig": str(state_dir / "kubeconfig"),
    }


def reset(state_dir: str | os.PathLike = DEFAULT_STATE_DIR) -> None:
    """Delete a stopped cluster's state (data, certs, logs)."""
    state_dir = Path(state_dir).resolve()
    if running_components(state_dir):
        raise DevClusterError(f"the dev cluster in {state_dir} is running; stop it first")
    shutil.rmtree(state_dir, ignore_errors=True)
