"""A real, local Kubernetes control plane with kwok-simulated nodes and one real node.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as plain processes
with ports picked at start; kwok plays the kubelet for fake CPU and GPU nodes. With
`real_node=True` (the CLI's default) a real kubelet with containerd runs pods too, with
kube-proxy, CoreDNS, metrics-server and a volume provisioner (see `node`); the apiserver
then listens on the node bridge's address instead of 127.0.0.1, so pods can reach it.
Everything lives in one state directory:

    <state>/kubeconfig          admin kubeconfig (system:masters)
    <state>/pki/                CA, serving and client certs, service-account key
    <state>/etcd/               etcd data (kept across restarts)
    <state>/kubeconfigs/        kubeconfigs of the controller-manager and scheduler
    <state>/kwok.yaml           kwok's Stage config
    <state>/logs/<name>.log     each process's output (the previous start's in .log.1)
    <state>/run/<name>.pid      pid files
    <state>/cluster.json        ports and pids of the running cluster
    <state>/node/               the real node's containerd, kubelet and configs
    <state>/volumes/            PersistentVolumes of the real node
    <state>/host.json           host settings to restore when the real node stops
    <state>/kueue/              Kueue's config and certs, with `kueue=True` (see `kueue`)
    <state>/monitoring/         Prometheus's and prometheus-adapter's configs and data, with
                                `monitoring=True` (see `monitoring`)

Use it attached (`with DevCluster(path) as cluster:`; processes die with the thread that
started them, so a crashed test run leaves nothing behind) or detached (`up(path)`,
`down(path)`, `status(path)`: what the `strata dev` CLI uses).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import binaries as binaries_module
from . import host
from . import kueue as kueue_module
from . import monitoring as monitoring_module
from . import node as node_module
from .api import ApiClient, ApiError
from .kubeconfig import write_kubeconfig
from .kubectl import kubectl_path
from .kwok_stages import DEFAULT_STAGES_YAML
from .network import NODE_IP, REAL_NODE_NAME
from .node import FAKE_NODE_TAINT, NODE_COMPONENTS, NodeLayout, NodePorts
from .pki import (
    ADMIN,
    APISERVER_KUBELET_CLIENT,
    CONTROLLER_MANAGER,
    FRONT_PROXY_CLIENT,
    KUBE_PROXY,
    KUBELET,
    SCHEDULER,
    SERVICE_CLUSTER_IP_RANGE,
    Pki,
    ensure_pki,
)
from .processes import ManagedProcess, find_running, processes_named, processes_using, terminate

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
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Add-ons a cluster runs when asked to (DevCluster(kueue=True), `strata dev up --kueue`;
# DevCluster(monitoring=True), `strata dev up --monitoring`).
ADDONS = (kueue_module.NAME, *monitoring_module.NAMES)
COMPONENT_ORDER = CONTROL_PLANE + NODE_COMPONENTS + ADDONS
# The executable each component runs as, where it is not the component's own name.
_EXECUTABLE = {"provisioner": Path(sys.executable).name}


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

    def manifest(self, *, beside_real_node: bool = False) -> dict:
        labels = {
            "type": "kwok",
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }
        resources = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods,
                     "ephemeral-storage": "1Ti"}
        taints = []
        if self.gpus:
            labels["nvidia.com/gpu.present"] = "true"
            labels["nvidia.com/gpu.count"] = str(self.gpus)
            resources[GPU_RESOURCE] = str(self.gpus)
            # As on managed GPU node pools; the apiserver's ExtendedResourceToleration
            # plugin adds the toleration to every pod that requests the GPU resource.
            taints.append({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"})
        elif beside_real_node:
            # Pods that need no fake capacity run for real; tests of scale tolerate this.
            taints.append(dict(FAKE_NODE_TAINT))
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                # Marks the node as fake; no taint, so ordinary pods schedule onto it.
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {"taints": taints},
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
        real_node: bool = False,
        images: tuple[str, ...] | None = None,
        kueue: bool = False,
        monitoring: bool = False,
        startup_timeout: float = 120.0,
        stop_grace_seconds: float = 10.0,
    ):
        self.state_dir = Path(state_dir).resolve()
        self.nodes = default_nodes() if nodes is None else nodes
        self.detached = detached
        self.real_node = real_node
        # Images to build and import into the real node's containerd (None: all of them).
        self.images = images
        # Kueue's controller (built on first use) admits suspended Jobs by queue quota.
        self.kueue = kueue
        self.kueue_ports: kueue_module.KueuePorts | None = None
        # Prometheus scraping pods' metrics ports and prometheus-adapter serving the custom
        # metrics API (both built on first use), for HPAs on Pods metrics.
        self.monitoring = monitoring
        self.monitoring_ports: monitoring_module.MonitoringPorts | None = None
        # name -> strata.devcluster.oci.LocalImage, built (or found cached) at start
        self.local_images: dict = {}
        self.node_ports: NodePorts | None = None
        self.layout = NodeLayout(self.state_dir)
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
    def image_refs(self) -> dict[str, str]:
        """Each imported image's reference, as pods name it."""
        return {name: image.ref for name, image in self.local_images.items()}

    @property
    def api_host(self) -> str:
        """Where the apiserver listens: the node IP when pods must reach it, else loopback."""
        return NODE_IP if self.real_node else LOOPBACK

    @property
    def server(self) -> str:
        if self.ports is None:
            raise DevClusterError("the cluster is not started")
        return f"https://{self.api_host}:{self.ports.apiserver}"

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
        return ApiClient(self.api_host, self.ports.apiserver, ca_cert=pki.ca_cert,
                         client_cert=pki.client_cert(ADMIN), client_key=pki.client_key(ADMIN))

    # -- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> DevCluster:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> DevCluster:
        """Start every component and wait until nodes are Ready; cleans up on failure."""
        binaries = binaries_module.ensure_binaries()
        if self.kueue:
            binaries[kueue_module.NAME] = kueue_module.ensure_binary()
        if self.monitoring:
            binaries.update(monitoring_module.ensure_binaries())
        self._refuse_if_running()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._pki = ensure_pki(self.state_dir / "pki")
        if self.real_node:
            self._refuse_second_real_node()
            self.local_images = self._ensure_images()
        if self.kueue:
            self._refuse_second_kueue()
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
        if self.real_node:
            self.node_ports = NodePorts(*free_ports(5))
        self._write_configs()
        try:
            if self.real_node:
                host.prepare(self.state_dir)
            self._start_control_plane(binaries)
            self._register_nodes()
            self._wait_for_nodes_ready()
            self._wait_for_default_service_account()
            if self.real_node:
                self._start_real_node(binaries)
            if self.kueue:
                self._start_kueue(binaries)
            elif kueue_module.KueueLayout(self.state_dir).dir.is_dir():
                # Kueue ran from this state dir before: its webhooks must not outlive it.
                kueue_module.unregister_webhooks(self.kubeconfig)
            if self.monitoring:
                self._start_monitoring(binaries)
            else:  # an adapter that ran from this state dir before must not stay registered
                monitoring_module.stop_cleanup(self.state_dir)
        except BaseException:
            self.stop()
            raise
        self._write_cluster_record()

    def stop(self) -> None:
        """Stop all processes (SIGTERM, SIGKILL after a grace period), reap them, and undo
        what the real node changed on the host."""
        _stop_components(self.state_dir, self.processes, self.stop_grace_seconds)
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

    def _refuse_second_real_node(self) -> None:
        # One bridge, node IP and cgroup parent per host: a second real node would share them.
        for pid, argv in processes_named("kubelet").items():
            if f"--hostname-override={REAL_NODE_NAME}" in argv:
                raise DevClusterError(
                    f"a real node already runs on this host (kubelet pid {pid}: {' '.join(argv[:3])}"
                    "...); stop that cluster first (`strata dev down --state-dir ...`), or start "
                    "this one without a real node (--no-real-node)")

    def _refuse_second_kueue(self) -> None:
        # Kueue reads its metrics cert from a fixed host path, which two would share.
        other = kueue_module.other_kueue(self.state_dir)
        if other is not None:
            pid, argv = other
            raise DevClusterError(
                f"Kueue already runs on this host (pid {pid}: {' '.join(argv[:2])}...), and "
                f"both would use {kueue_module.METRICS_CERT_DIR}; stop that cluster first "
                "(`strata dev down --state-dir ...`), or start this one without --kueue")

    def _ensure_images(self) -> dict:
        from . import images  # builds from the installed environment; only the real node needs it
        try:
            built = images.ensure_images(self.images, log=lambda line: print(line, file=sys.stderr))
        except images.ImageBuildError as error:
            raise DevClusterError(f"the real node's images could not be built: {error}") from error
        return built

    def _write_configs(self) -> None:
        pki = self._require_pki()
        write_kubeconfig(self.kubeconfig, self.server, pki.ca_cert, pki.client_cert(ADMIN),
                         pki.client_key(ADMIN), ADMIN.user)
        identities = [CONTROLLER_MANAGER, SCHEDULER]
        if self.real_node:
            identities += [KUBELET, KUBE_PROXY]
            node_module.write_node_files(self.layout, pki, self.node_ports,
                                         self.image_refs["pause"], self.kubeconfig)
        for identity in identities:
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
        binary = _host_executable(name) or binaries[name]
        process = ManagedProcess(name, binary, arguments[name], self._log_path(name),
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
                f"--bind-address={self.api_host}",
                f"--advertise-address={self.api_host}",
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
                "--enable-admission-plugins=ExtendedResourceToleration",
                *self._apiserver_node_arguments(pki),
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
            **self._node_arguments(),
        }

    def _apiserver_node_arguments(self, pki: Pki) -> list[str]:
        if not self.real_node:
            # No kubelet serves the fake nodes, and there's no pod network to expose a
            # loopback endpoint to.
            return ["--endpoint-reconciler-type=none"]
        return [
            # The `kubernetes` Service's endpoint is the node IP, reachable from pods.
            "--endpoint-reconciler-type=lease",
            f"--kubelet-client-certificate={pki.client_cert(APISERVER_KUBELET_CLIENT)}",
            f"--kubelet-client-key={pki.client_key(APISERVER_KUBELET_CLIENT)}",
            f"--kubelet-certificate-authority={pki.ca_cert}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _node_arguments(self) -> dict[str, list[str]]:
        if not self.real_node:
            return {}
        layout, pki, ports = self.layout, self._require_pki(), self.node_ports
        return {
            "containerd": [f"--config={layout.containerd_config}"],
            "kubelet": node_module.kubelet_arguments(layout),
            "kube-proxy": [f"--config={layout.kube_proxy_config}"],
            "coredns": ["-conf", str(layout.corefile)],
            "metrics-server": node_module.metrics_server_arguments(layout, pki, ports,
                                                                   self.kubeconfig),
            "provisioner": node_module.provisioner_command(layout, self.kubeconfig)[1],
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

    def _component_is_healthy(self, port: int, path: str = "/healthz") -> bool:
        # These serve self-signed in-memory certs; /healthz needs no credentials.
        try:
            return ApiClient(LOOPBACK, port).request("GET", path)[0] == 200
        except OSError:
            return False

    def _register_nodes(self) -> None:
        api = self.admin_api()
        for node in self.nodes:
            api.create("/api/v1/nodes", node.manifest(beside_real_node=self.real_node))

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

    # -- the real node ------------------------------------------------------------------

    def _start_real_node(self, binaries: dict[str, Path]) -> None:
        arguments = self._arguments()
        self._launch("containerd", binaries, arguments)
        self._wait_until("containerd to serve its socket", self._containerd_is_up, ["containerd"])
        from . import oci
        try:
            oci.import_images(self.local_images.values(), ctr=_ctr(),
                              address=str(self.layout.containerd_socket),
                              namespace=node_module.CONTAINERD_NAMESPACE)
        except oci.ImageBuildError as error:
            raise DevClusterError(f"importing images into containerd failed: {error}") from error
        self._launch("kubelet", binaries, arguments)
        self._wait_until(f"the real node {REAL_NODE_NAME} to be Ready",
                         lambda: self._node_is_ready(REAL_NODE_NAME), ["kubelet", "containerd"])
        for name in ("kube-proxy", "coredns", "metrics-server", "provisioner"):
            self._launch(name, binaries, arguments)
        api = self.admin_api()
        for manifest in [*node_module.metrics_server_objects(
                base64.b64encode(self._require_pki().ca_cert.read_bytes()).decode(),
                self.node_ports.metrics_server),
                node_module.storage_class()]:
            api.apply(manifest)
        self._wait_until("the metrics.k8s.io API to be available",
                         self._metrics_api_is_available, ["metrics-server"])

    def _containerd_is_up(self) -> bool:
        result = subprocess.run([_ctr(), "--address", str(self.layout.containerd_socket),
                                 "version"], capture_output=True, text=True)
        return result.returncode == 0

    def _node_is_ready(self, name: str) -> bool:
        try:
            item = self.admin_api().get_json(f"/api/v1/nodes/{name}")
        except (OSError, ApiError):
            return False
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in item.get("status", {}).get("conditions", []))

    def _metrics_api_is_available(self) -> bool:
        try:
            item = self.admin_api().get_json(
                "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io")
        except (OSError, ApiError):
            return False
        return any(c["type"] == "Available" and c["status"] == "True"
                   for c in item.get("status", {}).get("conditions", []))

    # -- Kueue --------------------------------------------------------------------------

    def _start_kueue(self, binaries: dict[str, Path]) -> None:
        """CRDs, config and certs, the host process, then its webhooks once it is ready."""
        pki = self._require_pki()
        layout = kueue_module.KueueLayout(self.state_dir)
        self.kueue_ports = kueue_module.KueuePorts(*free_ports(4))
        try:
            source = kueue_module.module_source()
        except binaries_module.BuildError as error:
            raise DevClusterError(str(error)) from error
        crds = kueue_module.crd_files(source)
        self.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=strata-dev",
                     *[f"--filename={path}" for path in crds], timeout=120)
        names = kueue_module.crd_names(crds)
        self._wait_until("Kueue's CRDs to be established",
                         lambda: all(map(self._crd_is_established, names)), ["kube-apiserver"])
        api = self.admin_api()
        api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": kueue_module.NAMESPACE}})
        cert, key = kueue_module.write_files(layout, self.kueue_ports, pki)
        kueue_module.claim_metrics_cert_dir(layout, cert, key)
        arguments = {kueue_module.NAME: kueue_module.arguments(layout, self.kueue_ports,
                                                               self.kubeconfig)}
        self._launch(kueue_module.NAME, binaries, arguments)
        self._wait_until("Kueue /readyz", lambda: kueue_module.is_ready(self.kueue_ports),
                         [kueue_module.NAME])
        for configuration in kueue_module.webhook_configurations(
                kueue_module.webhook_manifests(source), self.kueue_ports.webhook,
                pki.ca_cert.read_bytes()):
            api.apply(configuration)

    # -- monitoring ------------------------------------------------------------------------

    def _start_monitoring(self, binaries: dict[str, Path]) -> None:
        """Prometheus, then the adapter, then its APIServices once both serve."""
        pki = self._require_pki()
        layout = monitoring_module.MonitoringLayout(self.state_dir)
        self.monitoring_ports = monitoring_module.MonitoringPorts(*free_ports(2))
        try:
            monitoring_module.write_files(layout, pki, self.kubeconfig)
        except monitoring_module.MonitoringError as error:
            raise DevClusterError(str(error)) from error
        ports = self.monitoring_ports
        arguments = {
            monitoring_module.PROMETHEUS: monitoring_module.prometheus_arguments(layout, ports),
            monitoring_module.ADAPTER: monitoring_module.adapter_arguments(layout, ports, pki,
                                                                           self.kubeconfig),
        }
        self._launch(monitoring_module.PROMETHEUS, binaries, arguments)
        self._wait_until("Prometheus /-/ready", lambda: monitoring_module.prometheus_is_ready(ports),
                         [monitoring_module.PROMETHEUS])
        self._launch(monitoring_module.ADAPTER, binaries, arguments)
        self._wait_until("prometheus-adapter /readyz",
                         lambda: self._component_is_healthy(ports.adapter, "/readyz"),
                         [monitoring_module.ADAPTER])
        api = self.admin_api()
        for manifest in monitoring_module.apiservice_objects(pki.ca_cert.read_bytes(), ports.adapter):
            api.apply(manifest)
        for name, _ in monitoring_module.apiservice_names():
            self._wait_until(f"the APIService {name} to be available",
                             lambda name=name: self._apiservice_is_available(name),
                             [monitoring_module.ADAPTER, "kube-apiserver"])

    def start_monitoring(self) -> None:
        """Add Prometheus and prometheus-adapter to this running cluster (as if it had been
        started with monitoring=True); `stop_monitoring` or `stop` ends them."""
        if self.ports is None:
            raise DevClusterError("the cluster is not started")
        if self.monitoring_ports is not None:
            return
        binaries = monitoring_module.ensure_binaries()
        self.monitoring = True
        try:
            self._start_monitoring(binaries)
        except BaseException:
            self.stop_monitoring()
            raise
        self._write_cluster_record()

    def stop_monitoring(self) -> None:
        """Stop the monitoring processes and remove their APIServices; the cluster runs on."""
        processes = [self.processes.pop(name) for name in reversed(monitoring_module.NAMES)
                     if name in self.processes]
        terminate(processes, self.stop_grace_seconds)
        monitoring_module.stop_cleanup(self.state_dir)
        self.monitoring = False
        self.monitoring_ports = None
        if self.ports is not None and (self.state_dir / "cluster.json").exists():
            self._write_cluster_record()

    def _apiservice_is_available(self, name: str) -> bool:
        try:
            item = self.admin_api().get_json(f"/apis/apiregistration.k8s.io/v1/apiservices/{name}")
        except (OSError, ApiError):
            return False
        return any(c["type"] == "Available" and c["status"] == "True"
                   for c in item.get("status", {}).get("conditions", []))

    def _crd_is_established(self, name: str) -> bool:
        try:
            item = self.admin_api().get_json(
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        except (OSError, ApiError):
            return False
        return any(c["type"] == "Established" and c["status"] == "True"
                   for c in item.get("status", {}).get("conditions", []))

    def _write_cluster_record(self) -> None:
        record = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "ports": vars(self.ports),
            "pids": {name: process.pid for name, process in self.processes.items()},
            "nodes": [node.name for node in self.nodes]
            + ([REAL_NODE_NAME] if self.real_node else []),
            "real_node": self.real_node,
            "kueue": self.kueue,
            "kueue_ports": vars(self.kueue_ports) if self.kueue_ports else None,
            "monitoring": self.monitoring,
            "monitoring_ports": vars(self.monitoring_ports) if self.monitoring_ports else None,
            "images": self.image_refs,
        }
        (self.state_dir / "cluster.json").write_text(json.dumps(record, indent=2) + "\n")


