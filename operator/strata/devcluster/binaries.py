"""Locate, or build once from pinned Go modules, the control-plane binaries.

Each component is pinned by a Go module under ``gomod/<component>/`` (go.mod + go.sum
are committed, so builds go through the Go module proxy and are reproducible). Built
binaries are cached in ``$STRATA_CACHE/bin/<component>-<version>/`` (default
``~/.cache/strata``); a cache hit costs nothing, the first build takes many minutes.

Binaries that are already installed are preferred over building: per binary, first
``$KUBEBUILDER_ASSETS/<name>``, then ``<name>`` on PATH, but only when it reports the
pinned version, so the cluster is the same everywhere whichever source is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

GOMOD_DIR = Path(__file__).resolve().parent / "gomod"
# The Go programs that run in Strata's pods (workloads/), beside the Python workloads.
WORKLOADS_DIR = Path(__file__).resolve().parents[3] / "workloads"

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"
# Prometheus's Go module v0.3XX.Y is Prometheus 3.XX.Y.
PROMETHEUS_VERSION = "v0.316.0"
PROMETHEUS_RELEASE = "3.16.0"
COREDNS_VERSION = "v1.15.0"
METRICS_SERVER_VERSION = "v0.9.0"
ARGOCD_VERSION = "v3.6.1"
KUEUE_VERSION = "v0.17.0"
PROMETHEUS_ADAPTER_VERSION = "v0.12.0"
# SeaweedFS has no tagged Go module versions; this pseudo-version is its 4.53 release.
SEAWEEDFS_VERSION = "v0.0.0-20261109003541-7506e5f91cd6"


def _kubernetes_ldflags(version: str) -> str:
    """The -X flags `make` would set, so binaries report their real version."""
    major, minor = version.lstrip("v").split(".")[:2]
    return " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={version}",
            f"-X k8s.io/component-base/version.gitMajor={major}",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
            f"-X k8s.io/client-go/pkg/version.gitVersion={version}",
            f"-X k8s.io/client-go/pkg/version.gitMajor={major}",
            f"-X k8s.io/client-go/pkg/version.gitMinor={minor}",
        ]
    )


@dataclass(frozen=True)
class GoComponent:
    """A set of binaries built together from one pinned Go module."""

    name: str
    version: str
    # binary name -> Go package to build it from ("." is the module itself)
    packages: dict[str, str]
    ldflags: str = "-s -w"
    # substring of `<binary> <version_args>` output identifying the pinned version
    version_marker: str = ""
    version_args: tuple[str, ...] = ("--version",)
    # GOTOOLCHAIN for modules that need a newer Go than the installed one (the proxy serves it)
    toolchain: str = ""
    # where the module is, when not gomod/<name>
    source_dir: Path | None = None

    @property
    def module_dir(self) -> Path:
        return self.source_dir or GOMOD_DIR / self.name

    def cache_dir(self) -> Path:
        return cache_root() / "bin" / f"{self.name}-{self.version}"


KUBERNETES = GoComponent(
    name="kubernetes",
    version=KUBERNETES_VERSION,
    packages={
        "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
        # The real node: built in the same `go build` so shared packages compile once.
        "kubelet": "k8s.io/kubernetes/cmd/kubelet",
        "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
    },
    ldflags=_kubernetes_ldflags(KUBERNETES_VERSION),
    version_marker=f"Kubernetes {KUBERNETES_VERSION}",
)
ETCD = GoComponent(
    name="etcd",
    version=ETCD_VERSION,
    packages={"etcd": "."},
    version_marker=f"etcd Version: {ETCD_VERSION.lstrip('v')}",
)
KWOK = GoComponent(
    name="kwok",
    version=KWOK_VERSION,
    packages={"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
    version_marker=f"kwok version {KWOK_VERSION}",
)

HELM = GoComponent(
    name="helm",
    version=HELM_VERSION,
    packages={"helm": "helm.sh/helm/v3/cmd/helm"},
    ldflags=f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
    version_marker=HELM_VERSION,
    version_args=("version", "--short"),
)

PROMETHEUS = GoComponent(
    name="prometheus",
    version=PROMETHEUS_VERSION,
    packages={"promtool": "github.com/prometheus/prometheus/cmd/promtool"},
    ldflags=f"-s -w -X github.com/prometheus/common/version.Version={PROMETHEUS_RELEASE}",
    version_marker=f"promtool, version {PROMETHEUS_RELEASE}",
)

# The real node's Service DNS. The module builds a custom main with the plugins it needs.
COREDNS = GoComponent(
    name="coredns",
    version=COREDNS_VERSION,
    packages={"coredns": "."},
    version_marker=f"CoreDNS-{COREDNS_VERSION.lstrip('v')}",
    version_args=("-version",),
)
# Its k8s.io libraries are close to, but not the same as, the kubernetes module's pins
# (sharing that module would move kube-openapi, cel-go and etcd under the control plane).
METRICS_SERVER = GoComponent(
    name="metrics-server",
    version=METRICS_SERVER_VERSION,
    packages={"metrics-server": "sigs.k8s.io/metrics-server/cmd/metrics-server"},
    ldflags=f"-s -w -X k8s.io/client-go/pkg/version.gitVersion={METRICS_SERVER_VERSION}",
    version_marker=METRICS_SERVER_VERSION,
)


def _source_version(module: str | Path) -> str:
    """A version for an in-repo module: its sources' content hash, so an edit rebuilds it."""
    digest = hashlib.sha256()
    for path in sorted((GOMOD_DIR / module).glob("*")):
        if path.suffix in (".go", ".mod", ".sum"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return "src-" + digest.hexdigest()[:12]


# The pod sandbox image's program (devcluster/images.py); built only when images are built,
# so it is not in COMPONENTS.
PAUSE = GoComponent(
    name="pause",
    version=_source_version("pause"),
    packages={"pause": "."},
    version_marker="strata-pause",
    version_args=("-v",),
)

# The monitoring sidecar's gRPC front end (serve/grpc_front_end.py): in the sidecar image,
# and built for the sidecar's tests; not in COMPONENTS.
SIDECAR_GRPC = GoComponent(
    name="sidecar-grpc",
    version=_source_version(WORKLOADS_DIR / "sidecar-grpc"),
    packages={"strata-sidecar-grpc": "."},
    source_dir=WORKLOADS_DIR / "sidecar-grpc",
)


def sidecar_grpc_binary() -> Path:
    """The gRPC front end built from this checkout's sources (cached by their hash)."""
    build_component(SIDECAR_GRPC, ["strata-sidecar-grpc"])
    return SIDECAR_GRPC.cache_dir() / "strata-sidecar-grpc"


# Argo CD's Lua runtime (util/lua, util/settings) for the Argo CD health/action tests; built
# only when those tests run (build_component), so it is not in COMPONENTS.
ARGOCD_LUA = GoComponent(
    name="argocd-lua",
    version=f"{ARGOCD_VERSION}-{_source_version('argocd-lua')}",
    packages={"argocd-lua": "."},
    toolchain="go1.27.3",
)

# Kueue's controller for `strata dev up --kueue` (devcluster/kueue.py); built only when a
# cluster asks for it, so it is not in COMPONENTS. Its own module: Kueue v0.17.0 pins k8s.io
# v0.35.3 and controller-runtime v0.23.3, the kubernetes module v0.36.3, metrics-server
# v0.36.2, so no build could share their packages. Kueue has no --version flag (it logs its
# version on start), so only the cached build is used, never one on PATH.
KUEUE = GoComponent(
    name="kueue",
    version=KUEUE_VERSION,
    packages={"kueue": "sigs.k8s.io/kueue/cmd/kueue"},
    ldflags=f"-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion={KUEUE_VERSION}",
)

# The Prometheus server and prometheus-adapter for `strata dev up --monitoring`
# (devcluster/monitoring.py); built only when a cluster asks for them, so not in COMPONENTS.
# The server comes from promtool's module, cache directory and lock: a cold build makes both
# in one `go build`, so their shared packages compile once.
PROMETHEUS_SERVER = replace(
    PROMETHEUS,
    packages={**PROMETHEUS.packages, "prometheus": "github.com/prometheus/prometheus/cmd/prometheus"},
    version_marker=f"prometheus, version {PROMETHEUS_RELEASE}",
)
# Its own module: it pins k8s.io v0.30 libraries, which no other component's build shares.
PROMETHEUS_ADAPTER = GoComponent(
    name="prometheus-adapter",
    version=PROMETHEUS_ADAPTER_VERSION,
    packages={"prometheus-adapter": "sigs.k8s.io/prometheus-adapter/cmd/adapter"},
)

# SeaweedFS (`weed mini`), the S3-compatible object store the Dataset pipeline's S3 sources are
# tested against (tests/workloads/s3_server.py); built only when those tests run, so it is not
# in COMPONENTS. Apache-2.0 (MinIO, the usual choice, is AGPL-3.0).
SEAWEEDFS = GoComponent(
    name="seaweedfs",
    version=SEAWEEDFS_VERSION,
    packages={"weed": "github.com/seaweedfs/seaweedfs/weed"},
)

# The cluster needs etcd, kubernetes and kwok, and for its real node coredns and
# metrics-server; helm and promtool check and install the chart.
COMPONENTS = (ETCD, KUBERNETES, KWOK, COREDNS, METRICS_SERVER, HELM, PROMETHEUS)
BINARY_NAMES = tuple(name for component in COMPONENTS for name in component.packages)


class BuildError(RuntimeError):
    """A control-plane binary could not be found or built."""


def cache_root() -> Path:
    return Path(os.environ.get("STRATA_CACHE") or Path.home() / ".cache" / "strata")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _reports_version(binary: Path, component: GoComponent) -> bool:
    try:
        result = subprocess.run(
            [str(binary), *component.version_args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return component.version_marker in result.stdout + result.stderr


def _installed_binary(name: str, component: GoComponent) -> Path | None:
    """An already installed `name` of the pinned version, if there is one."""
    candidates = []
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        candidates.append(Path(assets) / name)
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            if _reports_version(candidate, component):
                return candidate
            _log(f"Ignoring {candidate}: not {name} {component.version}")
    return None


def find_binaries() -> dict[str, Path | None]:
    """Each binary's path (installed, else cached), or None when it must be built."""
    found: dict[str, Path | None] = {}
    for component in COMPONENTS:
        for name in component.packages:
            cached = component.cache_dir() / name
            found[name] = _installed_binary(name, component) or (
                cached if cached.is_file() else None
            )
    return found


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Serialises builds of one component across processes (parallel test runs, CLI)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _go_build(component: GoComponent, names: list[str], out_dir: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            f"Go is needed to build {', '.join(names)} {component.version} "
            "(or put the binaries on PATH / in $KUBEBUILDER_ASSETS)"
        )
    packages = [component.packages[name] for name in names]
    # With several packages `-o` must be a directory; with one it names the file.
    output = f"{out_dir}/" if len(packages) > 1 else str(out_dir / names[0])
    command = [go, "build", "-trimpath", "-ldflags", component.ldflags, "-o", output, *packages]
    env = {**os.environ, "CGO_ENABLED": "0"}
    if component.toolchain:
        env["GOTOOLCHAIN"] = component.toolchain
    result = subprocess.run(command, cwd=component.module_dir, env=env)
    if result.returncode != 0:
        raise BuildError(
            f"`{' '.join(command)}` failed in {component.module_dir} (exit {result.returncode})"
        )


def build_component(component: GoComponent, names: list[str]) -> None:
    """Build `names` into the component's cache dir, replacing files atomically."""
    cache_dir = component.cache_dir()
    with _exclusive_lock(cache_dir.parent / f".{cache_dir.name}.lock"):
        missing = [name for name in names if not (cache_dir / name).is_file()]
        if not missing:  # another process built them while we waited for the lock
            return
        for name in missing:
            _log(f"Building {name} {component.version} (first build takes many minutes)...")
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Build next to the cache so a killed build never leaves a half-written binary.
        with tempfile.TemporaryDirectory(dir=cache_dir.parent, prefix=".build-") as tmp:
            _go_build(component, missing, Path(tmp))
            for name in missing:
                os.replace(Path(tmp) / name, cache_dir / name)
        for name in missing:
            _log(f"Built {cache_dir / name}")


def ensure_binaries() -> dict[str, Path]:
    """Paths of all control-plane binaries, building whatever is neither installed nor cached."""
    found = find_binaries()
    for component in COMPONENTS:
        missing = [name for name in component.packages if found[name] is None]
        if missing:
            build_component(component, missing)
            for name in missing:
                found[name] = component.cache_dir() / name
    return {name: path for name, path in found.items() if path is not None}
