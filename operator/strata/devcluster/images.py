"""Container images for the local cluster's real node, built without a registry or Docker.

Each image is written as an OCI image layout (oci-layout, index.json, blobs) from what this
machine already has installed: a Debian root filesystem bootstrapped once with debootstrap,
the installed Python (copied to ``/opt/strata/python``) with exactly the distributions the
image needs (host_files.py), and the project's own source; oci.py writes the layouts and
streams them into containerd with ``ctr images import``.

Layers (uncompressed tar: containerd unpacks them without gunzip, and they are cached here,
never sent over a network) are shared wherever the images agree, so containerd stores and
unpacks each once::

    debian   Debian bookworm minbase + the shared libraries the Python build links
    python   the interpreter and standard library
    common   distributions every Python image needs (pydantic, pyyaml, ...)
    torch    torch and what it needs (trainer and triton only)
    <image>  the rest of that image's distributions
    project  operator/ and workloads/ source (last: edits rebuild only this small layer)

The NVIDIA CUDA wheels (about 3 GB) are not copied whole: only the shared libraries that
torch's libraries link against are kept, because ``import torch`` loads them even on a CPU
(torch's CUDA build links libtorch_cuda.so, which links cuBLAS, cuFFT, NCCL, ...). Libraries
that CUDA code opens only at run time on a GPU (cuDNN's engines, cuSOLVER, ...) are left out.
OpenAI's ``triton`` compiler (GPU kernels only) is left out. These are CPU images for this
cluster; the production images are built from ``images/*.Dockerfile``.

Everything is cached by content under ``$STRATA_CACHE/images`` (default
``~/.cache/strata/images``): a layer's key hashes its recipe and the path, size, mtime and mode
of every input file, and an image's reference ``strata.local/<name>:<key>`` hashes its
layers' keys and its config, so a reference names exactly one content and changes whenever
an input does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from . import binaries
from .host_files import (
    HOST_PREFIX,
    HOST_SITE_PACKAGES,
    PREFIX,
    PY_VERSION,
    SITE_PACKAGES,
    cuda_libraries,
    dist_files,
    installed_distributions,
    dist_closure,
    host_file_entries,
    linked_closure,
)
from .oci import (
    BlobStore,
    Entry,
    HashingWriter,
    ImageBuildError,
    LocalImage,
    canonical_json,
    file_entry,
    write_image,
    write_layer_tar,
)

REGISTRY = "strata.local"
# Bump when the way layers are written changes, so every cached layer is rebuilt.
LAYER_FORMAT = "2"
# Bump to rebuild the Debian package layers only.
DEBIAN_PACKAGES_FORMAT = "2"

PROJECT_ROOT = Path(__file__).resolve().parents[3]
PROJECT_DIR = "opt/strata/src"
MULTIARCH_LIB = "usr/lib/x86_64-linux-gnu"

DEBIAN_SUITE = "bookworm"
# Shared libraries the Python build's extension modules link (ssl, sqlite3, expat, readline,
# curses) that minbase lacks.
DEBIAN_INCLUDE = ("libssl3", "libsqlite3-0", "libexpat1", "libreadline8", "libncursesw6")

# The users images run as: 1000 for workloads, 65532 for the operator (as its chart says).
USERS = {"strata": 1000, "nonroot": 65532}

PATH_ENV = f"/{PREFIX}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_ENV = (f"PATH={PATH_ENV}", "LANG=C.UTF-8", "PYTHONUNBUFFERED=1", "HOME=/home/strata")

# Standard-library parts no pod uses (tests alone are ~30 MB).
STDLIB_EXCLUDE = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3/tests",
                  "site-packages", "__phello__")
# Distributions no CPU pod imports (OpenAI Triton compiles GPU kernels; torch imports it lazily).
DROPPED = frozenset({"triton"})

TRITON_BACKENDS = "opt/tritonserver/backends"


# --------------------------------------------------------------------------- layers


@dataclass
class Layer:
    """A layer's recipe: ``key`` identifies its content; ``write`` produces the tar."""

    name: str
    key: str
    write: Callable[[BlobStore], tuple[str, int]]
    description: str = ""
    entries: list[Entry] | None = None  # what it holds, when known before writing it