# -- detached use (the `strata dev` CLI) ------------------------------------------------


def _host_executable(name: str) -> Path | None:
    """Components that are not built here: containerd is the Debian package's, and the
    provisioner runs on this Python."""
    if name == "containerd":
        path = shutil.which("containerd")
        if path is None:
            raise DevClusterError(
                "containerd is not installed; the real node needs it: apt-get install "
                "containerd runc containernetworking-plugins, or start with --no-real-node")
        return Path(path)
    return Path(sys.executable) if name in _EXECUTABLE else None


def _ctr() -> str:
    path = shutil.which("ctr")
    if path is None:
        raise DevClusterError("`ctr` (containerd's client) is not installed; the real node "
                              "needs containerd: apt-get install containerd runc "
                              "containernetworking-plugins, or start with --no-real-node")
    return path


def running_components(state_dir: str | os.PathLike) -> dict[str, int]:
    """Components of the cluster in `state_dir` that are running, by name -> pid."""
    state_dir = Path(state_dir).resolve()
    running = {}
    for name in COMPONENT_ORDER:
        pid = find_running(name, _EXECUTABLE.get(name, name),
                           state_dir / "run" / f"{name}.pid", state_dir)
        if pid is not None:
            running[name] = pid
    return running


def _stop_components(state_dir: Path, processes: dict[str, ManagedProcess],
                     grace_seconds: float) -> None:
    """Stop in reverse start order; between kubelet and containerd, kill the pods'
    containers; after containerd, whatever of the node is left on the host."""
    for name in reversed(COMPONENT_ORDER):
        process = processes.get(name)
        if name == "containerd" and process is not None:
            _kill_containers(NodeLayout(state_dir).containerd_socket)
        if process is not None:
            terminate([process], grace_seconds)
        if name == kueue_module.NAME:  # first: the apiserver must still be up
            kueue_module.stop_cleanup(state_dir)
        if name == monitoring_module.ADAPTER:  # likewise
            monitoring_module.stop_cleanup(state_dir)
        if name == "containerd":
            _kill_shims(state_dir)
    if (state_dir / "host.json").exists():
        host.restore(state_dir)


