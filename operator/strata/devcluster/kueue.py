"""Kueue's controller against the dev cluster (`strata dev up --kueue`).

Kueue, built from its Go module (binaries.KUEUE), runs as a host process with the admin
kubeconfig, as /work/shared/design/ecosystem-parts-facts.md describes:

- its CRDs from the module's `config/components/crd/bases`, server-side applied;
- a config with internal cert management off, its webhook on 127.0.0.1 serving a cert signed
  by the cluster CA, only the batch/job integration and no leader election, and
  `--feature-gates=VisibilityOnDemand=false` (that API would need an APIService);
- only the webhooks it needs (the batch Job's and Kueue's own kinds), registered by URL with
  the CA bundle: its others are `failurePolicy: Fail` and would block unrelated kinds, such
  as Pods and Deployments, whenever Kueue is down.

A Job is Kueue's when it carries the QUEUE_LABEL and resource requests; created with
`suspend: true`, Kueue unsuspends it once its whole pod group fits the ClusterQueue's quota.

With internal cert management off, Kueue reads its metrics cert from a hard-coded host path,
METRICS_CERT_DIR. That is the one thing it changes on the host: what the path held is recorded
before (kept across failed starts, like host.py's record) and restored when the cluster stops,
also by `strata dev down` after a crash. The path is per host, so one Kueue runs per host.

    <state>/kueue/config.yaml      Kueue's Configuration
    <state>/kueue/webhook-certs/   tls.crt, tls.key (the PKI's kueue-webhook cert)
    <state>/kueue/host.json        what METRICS_CERT_DIR held before, to restore on stop
    <state>/kueue/etc-backup/      the files it held
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from strata.constants import KUEUE_QUEUE_LABEL

from .binaries import KUEUE, BuildError, build_component
from .host import JsonRecord
from .kubectl import kubectl_path
from .pki import Pki, ensure_serving_cert
from .processes import processes_named

NAME = "kueue"
MODULE = "sigs.k8s.io/kueue"
NAMESPACE = "kueue-system"
API_VERSION = "kueue.x-k8s.io/v1beta2"
QUEUE_LABEL = KUEUE_QUEUE_LABEL  # the one TrainingJobs carry (render/training_job.py)
FEATURE_GATES = "VisibilityOnDemand=false"
HOST = "127.0.0.1"
# Hard-coded in Kueue's main when internal cert management is off.
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")
CERT_FILES = ("tls.crt", "tls.key")
# The names Kueue's own install gives them.
MUTATING_WEBHOOKS = "kueue-mutating-webhook-configuration"
VALIDATING_WEBHOOKS = "kueue-validating-webhook-configuration"
_CONFIGURATION_NAMES = {
    "MutatingWebhookConfiguration": MUTATING_WEBHOOKS,
    "ValidatingWebhookConfiguration": VALIDATING_WEBHOOKS,
}
DEFAULT_FLAVOR = "default-flavor"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class KueuePorts:
    webhook: int
    health: int
    metrics: int
    visibility: int


@dataclass(frozen=True)
class KueueLayout:
    state_dir: Path

    @property
    def dir(self) -> Path:
        return self.state_dir / "kueue"

    @property
    def config(self) -> Path:
        return self.dir / "config.yaml"

    @property
    def webhook_cert_dir(self) -> Path:
        return self.dir / "webhook-certs"

    @property
    def host_record(self) -> Path:
        return self.dir / "host.json"

    @property
    def backup_dir(self) -> Path:
        return self.dir / "etc-backup"


# -- the binary and the module's manifests ---------------------------------------------------


def ensure_binary() -> Path:
    """Kueue's controller, built on first use (minutes) and cached afterwards."""
    build_component(KUEUE, [NAME])  # a no-op once cached
    return KUEUE.cache_dir() / NAME


def module_source() -> Path:
    """Kueue's module source as go.mod pins it (CRDs, webhook manifests), from Go's module
    cache; downloaded through the module proxy if the cache was cleaned since the build."""
    go = shutil.which("go")
    if go is None:
        raise BuildError(f"Go is needed to read {MODULE}'s manifests from its module")
    result = subprocess.run([go, "mod", "download", "-json", MODULE], cwd=KUEUE.module_dir,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"`go mod download {MODULE}` failed in {KUEUE.module_dir}: "
                         f"{result.stderr.strip() or result.stdout.strip()}")
    return Path(json.loads(result.stdout)["Dir"])


def crd_files(source: Path) -> list[Path]:
    return sorted((source / "config" / "components" / "crd" / "bases").glob("*.yaml"))


def crd_names(files: list[Path]) -> list[str]:
    return [yaml.safe_load(path.read_text())["metadata"]["name"] for path in files]


def webhook_manifests(source: Path) -> str:
    return (source / "config" / "components" / "webhook" / "manifests.yaml").read_text()


# -- configuration (pure) ----------------------------------------------------------------------


