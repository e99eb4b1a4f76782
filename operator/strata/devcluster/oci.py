"""OCI image layouts written by hand, and their import into containerd.

A layer is an uncompressed, deterministic tar of `Entry`s (same entries, same bytes, same
digest); blobs live once in a content-addressed `BlobStore`, and an image's layout
(oci-layout, index.json, blobs) hard-links them. `import_images` streams the layouts that
containerd lacks into `ctr images import`, each blob it does not already store once.
What goes into the layers is devcluster/images.py's business.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


class ImageBuildError(RuntimeError):
    """An image could not be built or imported; the message says why and what to do."""


@dataclass(frozen=True)
class LocalImage:
    name: str
    ref: str
    archive: Path  # OCI image layout directory (blobs hard-linked from the shared blob cache)
    size_bytes: int  # config + layers, uncompressed
    digest: str = ""  # manifest digest, as containerd reports it after import
    built: bool = False  # False when it came from the cache
    seconds: float = 0.0


# --------------------------------------------------------------------------- layers and blobs

@dataclass(frozen=True)
class Entry:
    """One filesystem object in a layer: a file copied from ``source`` or holding ``data``,
    a directory, or a symlink to ``target``."""

    path: str  # inside the image, no leading slash
    kind: str = "file"  # file | dir | symlink
    mode: int = 0o644
    source: Path | None = None
    data: bytes | None = None
    target: str = ""
    mtime: int = 0
    uid: int = 0
    gid: int = 0
    # the source's stat when the entry was made (planning stats each input file once)
    source_stat: tuple[int, int] | None = dataclasses.field(default=None, compare=False)

    def _source_stat(self) -> tuple[int, int]:
        if self.source_stat is not None:
            return self.source_stat
        st = self.source.stat()
        return st.st_size, st.st_mtime_ns

    def size(self) -> int:
        if self.kind != "file":
            return 0
        return len(self.data) if self.data is not None else self._source_stat()[0]

    def fingerprint(self) -> str:
        if self.data is not None:
            content = hashlib.sha256(self.data).hexdigest()
        elif self.source is not None:
            size, mtime_ns = self._source_stat()
            content = f"{self.source}:{size}:{mtime_ns}"
        else:
            content = ""
        return f"{self.path}\0{self.kind}\0{self.mode:o}\0{self.uid}:{self.gid}\0{self.target}\0{content}\0{self.mtime}"


def file_entry(path: str, source: Path, st: os.stat_result | None = None, data: bytes | None = None) -> Entry:
    """A copy of ``source``, readable by every user (images run as non-root)."""
    st = st or source.stat()
    mode = stat.S_IMODE(st.st_mode) | 0o444
    if mode & 0o111:
        mode |= 0o111
    mode &= ~0o022 & 0o7777
    return Entry(path, "file", mode, source=None if data is not None else source, data=data,
                 mtime=int(st.st_mtime), source_stat=(st.st_size, st.st_mtime_ns))


def _with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """Entries sorted so parents come first, with missing parent directories added."""
    by_path = {entry.path: entry for entry in entries}
    for path in list(by_path):
        parent = os.path.dirname(path)
        while parent and parent not in by_path:
            by_path[parent] = Entry(parent, "dir", 0o755)
            parent = os.path.dirname(parent)
    return [by_path[path] for path in sorted(by_path, key=lambda p: p.split("/"))]


class HashingWriter(io.RawIOBase):
    def __init__(self, out):
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sha.update(data)
        self.out.write(data)
        self.size += len(data)
        return len(data)


def _tarinfo(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path + ("/" if entry.kind == "dir" else ""))
    info.mode, info.mtime, info.uid, info.gid = entry.mode, entry.mtime, entry.uid, entry.gid
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, entry.target
    else:
        info.size = entry.size()
    return info


def write_layer_tar(entries: Iterable[Entry], out) -> tuple[str, int]:
    """Write a deterministic layer tar of ``entries`` to ``out``; return (sha256 digest, size)."""
    writer = HashingWriter(out)
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in _with_parents(entries):
            info = _tarinfo(entry)
            if entry.kind != "file":
                tar.addfile(info)
            elif entry.data is not None:
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                with open(entry.source, "rb") as source:
                    tar.addfile(info, source)
    return f"sha256:{writer.sha.hexdigest()}", writer.size


class BlobStore:
    """Content-addressed files under ``root/blobs/sha256``, written atomically."""

    def __init__(self, root: Path):
        self.root = root
        self.dir = root / "blobs" / "sha256"

    def path(self, digest: str) -> Path:
        return self.dir / digest.split(":", 1)[1]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def write_with(self, produce: Callable[[object], tuple[str, int]]) -> tuple[str, int]:
        """Run ``produce(file)`` into a temporary file and move it to its digest's name."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.dir, prefix=".tmp-", delete=False) as tmp:
            try:
                digest, size = produce(tmp)
            except BaseException:
                os.unlink(tmp.name)
                raise
        os.chmod(tmp.name, 0o644)
        os.replace(tmp.name, self.path(digest))
        return digest, size

    def write_bytes(self, data: bytes) -> tuple[str, int]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has(digest):
            self.write_with(lambda f: (f.write(data), (digest, len(data)))[1])
        return digest, len(data)


