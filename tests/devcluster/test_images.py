"""The local images: OCI layouts written by devcluster/images.py and oci.py, imported into a real
containerd with the real `ctr`, and run with runc.

The unit tests check the archive writer against the OCI rules containerd relies on (digests
and sizes match the content, diff_ids are the layer digests). The containerd tests start a
private containerd (root, state and socket under a temporary directory) and leave nothing
behind: no process, no mount, no cgroup.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from tests_support import wait_for

from strata.devcluster import host_files, images, oci

CONTAINERD = shutil.which("containerd") or "/usr/bin/containerd"
CTR = shutil.which("ctr") or "/usr/bin/ctr"
NAMESPACE = "k8s.io"
# ctr puts each container's cgroup here; removed again when the test is done.
CGROUP_PARENT = "strata-images-test"


# --------------------------------------------------------------------------- archive writer


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


@pytest.fixture
def small_image(tmp_path):
    source = tmp_path / "hello.txt"
    source.write_text("hello\n")
    os.utime(source, (1_700_000_000, 1_700_000_000))
    store = oci.BlobStore(tmp_path / "cache")
    entries = [
        oci.file_entry("opt/app/hello.txt", source),
        oci.Entry("opt/app/run.sh", mode=0o755, data=b"#!/bin/sh\necho hi\n"),
        oci.Entry("opt/app/link", "symlink", 0o777, target="hello.txt"),
    ]
    layer = store.write_with(lambda f: oci.write_layer_tar(entries, f))
    layout = tmp_path / "layout"
    digest, size = oci.write_image(store, layout, "strata.local/small:abc", [layer],
                                      {"Entrypoint": ["/opt/app/run.sh"], "User": "1000:1000"}, ["small"])
    return layout, digest, size, layer


def test_the_layout_is_an_oci_image_layout_whose_digests_match_their_content(small_image):
    layout, manifest_digest, size, (layer_digest, layer_size) = small_image
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    [descriptor] = index["manifests"]
    assert descriptor["mediaType"] == oci.MEDIA_MANIFEST
    assert descriptor["platform"] == {"architecture": "amd64", "os": "linux"}
    assert descriptor["annotations"]["io.containerd.image.name"] == "strata.local/small:abc"
    assert descriptor["annotations"]["org.opencontainers.image.ref.name"] == "abc"
    manifest_bytes = _blob(layout, descriptor["digest"])
    assert descriptor["digest"] == manifest_digest == _sha(manifest_bytes)
    assert descriptor["size"] == len(manifest_bytes)
    manifest = json.loads(manifest_bytes)
    config_bytes = _blob(layout, manifest["config"]["digest"])
    assert manifest["config"]["digest"] == _sha(config_bytes)
    assert manifest["config"]["size"] == len(config_bytes)
    [layer] = manifest["layers"]
    layer_bytes = _blob(layout, layer["digest"])
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    assert layer["digest"] == layer_digest == _sha(layer_bytes)
    assert layer["size"] == layer_size == len(layer_bytes)
    config = json.loads(config_bytes)
    # Uncompressed layers: the diff_id is the layer's own digest.
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer["digest"]]}
    assert config["config"]["User"] == "1000:1000"
    assert size == len(config_bytes) + len(layer_bytes)


def test_a_layer_tar_has_parents_first_root_owned_world_readable_entries(small_image, tmp_path):
    layout, _, _, (layer_digest, _) = small_image
    with tarfile.open(fileobj=io.BytesIO(_blob(layout, layer_digest))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert list(members) == ["opt", "opt/app", "opt/app/hello.txt", "opt/app/link", "opt/app/run.sh"]
        assert all(m.uid == 0 and m.gid == 0 and m.uname == "" for m in members.values())
        hello = members["opt/app/hello.txt"]
        assert hello.mtime == 1_700_000_000 and hello.mode & 0o444 == 0o444
        assert tar.extractfile(hello).read() == b"hello\n"
        assert members["opt/app/run.sh"].mode == 0o755
        assert members["opt/app/link"].issym() and members["opt/app/link"].linkname == "hello.txt"
        assert members["opt"].isdir()


def test_the_same_entries_give_the_same_layer_digest(tmp_path):
    source = tmp_path / "f"
    source.write_bytes(b"x" * 1000)
    store = oci.BlobStore(tmp_path / "cache")
    entries = [oci.file_entry("a/f", source), oci.Entry("a/b/c", data=b"c")]
    first = store.write_with(lambda f: oci.write_layer_tar(entries, f))
    second = store.write_with(lambda f: oci.write_layer_tar(list(reversed(entries)), f))
    assert first == second


def test_a_changed_input_file_changes_the_layer_key_and_the_image_ref(tmp_path):
    source = tmp_path / "f"
    source.write_text("one")
    before = images._entries_layer("x", [oci.file_entry("f", source)]).key
    os.utime(source, (1, 1))
    after = images._entries_layer("x", [oci.file_entry("f", source)]).key
    assert before != after


def test_elf_dynamic_reads_what_readelf_reads():
    python = Path(os.path.realpath(host_files.HOST_PREFIX / "bin" / f"python{host_files.PY_VERSION}"))
    needed, search = host_files.elf_dynamic(python)
    readelf = subprocess.run(["readelf", "-d", str(python)], capture_output=True, text=True, check=True).stdout
    for name in needed:
        assert f"[{name}]" in readelf
    assert readelf.count("(NEEDED)") == len(needed)
    assert host_files.elf_dynamic(Path(__file__)) is None


# --------------------------------------------------------------------------- what goes in


@pytest.fixture(scope="module")
def plans():
    """All images' plans (planning stats every input file: do it once)."""
    return images.plan_images()