def configuration(layout: KueueLayout, ports: KueuePorts) -> dict[str, Any]:
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"{HOST}:{ports.health}"},
        "metrics": {"bindAddress": f"{HOST}:{ports.metrics}"},
        "webhook": {"host": HOST, "port": ports.webhook, "certDir": str(layout.webhook_cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "integrations": {"frameworks": ["batch/job"]},
    }


def arguments(layout: KueueLayout, ports: KueuePorts, kubeconfig: Path) -> list[str]:
    return [
        f"--config={layout.config}",
        f"--kubeconfig={kubeconfig}",
        f"--feature-gates={FEATURE_GATES}",
        f"--visibility-server-port={ports.visibility}",
    ]


def _needed(webhook: dict[str, Any]) -> bool:
    """Kueue's own kinds and the batch Job: the only integration this config enables."""
    for rule in webhook.get("rules", []):
        groups = rule.get("apiGroups", [])
        if "kueue.x-k8s.io" in groups or ("batch" in groups and "jobs" in rule.get("resources", [])):
            return True
    return False


def webhook_configurations(manifests: str, port: int, ca_bundle: bytes) -> list[dict[str, Any]]:
    """Kueue's webhook configurations cut down to the needed webhooks, pointed at the host
    process by URL (Kueue's manifests name an in-cluster Service)."""
    configurations = []
    for document in yaml.safe_load_all(manifests):
        if not document or document.get("kind") not in _CONFIGURATION_NAMES:
            continue
        webhooks = []
        for webhook in document.get("webhooks", []):
            if not _needed(webhook):
                continue
            path = webhook["clientConfig"]["service"]["path"]
            webhook = {**webhook, "clientConfig": {
                "url": f"https://{HOST}:{port}{path}",
                "caBundle": base64.b64encode(ca_bundle).decode()}}
            webhooks.append(webhook)
        configurations.append({
            "apiVersion": document["apiVersion"],
            "kind": document["kind"],
            "metadata": {"name": _CONFIGURATION_NAMES[document["kind"]]},
            "webhooks": webhooks,
        })
    return configurations


def write_files(layout: KueueLayout, ports: KueuePorts, pki: Pki) -> tuple[Path, Path]:
    """Config and webhook certs under <state>/kueue; returns the serving cert and key."""
    cert, key = ensure_serving_cert(pki, "kueue-webhook")
    layout.webhook_cert_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cert, layout.webhook_cert_dir / "tls.crt")
    shutil.copyfile(key, layout.webhook_cert_dir / "tls.key")
    (layout.webhook_cert_dir / "tls.key").chmod(0o600)
    layout.config.write_text(yaml.safe_dump(configuration(layout, ports), sort_keys=False))
    return cert, key


# -- the host path Kueue insists on ----------------------------------------------------------------


@dataclass
class CertDirRecord(JsonRecord):
    """What METRICS_CERT_DIR looked like before Kueue's certs were put there."""

    target: str
    created_dirs: list[str] = field(default_factory=list)  # outermost first
    backed_up: list[str] = field(default_factory=list)  # file names copied to backup_dir


def claim_metrics_cert_dir(layout: KueueLayout, cert: Path, key: Path,
                           target: Path = METRICS_CERT_DIR) -> None:
    """Record what `target` holds (unless a record from a failed start is kept), then put
    the serving cert and key there."""
    layout.dir.mkdir(parents=True, exist_ok=True)
    if CertDirRecord.load(layout.host_record) is None:
        record = CertDirRecord(
            target=str(target),
            created_dirs=[str(d) for d in reversed([target, *target.parents]) if not d.exists()],
        )
        layout.backup_dir.mkdir(exist_ok=True)
        for name in CERT_FILES:
            if (target / name).is_file():
                shutil.copy2(target / name, layout.backup_dir / name)
                record.backed_up.append(name)
        record.save(layout.host_record)
    target.mkdir(parents=True, exist_ok=True)
    for source, name in ((cert, "tls.crt"), (key, "tls.key")):
        shutil.copyfile(source, target / name)
    (target / "tls.key").chmod(0o600)


def release_metrics_cert_dir(state_dir: Path) -> None:
    """Put back what the record says the path held; safe to run more than once."""
    layout = KueueLayout(state_dir)
    record = CertDirRecord.load(layout.host_record)
    if record is None:
        return
    target = Path(record.target)
    for name in CERT_FILES:
        if name in record.backed_up:
            shutil.copy2(layout.backup_dir / name, target / name)
        else:
            (target / name).unlink(missing_ok=True)
    for directory in reversed(record.created_dirs):  # innermost first; only if left empty
        with contextlib.suppress(OSError):
            Path(directory).rmdir()
    shutil.rmtree(layout.backup_dir, ignore_errors=True)
    layout.host_record.unlink()


def host_snapshot(target: Path = METRICS_CERT_DIR) -> dict[str, object]:
    """What a test compares before start and after stop: which of the path's directories
    exist, and the cert files' contents (hashed)."""
    return {
        "dirs": {str(d): d.is_dir() for d in [target, *target.parents] if d != d.parent},
        "files": {name: hashlib.sha256((target / name).read_bytes()).hexdigest()
                  if (target / name).is_file() else None for name in CERT_FILES},
    }


