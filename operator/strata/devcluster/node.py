"""The real node: containerd + runc + CNI, a kubelet, and the add-ons that make pods useful.

Processes, in start order (stop runs in reverse):

    containerd      CRI runtime; root, state and socket under <state>/node/containerd
    kubelet         registers `strata-node`, runs pods; root dir <state>/node/kubelet
    kube-proxy      ClusterIP Services in iptables mode
    coredns         Service DNS on the node IP (the kubernetes plugin)
    metrics-server  metrics.k8s.io from the kubelet, for HPAs on CPU
    provisioner     binds PersistentVolumeClaims to directories under <state>/volumes

The facts this is built on (cgroup v1 settings, the containerd setting without which every
sandbox fails, the node-IP rule) are in shared/design/real-node-facts.md. Everything it
changes on the host is undone by `host.restore`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from .network import CLUSTER_CIDR, CLUSTER_DOMAIN, NODE_BRIDGE, NODE_IP, NODE_POD_CIDR, REAL_NODE_NAME
from .pki import APISERVER_KUBELET_CLIENT, KUBE_PROXY, KUBELET, Pki
from .host import NODE_CGROUP_PARENT

CNI_BIN_DIR = Path("/usr/lib/cni")
# containerd's sockets live here, not in the state directory: a unix socket path has at most
# 104 usable bytes, which a deep state directory (a test's tmp_path) exceeds.
SOCKET_ROOT = Path("/run/strata-dev")
CONTAINERD_NAMESPACE = "k8s.io"
NODE_LABEL = "strata.dev/node"
# kwok's fake nodes carry this taint while the real node runs, so pods that don't ask for
# fake capacity land on the node that really runs them.
FAKE_NODE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
DEFAULT_STORAGE_CLASS = "standard"
PROVISIONER_NAME = "strata.dev/local-path"

# Start order of the node's processes; stop runs in reverse.
NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy", "coredns", "metrics-server",
                   "provisioner")


@dataclass(frozen=True)
class NodePorts:
    kubelet: int
    kubelet_healthz: int
    kube_proxy_healthz: int
    kube_proxy_metrics: int
    metrics_server: int


@dataclass(frozen=True)
class NodeLayout:
    """Paths of the node's files under the cluster's state directory."""

    state_dir: Path

    @property
    def root(self) -> Path:
        return self.state_dir / "node"

    @property
    def containerd_dir(self) -> Path:
        return self.root / "containerd"

    @property
    def socket_dir(self) -> Path:
        """A short directory for this cluster's sockets, named by its state directory."""
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:12]
        return SOCKET_ROOT / digest

    @property
    def containerd_socket(self) -> Path:
        return self.socket_dir / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    @property
    def corefile(self) -> Path:
        return self.root / "Corefile"

    @property
    def volumes_dir(self) -> Path:
        return self.state_dir / "volumes"

    def kubeconfig(self, name: str) -> Path:
        return self.state_dir / "kubeconfigs" / f"{name}.kubeconfig"


def containerd_config(layout: NodeLayout, sandbox_image: str) -> str:
    """containerd 1.6's config (version 2), everything under the node's directory."""
    base = layout.containerd_dir
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{base / 'root'}"
state = "{base / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{layout.containerd_socket}"

[ttrpc]
  address = "{layout.socket_dir / 'containerd.sock.ttrpc'}"

[{cri}]
  sandbox_image = "{sandbox_image}"
  # Without CAP_SYS_RESOURCE runc cannot lower oom_score_adj; every sandbox fails otherwise.
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{base / 'runc'}"
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{layout.cni_conf_dir}"
  [{cri}.registry]
    # No registry is reachable: every image is imported, so never try to pull.
    config_path = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / 'opt'}"