def test_refs_are_registry_local_names_tagged_by_content():
    refs = images.image_refs(["pause", "operator"])
    assert refs["pause"].startswith("strata.local/pause:")
    assert refs["operator"].startswith("strata.local/operator:")
    assert refs == images.image_refs(["pause", "operator"])


def test_every_python_image_shares_the_base_layers_and_torch_is_shared_by_trainer_and_triton(plans):
    base_keys = [layer.key for layer in plans["base"].layers[:3]]
    for name, plan in plans.items():
        if name != "pause":
            assert [layer.key for layer in plan.layers[:3]] == base_keys, name
            assert plan.layers[-1].name == "project", name
    torch_keys = {plans[n].layers[3].key for n in ("trainer", "triton")}
    assert len(torch_keys) == 1 and plans["trainer"].layers[3].name == "torch"
    assert "torch" not in [layer.name for layer in plans["operator"].layers]


def _layer_files(layer: images.Layer) -> set[str]:
    """The paths a planned layer would contain (without writing it)."""
    return {entry.path for entry in layer.entries}


def test_the_torch_layer_keeps_torch_and_the_cuda_libraries_it_links_but_not_the_rest(plans):
    files = _layer_files(next(l for l in plans["trainer"].layers if l.name == "torch"))
    site = host_files.SITE_PACKAGES
    assert f"{site}/torch/__init__.py" in files
    assert any(f.startswith(f"{site}/torch/lib/libtorch_cpu.so") for f in files)
    nvidia = {f for f in files if f.startswith(f"{site}/nvidia/")}
    # libtorch_cuda.so links these, so `import torch` loads them even without a GPU.
    assert f"{site}/nvidia/cu13/lib/libcudart.so.13" in nvidia
    assert f"{site}/nvidia/cu13/lib/libcublas.so.13" in nvidia
    # cuDNN's engines are opened at run time on a GPU only; OpenAI Triton is GPU-only.
    assert not any("libcudnn_engines" in f for f in nvidia)
    assert not any(f.startswith(f"{site}/triton/") for f in files)
    assert not any(".dist-info" in f and "nvidia" in f for f in files)


def test_the_operator_image_has_kopf_and_no_torch(plans):
    files = set().union(*(_layer_files(l) for l in plans["operator"].layers if l.name in ("common", "operator")))
    site = host_files.SITE_PACKAGES
    assert any(f.startswith(f"{site}/kopf/") for f in files)
    assert not any(f.startswith((f"{site}/torch/", f"{site}/numpy/")) for f in files)


def test_the_triton_image_has_tritonserver_its_libraries_and_the_python_backend(plans):
    plan = plans["triton"]
    files = set().union(*(_layer_files(l) for l in plan.layers if l.entries is not None))
    site = host_files.SITE_PACKAGES
    assert f"{site}/pytriton/tritonserver/bin/tritonserver" in files
    assert any(f.startswith(f"{site}/nvidia_pytriton.libs/libtritonserver") for f in files)
    assert f"{images.TRITON_BACKENDS}/python/triton_python_backend_stub" in files
    assert f"{site}/torch/__init__.py" in files


# --------------------------------------------------------------------------- real containerd


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mounts") as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(str(path))]


def _cgroup_dirs() -> list[Path]:
    return [d for d in Path("/sys/fs/cgroup").glob(f"*/{CGROUP_PARENT}")] + \
        list(Path("/sys/fs/cgroup").glob(f"*/*/{CGROUP_PARENT}"))