def _entries_layer(name: str, entries: list[Entry], description: str = "") -> Layer:
    digest = hashlib.sha256(f"{LAYER_FORMAT}\0{name}\n".encode())
    for entry in sorted(entries, key=lambda e: e.path):
        digest.update(entry.fingerprint().encode() + b"\n")
    return Layer(name, digest.hexdigest(),
                 lambda store: store.write_with(lambda f: write_layer_tar(entries, f)),
                 description or f"{name}: {len(entries)} files", entries)


def _debian_mirror() -> str:
    """The Debian mirror apt is configured with, so debootstrap uses the same one."""
    for source in [*Path("/etc/apt/sources.list.d").glob("*.sources"), Path("/etc/apt/sources.list")]:
        try:
            text = source.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+)", text, re.M):
            uri = match.group(1)
            if re.search(r"/debian/?$", uri):
                return uri
    return "http://deb.debian.org/debian"


def debian_layer() -> Layer:
    mirror = _debian_mirror()
    recipe = f"{LAYER_FORMAT}\0debootstrap --variant=minbase {DEBIAN_SUITE} {mirror}\0{','.join(DEBIAN_INCLUDE)}\0{sorted(USERS.items())}"
    return Layer("debian", hashlib.sha256(recipe.encode()).hexdigest(),
                 lambda store: _bootstrap_debian(store, mirror),
                 f"debian: debootstrap --variant=minbase {DEBIAN_SUITE} (+{' '.join(DEBIAN_INCLUDE)})")


def _bootstrap_debian(store: BlobStore, mirror: str) -> tuple[str, int]:
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ImageBuildError("debootstrap is needed to build the images' Debian base: apt-get install debootstrap")
    if os.geteuid() != 0:
        raise ImageBuildError("debootstrap needs root to build the images' Debian base")
    with tempfile.TemporaryDirectory(dir=store.root, prefix=".debootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        command = [debootstrap, "--variant=minbase", f"--include={','.join(DEBIAN_INCLUDE)}",
                   DEBIAN_SUITE, str(rootfs), mirror]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise ImageBuildError(f"`{' '.join(command)}` failed (exit {result.returncode}):\n"
                                  f"{(result.stdout + result.stderr)[-3000:]}")
        _trim_rootfs(rootfs)
        return store.write_with(lambda f: _write_tree_tar(rootfs, f))