def canonical_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
PLATFORM = {"architecture": "amd64", "os": "linux"}


def write_image(store: BlobStore, layout: Path, ref: str, layers: list[tuple[str, int]],
                config: dict, history: list[str]) -> tuple[str, int]:
    """Write config, manifest and an OCI layout at ``layout`` naming ``ref``.

    ``layers`` are (digest, size) of uncompressed layer blobs already in ``store``; the layout's
    blobs are hard links into the store. Returns (manifest digest, total size)."""
    image_config = {
        **PLATFORM,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [digest for digest, _ in layers]},
        "history": [{"created_by": line} for line in history],
    }
    config_digest, config_size = store.write_bytes(canonical_json(image_config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": d, "size": s} for d, s in layers],
    }
    manifest_digest, manifest_size = store.write_bytes(canonical_json(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST, "digest": manifest_digest, "size": manifest_size,
            "platform": PLATFORM,
            "annotations": {
                # containerd's importer names the image from this; the OCI one is the tag.
                "io.containerd.image.name": ref,
                "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1],
            },
        }],
    }
    tmp = layout.with_name(layout.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    blob_dir = tmp / "blobs" / "sha256"
    blob_dir.mkdir(parents=True)
    for digest in [manifest_digest, config_digest, *(d for d, _ in layers)]:
        target = blob_dir / digest.split(":", 1)[1]
        if not target.exists():
            os.link(store.path(digest), target)
    (tmp / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (tmp / "index.json").write_bytes(canonical_json(index))
    shutil.rmtree(layout, ignore_errors=True)
    os.replace(tmp, layout)
    return manifest_digest, config_size + sum(size for _, size in layers)


# --------------------------------------------------------------------------- containerd


def _ctr(ctr: Path | str, address: str, namespace: str, *args: str) -> list[str]:
    return [str(ctr), "--address", address, "--namespace", namespace, *args]


def containerd_images(*, ctr: Path | str, address: str, namespace: str = "k8s.io") -> dict[str, str]:
    """ref -> manifest digest of the images containerd has."""
    result = subprocess.run(_ctr(ctr, address, namespace, "images", "ls"), capture_output=True, text=True)
    if result.returncode != 0:
        raise ImageBuildError(f"`ctr images ls` failed: {result.stderr.strip()}")
    images = {}
    for line in result.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            images[parts[0]] = parts[2]
    return images


def _containerd_blobs(ctr: Path | str, address: str, namespace: str) -> set[str]:
    result = subprocess.run(_ctr(ctr, address, namespace, "content", "ls", "--quiet"),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise ImageBuildError(f"`ctr content ls` failed: {result.stderr.strip()}")
    return set(result.stdout.split())


def import_images(images: Iterable[LocalImage], *, ctr: Path | str, address: str, namespace: str = "k8s.io") -> None:
    """Import ``images`` into containerd (and unpack them), skipping those it already has.

    All missing images go in one ``ctr images import`` stream, each shared blob once."""
    present = containerd_images(ctr=ctr, address=address, namespace=namespace)
    missing = [image for image in images if present.get(image.ref) != image.digest]
    if not missing:
        return
    # Blobs containerd already stores (a shared base or torch layer) are not sent again: its
    # importer takes them from its content store, as it does when unpacking.
    stored = _containerd_blobs(ctr, address, namespace)
    blobs: dict[str, Path] = {}
    manifests = []
    for image in missing:
        index = json.loads((image.archive / "index.json").read_text())
        manifests += index["manifests"]
        for path in (image.archive / "blobs" / "sha256").iterdir():
            if f"sha256:{path.name}" not in stored:
                blobs.setdefault(path.name, path)
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests}
    command = _ctr(ctr, address, namespace, "images", "import", "-")
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with tarfile.open(fileobj=process.stdin, mode="w|") as tar:
            for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                               ("index.json", canonical_json(index))):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            for digest_hex, path in sorted(blobs.items()):
                tar.add(str(path), arcname=f"blobs/sha256/{digest_hex}")
    except BrokenPipeError:
        pass
    finally:
        try:
            process.stdin.close()
        except BrokenPipeError:
            pass
    output = process.stdout.read().decode(errors="replace")
    if process.wait() != 0:
        raise ImageBuildError(f"`{' '.join(command)}` failed (exit {process.returncode}): {output.strip()}")
    present = containerd_images(ctr=ctr, address=address, namespace=namespace)
    wrong = [image.ref for image in missing if present.get(image.ref) != image.digest]
    if wrong:
        raise ImageBuildError(f"containerd does not list {', '.join(wrong)} after import: {output.strip()}")