def other_kueue(state_dir: Path) -> tuple[int, list[str]] | None:
    """A Kueue of another cluster on this host (it would share METRICS_CERT_DIR)."""
    for pid, argv in processes_named(NAME).items():
        if not any(str(state_dir) in arg for arg in argv[1:]):
            return pid, argv
    return None


# -- running ---------------------------------------------------------------------------------------


def is_ready(ports: KueuePorts) -> bool:
    """Kueue's /readyz: its webhook server listens (certs loaded)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{ports.health}/readyz", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def unregister_webhooks(kubeconfig: Path) -> None:
    """Delete the webhook configurations (they would fail every Job while Kueue is down);
    best effort: the apiserver may be gone already."""
    with contextlib.suppress(OSError, FileNotFoundError, subprocess.TimeoutExpired):
        subprocess.run(
            [str(kubectl_path()), "--kubeconfig", str(kubeconfig), "--request-timeout=5s",
             "delete", f"mutatingwebhookconfiguration/{MUTATING_WEBHOOKS}",
             f"validatingwebhookconfiguration/{VALIDATING_WEBHOOKS}", "--ignore-not-found"],
            capture_output=True, timeout=30)


def stop_cleanup(state_dir: Path) -> None:
    """After Kueue's process is gone: its webhooks unregistered and the host path restored."""
    layout = KueueLayout(state_dir)
    if not layout.dir.is_dir():
        return
    kubeconfig = state_dir / "kubeconfig"
    if kubeconfig.is_file():
        unregister_webhooks(kubeconfig)
    release_metrics_cert_dir(state_dir)


# -- queues ----------------------------------------------------------------------------------------


def queue_objects(*, cluster_queue: str, local_queue: str, namespace: str, gpus: int,
                  cpu: str = "64", memory: str = "512Gi",
                  flavor: str = DEFAULT_FLAVOR) -> list[dict[str, Any]]:
    """A ResourceFlavor, a ClusterQueue with quota for cpu, memory and GPUs, and the
    LocalQueue in `namespace` that Jobs name with QUEUE_LABEL."""
    return [
        {"apiVersion": API_VERSION, "kind": "ResourceFlavor", "metadata": {"name": flavor}},
        {
            "apiVersion": API_VERSION,
            "kind": "ClusterQueue",
            "metadata": {"name": cluster_queue},
            "spec": {
                "namespaceSelector": {},  # any namespace's LocalQueue may point here
                # An inadmissible head does not block smaller workloads behind it.
                "queueingStrategy": "BestEffortFIFO",
                "resourceGroups": [{
                    "coveredResources": ["cpu", "memory", GPU_RESOURCE],
                    "flavors": [{"name": flavor, "resources": [
                        {"name": "cpu", "nominalQuota": str(cpu)},
                        {"name": "memory", "nominalQuota": str(memory)},
                        {"name": GPU_RESOURCE, "nominalQuota": str(gpus)},
                    ]}],
                }],
            },
        },
        {
            "apiVersion": API_VERSION,
            "kind": "LocalQueue",
            "metadata": {"name": local_queue, "namespace": namespace},
            "spec": {"clusterQueue": cluster_queue},
        },
    ]


def is_active(obj: dict[str, Any] | None) -> bool:
    return bool(obj) and any(
        c.get("type") == "Active" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions", []))


def workload_for_job(cluster, namespace: str, job: str) -> dict[str, Any] | None:
    """The Workload Kueue made for batch Job `job`, once there is one."""
    listed = json.loads(cluster.kubectl("get", "workloads.kueue.x-k8s.io", "-n", namespace,
                                        "-o", "json").stdout)
    for item in listed["items"]:
        for owner in item["metadata"].get("ownerReferences", []):
            if owner.get("kind") == "Job" and owner.get("name") == job:
                return item
    return None


def create_queues(cluster, *, namespace: str, gpus: int, cluster_queue: str = "strata",
                  local_queue: str = "strata", cpu: str = "64", memory: str = "512Gi",
                  flavor: str = DEFAULT_FLAVOR, timeout: float = 60.0) -> dict[str, Any]:
    """Apply `queue_objects` to a running DevCluster with Kueue and wait until Kueue reports
    the ClusterQueue and LocalQueue Active; returns the ClusterQueue."""
    objects = queue_objects(cluster_queue=cluster_queue, local_queue=local_queue,
                            namespace=namespace, gpus=gpus, cpu=cpu, memory=memory, flavor=flavor)
    cluster.kubectl("apply", "--server-side", "--field-manager=strata-dev", "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    deadline = time.monotonic() + timeout
    while True:
        queues = {
            "clusterqueue": _get(cluster, "clusterqueues.kueue.x-k8s.io", cluster_queue),
            "localqueue": _get(cluster, "localqueues.kueue.x-k8s.io", local_queue, "-n", namespace),
        }
        if all(map(is_active, queues.values())):
            return queues["clusterqueue"]
        if time.monotonic() > deadline:
            raise TimeoutError(f"Kueue did not report the queues Active within {timeout:.0f}s: "
                               f"{json.dumps({k: (v or {}).get('status') for k, v in queues.items()})}")
        time.sleep(0.5)


def _get(cluster, *args: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None