def _trim_rootfs(rootfs: Path) -> None:
    """Drop what a container never uses (package caches, docs, device nodes) and add users."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
                    "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*", "dev/*",
                    "var/log/*.log", "var/log/apt/*", "var/cache/debconf/*-old"):
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.name != "lock":
                path.unlink()
    for doc in (rootfs / "usr/share/doc").glob("*"):
        for path in doc.glob("*"):  # keep each package's copyright notice
            if path.name != "copyright":
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    with open(rootfs / "etc/passwd", "a") as passwd, open(rootfs / "etc/group", "a") as group:
        for name, uid in USERS.items():
            passwd.write(f"{name}:x:{uid}:{uid}::/home/{name}:/bin/sh\n")
            group.write(f"{name}:x:{uid}:\n")
            home = rootfs / "home" / name
            home.mkdir(parents=True, exist_ok=True)
            os.chown(home, uid, uid)
    os.chmod(rootfs / "tmp", 0o1777)


def _write_tree_tar(root: Path, out) -> tuple[str, int]:
    writer = HashingWriter(out)
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for directory, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                path = Path(directory) / name
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
                info.uname = info.gname = ""
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                elif info.type in (tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE):
                    tar.addfile(info)
    return f"sha256:{writer.sha.hexdigest()}", writer.size


def debian_packages_layer(name: str, packages: tuple[str, ...], base: Layer,
                          symlinks: dict[str, str] | None = None) -> Layer:
    """Debian ``packages`` and what they depend on beyond the Debian base, unpacked.

    apt resolves them against the base's dpkg status (so only what the base lacks is
    downloaded) with this machine's package lists; ``dpkg-deb -x`` unpacks them. Maintainer
    scripts do not run, so ``symlinks`` stands in for the alternatives they would set up."""
    symlinks = symlinks or {}
    recipe = f"{LAYER_FORMAT}.{DEBIAN_PACKAGES_FORMAT}\0{name}\0{' '.join(packages)}\0{base.key}\0{sorted(symlinks.items())}"

    def write(store: BlobStore) -> tuple[str, int]:
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise ImageBuildError(f"{tool} is needed to add Debian packages to the {name} layer")
        record = json.loads((store.root / "layers" / f"{base.name}-{base.key}.json").read_text())
        with tempfile.TemporaryDirectory(dir=store.root, prefix=f".{name}-") as tmp:
            work = Path(tmp)
            with tarfile.open(store.path(record["digest"])) as tar:
                status = tar.extractfile("var/lib/dpkg/status").read()
            (work / "status").write_bytes(status)
            (work / "archives" / "partial").mkdir(parents=True)
            command = ["apt-get", "-q", "-y", "--download-only", "--no-install-recommends",
                       "-o", f"Dir::State::status={work / 'status'}",
                       "-o", f"Dir::Cache::archives={work / 'archives'}",
                       "-o", "Debug::NoLocking=1", "install", *packages]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise ImageBuildError(f"`{' '.join(command)}` failed (exit {result.returncode}):\n"
                                      f"{(result.stdout + result.stderr)[-3000:]}")
            root = work / "root"
            for deb in sorted((work / "archives").glob("*.deb")):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            # Bookworm's base is merged-/usr (/lib -> usr/lib, ...) but some packages still
            # ship files under /lib: move them where the base's symlinks point, or the layer's
            # /lib directory would replace the base's symlink (and the dynamic loader with it).
            for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
                if (root / top).is_dir() and not (root / top).is_symlink():
                    shutil.copytree(root / top, root / "usr" / top, symlinks=True, dirs_exist_ok=True)
                    shutil.rmtree(root / top)
            for link, target in symlinks.items():
                (root / link).parent.mkdir(parents=True, exist_ok=True)
                (root / link).symlink_to(target)
            # dpkg-deb -x also rewrites the modes of directories that exist in the base
            # (usr/, usr/bin/, ...); they keep the base's 0755 as it is written here.
            return store.write_with(lambda f: _write_tree_tar(root, f))

    return Layer(name, hashlib.sha256(recipe.encode()).hexdigest(), write,
                 f"{name}: Debian packages {' '.join(packages)} (+ dependencies)")


def python_layer() -> Layer:
    """The interpreter and standard library at /opt/strata/python."""
    stdlib = HOST_PREFIX / "lib" / f"python{PY_VERSION}"
    excluded = tuple(str(stdlib / part) for part in STDLIB_EXCLUDE)
    paths: list[Path] = []
    for directory, dirnames, filenames in os.walk(stdlib):
        if directory.startswith(excluded):
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if not str(Path(directory) / d).startswith(excluded)]
        paths.extend(Path(directory) / name for name in filenames if not name.endswith(".a"))
    lib = HOST_PREFIX / "lib"
    paths += sorted(lib.glob("libpython*.so*"))
    paths += [HOST_PREFIX / "bin" / name for name in (f"python{PY_VERSION}", "python3", "python")
              if (HOST_PREFIX / "bin" / name).exists()]
    include = HOST_PREFIX / "include"  # headers: DeepSpeed and torch JIT-compile C++ ops
    paths += [p for p in include.rglob("*") if p.is_file()]
    entries = host_file_entries(paths)
    soname = f"libpython{PY_VERSION}.so.1.0"
    entries += [
        # The interpreter's RUNPATH names the build prefix; the multiarch directory is on the
        # linker's default path, so the interpreter (and Triton's python stub) find it here.
        Entry(f"{MULTIARCH_LIB}/{soname}", "symlink", 0o777, target=f"/{PREFIX}/lib/{soname}"),
        Entry(f"{SITE_PACKAGES}", "dir", 0o755),
    ]
    return _entries_layer("python", entries, f"python: Python {sys.version.split()[0]} at /{PREFIX}")


def dists_layer(name: str, dists: Iterable[str], installed: dict[str, metadata.Distribution],
                extra_lib_dirs: Iterable[Path] = ()) -> Layer:
    """The files of ``dists`` plus the NVIDIA libraries their shared libraries link."""
    paths: list[Path] = []
    for dist_name in sorted(dists):
        paths.extend(dist_files(installed[dist_name]))
    elf_roots = [p for p in paths if re.search(r"\.so(\.|$)", p.name) or p.parent.name == "bin"]
    linked = linked_closure(elf_roots, extra_lib_dirs)
    nvidia_roots = {Path(os.path.normpath(installed[n].locate_file(""))) for n in cuda_libraries(installed)}
    kept = sorted(p for p in linked if any(p.is_relative_to(root / "nvidia") for root in nvidia_roots))
    entries = host_file_entries(paths + kept)
    size = sum(e.size() for e in entries)
    return _entries_layer(name, entries,
                          f"{name}: {len(list(dists))} distributions, {len(kept)} linked NVIDIA libraries, "
                          f"{size / 2**20:.0f} MiB")


def project_layer() -> Layer:
    """operator/ and workloads/ source, importable through a .pth file, and the `strata` script."""
    entries: list[Entry] = []
    for top in ("operator/strata", "workloads/strata_workloads"):
        for path in sorted((PROJECT_ROOT / top).rglob("*")):
            if "__pycache__" in path.parts or path.suffix == ".pyc" or not path.is_file():
                continue
            entries.append(file_entry(f"{PROJECT_DIR}/{path.relative_to(PROJECT_ROOT)}", path))
    version = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    entries += [
        Entry(f"{SITE_PACKAGES}/strata.pth",
              data=f"/{PROJECT_DIR}/operator\n/{PROJECT_DIR}/workloads\n".encode()),
        Entry(f"{SITE_PACKAGES}/strata-{version}.dist-info/METADATA",
              data=f"Metadata-Version: 2.1\nName: strata\nVersion: {version}\n".encode()),
        Entry(f"{PREFIX}/bin/strata", mode=0o755,
              data=f"#!/{PREFIX}/bin/python{PY_VERSION}\nimport sys\nfrom strata.cli import main\n"
                   f"sys.exit(main())\n".encode()),
    ]
    return _entries_layer("project", entries, f"project: operator/ and workloads/ ({len(entries)} files)")


def go_binary_layer(name: str, component: binaries.GoComponent, binary: str, path: str) -> Layer:
    """One static Go binary of ``component``, built on first use, at ``path`` in the image."""
    built = component.cache_dir() / binary
    key = hashlib.sha256(f"{LAYER_FORMAT}\0{name}\0{component.version}".encode()).hexdigest()

    def write(store: BlobStore) -> tuple[str, int]:
        binaries.build_component(component, [binary])
        return store.write_with(lambda f: write_layer_tar([Entry(path, "file", 0o755, source=built, mtime=0)], f))

    return Layer(name, key, write, f"{name}: static Go binary ({component.version})")


def pause_layer() -> Layer:
    return go_binary_layer("pause", binaries.PAUSE, "pause", "pause")


def sidecar_grpc_layer() -> Layer:
    """The sidecar's compiled gRPC front end on PATH (serve/grpc_front_end.py finds it there)."""
    return go_binary_layer("sidecar-grpc", binaries.SIDECAR_GRPC, "strata-sidecar-grpc",
                           "usr/local/bin/strata-sidecar-grpc")