"""


def cni_config(layout: NodeLayout) -> dict:
    """A bridge network with host-local IPAM whose state stays in the node's directory."""
    return {
        "cniVersion": "1.0.0",
        "name": "strata-dev",
        "plugins": [
            {
                "type": "bridge",
                "bridge": NODE_BRIDGE,
                "isGateway": True,
                # Pods reach the outside through the host; Services are kube-proxy's job.
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": NODE_POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.root / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(layout: NodeLayout, pki: Pki, ports: NodePorts) -> dict:
    socket = f"unix://{layout.containerd_socket}"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.kubelet_healthz,
        "tlsCertFile": str(pki.kubelet_serving_cert),
        "tlsPrivateKeyFile": str(pki.kubelet_serving_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": socket,
        "imageServiceEndpoint": socket,
        # The machine has cgroup v1 only (see real-node-facts.md).
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{NODE_CGROUP_PARENT}",
        "failSwapOn": False,
        # A negative score needs CAP_SYS_RESOURCE, which this machine withholds.
        "oomScoreAdj": 0,
        "clusterDNS": [NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "podLogsDir": str(layout.root / "pod-logs"),
        # kube-proxy owns the NAT rules; kubelet needs none of its own here.
        "makeIPTablesUtilChains": False,
        # Imported images cannot be pulled again: never garbage-collect them, and never
        # evict pods for a disk that is fuller than a laptop's.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False,
        "registerNode": True,
        "nodeStatusReportFrequency": "10s",
        "volumeStatsAggPeriod": "10s",
        "maxPods": 110,
    }


def kubelet_arguments(layout: NodeLayout) -> list[str]:
    return [
        f"--config={layout.kubelet_config}",
        f"--kubeconfig={layout.kubeconfig(KUBELET.file_stem)}",
        f"--root-dir={layout.kubelet_dir}",
        f"--hostname-override={REAL_NODE_NAME}",
        # Not a loopback address: the apiserver reaches the kubelet at the node IP.
        f"--node-ip={NODE_IP}",
        f"--node-labels={NODE_LABEL}=real",
        "--v=1",
    ]


def kube_proxy_config(layout: NodeLayout, ports: NodePorts) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.kubeconfig(KUBE_PROXY.file_stem))},
        "mode": "iptables",
        "hostnameOverride": REAL_NODE_NAME,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{ports.kube_proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{ports.kube_proxy_metrics}",
        "clusterCIDR": CLUSTER_CIDR,
        "nodePortAddresses": [f"{NODE_IP}/32"],
        # Masquerade all Service traffic: replies from a backend on the same bridge then
        # return through the host to be un-NATed, whatever br_netfilter says.
        "iptables": {"masqueradeAll": True, "localhostNodePorts": False,
                     "syncPeriod": "30s", "minSyncPeriod": "0s"},
        # Zero leaves the host's conntrack sysctls as they are.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
    }


def corefile(admin_kubeconfig: Path) -> str:
    """Service and pod DNS for the cluster domain; everything else goes to the host's resolver."""
    return f""".:53 {{
    bind {NODE_IP}
    errors
    cache 5
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {admin_kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    forward . /etc/resolv.conf
}}
"""


def metrics_server_arguments(layout: NodeLayout, pki: Pki, ports: NodePorts,
                             admin_kubeconfig: Path) -> list[str]:
    kubeconfig = str(admin_kubeconfig)
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.metrics_server}",
        f"--tls-cert-file={pki.metrics_server_cert}",
        f"--tls-private-key-file={pki.metrics_server_key}",
        f"--cert-dir={layout.root / 'metrics-server'}",
        # Only the real node has a kubelet to scrape; kwok's nodes have none.
        f"--node-selector={NODE_LABEL}=real",
        "--kubelet-preferred-address-types=InternalIP",
        "--kubelet-use-node-status-port",
        f"--kubelet-certificate-authority={pki.ca_cert}",
        f"--kubelet-client-certificate={pki.client_cert(APISERVER_KUBELET_CLIENT)}",
        f"--kubelet-client-key={pki.client_key(APISERVER_KUBELET_CLIENT)}",
        # It panics when the resolution equals the request timeout.
        "--metric-resolution=10s",
        "--kubelet-request-timeout=5s",
    ]


def provisioner_command(layout: NodeLayout, admin_kubeconfig: Path) -> tuple[Path, list[str]]:
    return Path(sys.executable), [
        "-m", "strata.devcluster.provisioner",
        f"--kubeconfig={admin_kubeconfig}",
        f"--root={layout.volumes_dir}",
        f"--node={REAL_NODE_NAME}",
    ]


def metrics_server_objects(ca_bundle: str, port: int) -> list[dict]:
    """Registers the host process as the metrics.k8s.io API (as in ecosystem-parts-facts)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "metrics-server", "namespace": "kube-system"},
            "spec": {"type": "ExternalName", "externalName": "localhost",
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]},
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {
                "service": {"name": "metrics-server", "namespace": "kube-system", "port": port},
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "caBundle": ca_bundle,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


def storage_class() -> dict:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": DEFAULT_STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER_NAME,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def write_node_files(layout: NodeLayout, pki: Pki, ports: NodePorts, sandbox_image: str,
                     admin_kubeconfig: Path) -> None:
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.socket_dir.mkdir(parents=True, exist_ok=True)
    layout.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    layout.volumes_dir.mkdir(parents=True, exist_ok=True)
    layout.containerd_config.write_text(containerd_config(layout, sandbox_image))
    (layout.cni_conf_dir / "10-strata-dev.conflist").write_text(
        json.dumps(cni_config(layout), indent=2) + "\n")
    layout.kubelet_config.write_text(yaml.safe_dump(kubelet_config(layout, pki, ports)))
    layout.kube_proxy_config.write_text(yaml.safe_dump(kube_proxy_config(layout, ports)))
    layout.corefile.write_text(corefile(admin_kubeconfig))