def _kill_containers(socket: Path) -> None:
    """Every task in the node's containerd, killed and deleted (pods outlive kubelet)."""
    ctr = shutil.which("ctr")
    if ctr is None or not socket.exists():
        return
    base = [ctr, "--address", str(socket), "--namespace", node_module.CONTAINERD_NAMESPACE]
    listing = subprocess.run([*base, "tasks", "ls", "-q"], capture_output=True, text=True)
    for task in listing.stdout.split():
        subprocess.run([*base, "tasks", "kill", "--all", "--signal", "SIGKILL", task],
                       capture_output=True)
    for task in listing.stdout.split():
        subprocess.run([*base, "tasks", "delete", "--force", task], capture_output=True)


def _kill_shims(state_dir: Path) -> None:
    """containerd's shims outlive it; they name the node's socket, not the state directory."""
    socket_dir = NodeLayout(state_dir).socket_dir
    for pid, argv in processes_using(socket_dir).items():
        if argv and Path(argv[0]).name.startswith("containerd-shim"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(socket_dir, ignore_errors=True)
    with contextlib.suppress(OSError):  # the parent too, once no cluster uses it
        socket_dir.parent.rmdir()


def up(state_dir: str | os.PathLike = DEFAULT_STATE_DIR, **options) -> DevCluster:
    """Start a cluster whose processes outlive the caller; stop it with `down`."""
    return DevCluster(state_dir, detached=True, **options).start()


def down(state_dir: str | os.PathLike = DEFAULT_STATE_DIR, grace_seconds: float = 10.0) -> list[str]:
    """Stop the cluster started from `state_dir`; returns the names of what was stopped, in
    the order they were stopped."""
    state_dir = Path(state_dir).resolve()
    running = running_components(state_dir)
    processes = {
        name: ManagedProcess(name, Path(name), [], state_dir / "logs" / f"{name}.log",
                             state_dir / "run" / f"{name}.pid", pid=pid)
        for name, pid in running.items()
    }
    _stop_components(state_dir, processes, grace_seconds)
    # Stale pid files of our components only: others (e.g. the demo's operator) share run/.
    for name in COMPONENT_ORDER:
        (state_dir / "run" / f"{name}.pid").unlink(missing_ok=True)
    (state_dir / "cluster.json").unlink(missing_ok=True)
    return [name for name in reversed(COMPONENT_ORDER) if name in running]  # as stopped


def status(state_dir: str | os.PathLike = DEFAULT_STATE_DIR) -> dict:
    """What is running from `state_dir`, and where to reach it."""
    state_dir = Path(state_dir).resolve()
    running = running_components(state_dir)
    record_path = state_dir / "cluster.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    # A cluster started without the real node lacks its components by design.
    expected = CONTROL_PLANE
    if record.get("real_node", any(name in running for name in NODE_COMPONENTS)):
        expected += NODE_COMPONENTS
    if record.get("kueue", kueue_module.NAME in running):
        expected += (kueue_module.NAME,)
    if record.get("monitoring", any(name in running for name in monitoring_module.NAMES)):
        expected += monitoring_module.NAMES
    return {
        "state_dir": str(state_dir),
        "running": running,
        "stopped": [name for name in expected if name not in running],
        "server": record.get("server") if running else None,
        "kubeconfig": str(state_dir / "kubeconfig"),
    }


def reset(state_dir: str | os.PathLike = DEFAULT_STATE_DIR) -> None:
    """Delete a stopped cluster's state (data, certs, logs)."""
    state_dir = Path(state_dir).resolve()
    if running_components(state_dir):
        raise DevClusterError(f"the dev cluster in {state_dir} is running; stop it first")
    shutil.rmtree(state_dir, ignore_errors=True)