def triton_backend_layer() -> Layer:
    """Triton's python backend at its default directory, with the stub for this Python.

    The stub embeds libpython in isolated mode (environment ignored) and finds its standard
    library by searching upwards from its own directory for lib/pythonX.Y/os.py; the symlink
    /opt/tritonserver/lib/pythonX.Y makes that search land on the image's Python."""
    root = HOST_SITE_PACKAGES / "pytriton" / "tritonserver"
    shipped = root / "backends" / "python"
    stub = root / "python_backend_stubs" / PY_VERSION / "triton_python_backend_stub"
    entries = [
        file_entry(f"{TRITON_BACKENDS}/python/{source.name}", source)
        for source in (shipped / "libtriton_python.so", shipped / "triton_python_backend_utils.py", stub)
    ]
    entries += [
        Entry(f"opt/tritonserver/lib/python{PY_VERSION}", "symlink", 0o777,
              target=f"/{PREFIX}/lib/python{PY_VERSION}"),
        Entry("usr/local/bin/tritonserver", "symlink", 0o777,
              target=f"/{SITE_PACKAGES}/pytriton/tritonserver/bin/tritonserver"),
    ]
    return _entries_layer("triton-backends", entries, "triton-backends: python backend + stub")


def writable_dir_layer(name: str, *paths: str) -> Layer:
    return _entries_layer(name, [Entry(p, "dir", 0o1777) for p in paths], f"{name}: {' '.join(paths)}")


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class ImageSpec:
    name: str
    requirements: tuple[str, ...] = ()
    # named groups of requirements whose layers other images share (e.g. torch)
    shared: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    user: str = "1000:1000"
    workdir: str = "/home/strata"
    extra_layers: tuple[str, ...] = ()  # names in _EXTRA_LAYERS, after the image's own layer
    python: bool = True


