"""What an image copies from this host: the installed Python's files, the distributions an
image needs (with their dependencies, transitively), and the shared libraries their
extension modules link from their own wheels (read from the ELF files' dynamic sections).
"""

from __future__ import annotations

import os
import re
import stat
import struct
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .oci import Entry, ImageBuildError, file_entry

HOST_PREFIX = Path(sys.base_prefix)
HOST_SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])
PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"

# Where Python lives in every image: a neutral, world-readable path (sys.prefix there).
PREFIX = "opt/strata/python"
SITE_PACKAGES = f"{PREFIX}/lib/python{PY_VERSION}/site-packages"

ELF_MAGIC = b"\x7fELF"


# --------------------------------------------------------------------------- ELF linking


def elf_dynamic(path: Path) -> tuple[list[str], list[str]] | None:
    """(DT_NEEDED names, RPATH/RUNPATH entries) of a 64-bit little-endian ELF file, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != ELF_MAGIC or head[4] != 2 or head[5] != 1:
                return None
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            loads, dynamic = [], None
            for i in range(phnum):
                p_type, _, offset, vaddr, _, filesz, _, _ = struct.unpack_from("<IIQQQQQQ", table, i * phentsize)
                if p_type == 1:
                    loads.append((vaddr, offset, filesz))
                elif p_type == 2:
                    dynamic = (offset, filesz)
            if dynamic is None:
                return [], []
            f.seek(dynamic[0])
            raw = f.read(dynamic[1])
            tags: list[tuple[int, int]] = []
            for i in range(0, len(raw) - 15, 16):
                tag, value = struct.unpack_from("<qQ", raw, i)
                if tag == 0:
                    break
                tags.append((tag, value))
            strtab = next((v for t, v in tags if t == 5), None)
            strsz = next((v for t, v in tags if t == 10), 0)
            if strtab is None:
                return [], []
            offset = next((o + strtab - va for va, o, sz in loads if va <= strtab < va + sz), None)
            if offset is None:
                return [], []
            f.seek(offset)
            strings = f.read(strsz)
    except OSError:
        return None

    def name(at: int) -> str:
        return strings[at:strings.index(b"\0", at)].decode()

    needed = [name(v) for t, v in tags if t == 1]
    search = [p for t, v in tags if t in (15, 29) for p in name(v).split(":") if p]
    return needed, search


def linked_closure(roots: Iterable[Path], extra_dirs: Iterable[Path] = ()) -> set[Path]:
    """Every file the dynamic linker would load for ``roots`` from their RPATH/RUNPATH (with
    $ORIGIN) or ``extra_dirs``. Libraries it would find elsewhere (the system's) are not
    followed: the Debian base provides those."""
    found: set[Path] = set()
    queue = [(Path(root), ()) for root in roots]
    extra = tuple(Path(d) for d in extra_dirs)
    seen: set[Path] = set()
    while queue:
        path, inherited = queue.pop()
        real = path.resolve()
        if real in seen:
            continue
        seen.add(real)
        dynamic = elf_dynamic(real)
        if dynamic is None:
            continue
        needed, search = dynamic
        origin = str(path.parent)
        dirs = tuple(Path(p.replace("$ORIGIN", origin).replace("${ORIGIN}", origin)) for p in search)
        # DT_RPATH applies to a library's dependencies too; follow it down, as ld.so does.
        chain = dirs + inherited
        for lib in needed:
            for directory in chain + extra:
                candidate = Path(os.path.normpath(directory / lib))
                if candidate.exists():
                    found.add(candidate)
                    if candidate.is_symlink():
                        found.add(candidate.resolve())
                    queue.append((candidate, chain))
                    break
    return found


# --------------------------------------------------------------------------- Python distributions


def installed_distributions() -> dict[str, metadata.Distribution]:
    dists = {}
    for dist in metadata.distributions(path=[str(HOST_SITE_PACKAGES)]):
        dists.setdefault(canonicalize_name(dist.metadata["Name"]), dist)
    return dists


def dist_closure(requirements: Iterable[str], installed: dict[str, metadata.Distribution]) -> set[str]:
    """Canonical names of the installed distributions ``requirements`` need, transitively
    (with the dependencies their requested extras add)."""
    visited: set[tuple[str, frozenset[str]]] = set()
    pending = [Requirement(r) for r in requirements]
    while pending:
        requirement = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        extras = frozenset(canonicalize_name(e) for e in requirement.extras)
        if (name, extras) in visited:
            continue
        visited.add((name, extras))
        dist = installed.get(name)
        if dist is None:
            raise ImageBuildError(f"{requirement} is needed in an image but is not installed; "
                                  "run `bash .ci/install` (or pip install it)")
        for line in dist.requires or []:
            child = Requirement(line)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in ("", *extras)):
                child.marker = None
                pending.append(child)
    return {name for name, _ in visited}


def is_cuda_library(dist: metadata.Distribution) -> bool:
    """The NVIDIA CUDA wheels (nvidia-cublas, ...) install only into the `nvidia` namespace
    package; their files are copied only where a kept shared library links them."""
    tops = {file.parts[0] for file in dist.files or [] if not file.parts[0].endswith(".dist-info")}
    return tops == {"nvidia"}


_CUDA_LIBRARIES: dict[int, frozenset[str]] = {}


def cuda_libraries(installed: dict[str, metadata.Distribution]) -> frozenset[str]:
    """Names of the CUDA library wheels among ``installed`` (reading every RECORD: once)."""
    key = id(installed)
    if key not in _CUDA_LIBRARIES:
        _CUDA_LIBRARIES.clear()
        _CUDA_LIBRARIES[key] = frozenset(n for n, d in installed.items() if is_cuda_library(d))
    return _CUDA_LIBRARIES[key]


def _image_path(host: Path) -> str | None:
    try:
        relative = host.relative_to(HOST_PREFIX)
    except ValueError:
        return None
    return f"{PREFIX}/{relative}"


_SHEBANG = re.compile(rb"^#!.*python[0-9.]*")


def dist_files(dist: metadata.Distribution) -> Iterator[Path]:
    listed = set()
    for file in dist.files or []:
        path = Path(os.path.normpath(dist.locate_file(file)))
        listed.add(path)
        yield path
    # pip records compiled .pyc files, but not every installer does: keep startup fast.
    for path in list(listed):
        if path.suffix == ".py" and path.parent.name != "__pycache__":
            pyc = path.parent / "__pycache__" / f"{path.stem}.{sys.implementation.cache_tag}.pyc"
            if pyc not in listed and pyc.exists():
                yield pyc


def host_file_entries(paths: Iterable[Path]) -> list[Entry]:
    """Entries for host files under the Python prefix, placed under ``/opt/strata/python``.
    Scripts in bin/ get a shebang for the image's interpreter."""
    entries: dict[str, Entry] = {}
    bin_dir = HOST_PREFIX / "bin"
    for path in paths:
        target = _image_path(path)
        if target is None or target in entries:
            continue
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            entries[target] = Entry(target, "symlink", 0o777, target=os.readlink(path), mtime=int(st.st_mtime))
        elif stat.S_ISREG(st.st_mode):
            data = None
            if path.parent == bin_dir:
                with open(path, "rb") as f:
                    head = f.readline()
                if _SHEBANG.match(head):
                    data = _SHEBANG.sub(f"#!/{PREFIX}/bin/python{PY_VERSION}".encode(), path.read_bytes(), count=1)
            entries[target] = file_entry(target, path, st, data)
    return list(entries.values())