class Containerd:
    """A private containerd: config, root, state and socket under one directory."""

    def __init__(self, directory: Path, sandbox_image: str):
        self.directory = directory
        self.address = str(directory / "containerd.sock")
        self.config = directory / "config.toml"
        self.config.write_text(f"""version = 2
root = "{directory}/root"
state = "{directory}/state"
[grpc]
  address = "{self.address}"
[ttrpc]
  address = "{self.address}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{directory}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  # Without it every sandbox fails here: a negative oom_score_adj needs CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  sandbox_image = "{sandbox_image}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "{directory}/cni"
""")
        self.log = open(directory / "containerd.log", "w")
        self.process = subprocess.Popen([CONTAINERD, "--config", str(self.config)],
                                        stdout=self.log, stderr=subprocess.STDOUT)

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([CTR, "--address", self.address, "--namespace", NAMESPACE, *args],
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def wait_ready(self) -> None:
        def ready():
            if self.process.poll() is not None:
                pytest.fail(f"containerd exited {self.process.returncode}: "
                            f"{(self.directory / 'containerd.log').read_text()[-3000:]}")
            return self.ctr("version", check=False).returncode == 0
        wait_for(ready, timeout=60, interval=0.2, what="containerd to serve its socket")

    def stop(self) -> None:
        for line in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", line, check=False)
            self.ctr("tasks", "rm", "-f", line, check=False)
        for line in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "rm", line, check=False)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def built():
    started = time.monotonic()
    result = images.ensure_images(["pause", "base", "operator"])
    print(f"\nensure_images(pause, base, operator): {time.monotonic() - started:.1f}s")
    print(images.format_table(result.values()))
    return result


@pytest.fixture
def containerd(tmp_path_factory, built):
    for tool in (CONTAINERD, CTR, shutil.which("runc")):
        assert tool and os.access(tool, os.X_OK), \
            "containerd, ctr and runc are needed: apt-get install containerd runc"
    # containerd 1.6 and its shims keep a few fixed directories under /run/containerd.
    run_dirs = [Path("/run/containerd"), *(Path("/run/containerd") / d for d in ("fifo", "s", "runc", "runc/k8s.io"))]
    existing = {d for d in run_dirs if d.exists()}
    # A short path: the shim's socket path must fit in a unix socket address.
    directory = Path(tmp_path_factory.mktemp("ctrd"))
    daemon = Containerd(directory, built["pause"].ref)
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        daemon.stop()
        leftover_mounts = _mounts_under(directory)
        for mount in reversed(leftover_mounts):
            subprocess.run(["umount", "-l", mount], check=False)
        for cgroup in _cgroup_dirs():
            for child in sorted(cgroup.rglob("*"), reverse=True):
                if child.is_dir():
                    child.rmdir()
            cgroup.rmdir()
        shutil.rmtree(directory, ignore_errors=True)
        for run_dir in reversed(run_dirs):
            if run_dir not in existing and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()
        assert daemon.process.poll() is not None
        assert not leftover_mounts, f"mounts left behind: {leftover_mounts}"


def _cgroup_flag(name: str) -> list[str]:
    return ["--cgroup", f"/{CGROUP_PARENT}/{name}"]


def test_images_import_and_python_runs_as_uid_1000_and_pause_starts(containerd, built):
    started = time.monotonic()
    oci.import_images(built.values(), ctr=CTR, address=containerd.address)
    print(f"\nimport (cold): {time.monotonic() - started:.2f}s")
    listed = oci.containerd_images(ctr=CTR, address=containerd.address)
    for image in built.values():
        assert listed[image.ref] == image.digest
    started = time.monotonic()
    oci.import_images(built.values(), ctr=CTR, address=containerd.address)
    print(f"import (all present, skipped): {time.monotonic() - started:.2f}s")

    probe = ("import os, sys, ssl, sqlite3, json; "
             "print(json.dumps({'uid': os.getuid(), 'prefix': sys.prefix, 'exe': sys.executable}))")
    # No user given: the image's config says 1000:1000, as a pod without runAsUser gets.
    result = containerd.ctr("run", "--rm", *_cgroup_flag("py"),
                            built["base"].ref, "strata-py", "python3", "-c", probe)
    seen = json.loads(result.stdout)
    assert seen == {"uid": 1000, "prefix": "/opt/strata/python", "exe": "/opt/strata/python/bin/python3"}

    # The operator image's own entrypoint, as the chart runs it (uid 65532, read-only root).
    result = containerd.ctr("run", "--rm", "--read-only", *_cgroup_flag("op"), built["operator"].ref, "strata-op",
                            "strata", "--help")
    assert "usage" in result.stdout.lower(), result.stdout + result.stderr
    result = containerd.ctr("run", "--rm", *_cgroup_flag("op2"), built["operator"].ref, "strata-op2",
                            "python3", "-c", "import os, kopf, kubernetes, strata.controllers; print(os.getuid())")
    assert result.stdout.strip() == "65532", result.stderr

    containerd.ctr("run", "-d", *_cgroup_flag("pause"), built["pause"].ref, "strata-pause")
    wait_for(lambda: "RUNNING" in containerd.ctr("tasks", "ls").stdout, timeout=30, what="pause running")
    containerd.ctr("tasks", "kill", "-s", "SIGTERM", "strata-pause")
    wait_for(lambda: "STOPPED" in containerd.ctr("tasks", "ls").stdout, timeout=30, what="pause to stop")
    # pause exits 0 on SIGTERM (a crash would leave another status)
    status = containerd.ctr("tasks", "rm", "strata-pause")
    containerd.ctr("containers", "rm", "strata-pause")
    assert status.returncode == 0