def _pyproject() -> dict:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]


def _extra(name: str) -> tuple[str, ...]:
    return tuple(_pyproject()["optional-dependencies"][name])


# What every workload imports (config models, yaml, metrics).
WORKLOAD_COMMON = ("pyyaml>=6", "pydantic>=2.6", "prometheus-client>=0.20")
SHARED_GROUPS = {"torch": ("torch",)}


def image_specs() -> dict[str, ImageSpec]:
    """The images, with their requirements taken from pyproject.toml."""
    site = f"/{SITE_PACKAGES}"
    specs = [
        ImageSpec("pause", python=False, entrypoint=("/pause",), user="65535:65535", workdir="/"),
        # `base` is what every Python image starts with: Debian, Python, the common layer.
        ImageSpec("base", entrypoint=("python3",)),
        ImageSpec("operator", tuple(_pyproject()["dependencies"]), entrypoint=("strata",), cmd=("run",),
                  user="65532:65532", workdir="/home/nonroot"),
        ImageSpec("trainer", _extra("train") + WORKLOAD_COMMON, shared=("torch",),
                  entrypoint=("torchrun",), cmd=("--nproc_per_node=1", "-m", "strata_workloads.train"),
                  env=("DS_BUILD_OPS=0", "TORCH_EXTENSIONS_DIR=/var/cache/torch_extensions",
                       "STRATA_TRAIN_CONFIG=/etc/strata/train.yaml"),
                  # DeepSpeed JIT-compiles its CPU shared-memory collectives on first use.
                  extra_layers=("compiler", "torch-extensions")),
        ImageSpec("data", _extra("data") + WORKLOAD_COMMON, entrypoint=("python3",)),
        # A FeedbackPolicy's embedding drift Jobs: torch (shared with the trainer) and the model.
        ImageSpec("embedder", _extra("embed") + WORKLOAD_COMMON, shared=("torch",), entrypoint=("python3",)),
        ImageSpec("sidecar", _extra("serve") + WORKLOAD_COMMON, entrypoint=("python3",),
                  extra_layers=("sidecar-grpc",)),
        ImageSpec("triton", _extra("triton") + WORKLOAD_COMMON,
                  shared=("torch",), entrypoint=("tritonserver",),
                  # tritonserver's bundled libraries; the python stub finds them the same way.
                  env=(f"LD_LIBRARY_PATH={site}/nvidia_pytriton.libs",
                       # The generated model.py puts PYTHONPATH on sys.path to find torch.
                       f"PYTHONPATH={site}"),
                  extra_layers=("triton-backends",)),
    ]
    return {spec.name: spec for spec in specs}


_EXTRA_LAYERS: dict[str, Callable[[], Layer]] = {
    "compiler": lambda: debian_packages_layer(
        "compiler", ("g++",), debian_layer(), {"usr/bin/c++": "g++", "usr/bin/cc": "gcc"}),
    "triton-backends": triton_backend_layer,
    "sidecar-grpc": sidecar_grpc_layer,
    "torch-extensions": lambda: writable_dir_layer("torch-extensions", "var/cache/torch_extensions"),
}


@dataclass
class ImagePlan:
    spec: ImageSpec
    layers: list[Layer]
    config: dict
    key: str = ""

    @property
    def ref(self) -> str:
        return f"{REGISTRY}/{self.spec.name}:{self.key[:16]}"


def plan_images(names: Iterable[str] | None = None) -> dict[str, ImagePlan]:
    """Each image's layers and config, and its content key, without building anything."""
    specs = image_specs()
    wanted = list(specs) if names is None else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in specs]
    if unknown:
        raise ImageBuildError(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(specs)}")
    plans: dict[str, ImagePlan] = {}
    python_specs = [s for s in specs.values() if s.python]
    if any(specs[n].python for n in wanted):
        installed = installed_distributions()
        dropped = DROPPED | cuda_libraries(installed)
        closures = {s.name: dist_closure(s.requirements, installed) - dropped for s in python_specs}
        # What every image with requirements needs goes in the shared "common" layer.
        common = set.intersection(*(closures[s.name] for s in python_specs if s.requirements))
        shared_layers: dict[str, tuple[set[str], Layer]] = {}
        base = [debian_layer(), python_layer(), dists_layer("common", common, installed), project_layer()]
    cached_layers: dict[str, Layer] = {}
    for name in wanted:
        spec = specs[name]
        if not spec.python:
            layers = [pause_layer()]
        else:
            layers = base[:3]
            have = set(common)
            for group in spec.shared:
                if group not in shared_layers:
                    dists = dist_closure(SHARED_GROUPS[group], installed) - dropped - common
                    shared_layers[group] = (dists, dists_layer(group, dists, installed))
                dists, layer = shared_layers[group]
                layers.append(layer)
                have |= dists
            own = closures[name] - have
            if own:
                extra_dirs = [HOST_SITE_PACKAGES / "nvidia_pytriton.libs"] if name == "triton" else []
                layers.append(dists_layer(name, own, installed, extra_dirs))
            for extra in spec.extra_layers:
                if extra not in cached_layers:
                    cached_layers[extra] = _EXTRA_LAYERS[extra]()
                layers.append(cached_layers[extra])
            layers.append(base[3])
        config = {
            "Env": list(BASE_ENV if spec.python else ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",))
                   + list(spec.env),
            "Entrypoint": list(spec.entrypoint),
            "User": spec.user,
            "WorkingDir": spec.workdir,
        }
        if spec.cmd:
            config["Cmd"] = list(spec.cmd)
        key = hashlib.sha256(canonical_json({"layers": [l.key for l in layers], "config": config})).hexdigest()
        plans[name] = ImagePlan(spec, layers, config, key)
    return plans


def image_refs(names: Iterable[str] | None = None) -> dict[str, str]:
    """name -> ``strata.local/<name>:<content key>`` for the images as they would be built now."""
    return {name: plan.ref for name, plan in plan_images(names).items()}


def images_cache() -> Path:
    return binaries.cache_root() / "images"


def _lock(path: Path):
    return binaries._exclusive_lock(path)


def _build_layer(layer: Layer, store: BlobStore, log) -> tuple[str, int, bool]:
    record = store.root / "layers" / f"{layer.name}-{layer.key}.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        if store.has(saved["digest"]):
            return saved["digest"], saved["size"], False
    started = time.monotonic()
    log(f"  building layer {layer.description}")
    digest, size = layer.write(store)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"digest": digest, "size": size, "name": layer.name}))
    log(f"  layer {layer.name}: {size / 2**20:.1f} MiB in {time.monotonic() - started:.1f}s")
    return digest, size, True


def ensure_images(names: Iterable[str] | None = None, *, log: Callable[[str], None] = print) -> dict[str, LocalImage]:
    """Build (or reuse from the cache) the named images (default: all); name -> LocalImage."""
    root = images_cache()
    store = BlobStore(root)
    root.mkdir(parents=True, exist_ok=True)
    results: dict[str, LocalImage] = {}
    with _lock(root / ".lock"):
        plans = plan_images(names)
        for name, plan in plans.items():
            started = time.monotonic()
            layout = root / "oci" / f"{name}-{plan.key[:16]}"
            record = layout / "strata-image.json"
            if record.is_file():
                saved = json.loads(record.read_text())
                results[name] = LocalImage(name, plan.ref, layout, saved["size"], saved["digest"], False,
                                           time.monotonic() - started)
                continue
            layers, built = [], False
            for layer in plan.layers:
                digest, size, fresh = _build_layer(layer, store, log)
                layers.append((digest, size))
                built |= fresh
            digest, size = write_image(store, layout, plan.ref, layers, plan.config,
                                       [layer.description for layer in plan.layers])
            record.write_text(json.dumps({"ref": plan.ref, "digest": digest, "size": size}))
            results[name] = LocalImage(name, plan.ref, layout, size, digest, True, time.monotonic() - started)
    return results


def format_table(images: Iterable[LocalImage]) -> str:
    rows = [("IMAGE", "REF", "SIZE", "STATE", "SECONDS")]
    for image in images:
        rows.append((image.name, image.ref, f"{image.size_bytes / 2**20:.0f} MiB",
                     "built" if image.built else "cached", f"{image.seconds:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
