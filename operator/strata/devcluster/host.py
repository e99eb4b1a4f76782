"""What the real node changes on the host, and how `down` undoes it.

A kubelet with containerd, CNI and kube-proxy is not a self-contained process: it needs a
bridge, IP forwarding and cgroups, and it leaves mounts, network namespaces, iptables
chains and changed sysctls behind. Everything here is recorded in `<state>/host.json`
when first changed, so `down` restores what was there before, also after a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Self

from .network import NODE_BRIDGE, NODE_IP, NODE_POD_CIDR

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Node pods' cgroups live under this parent in every v1 hierarchy (kubelet's cgroupRoot),
# so removing them never touches anyone else's.
NODE_CGROUP_PARENT = "strata-dev"
NETNS_DIR = Path("/var/run/netns")

# sysctls that the node's components set: ip_forward and route_localnet for us, the rest
# by kubelet (kernel tunables it insists on) and by bridged pod traffic through iptables.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
# Chains that kube-proxy, kubelet and the CNI plugins create.
_OUR_CHAIN = re.compile(r"^(KUBE-|CNI-)")
# Paths kubelet writes outside its root directory.
KUBELET_HOST_DIRS = (Path("/var/log/containers"), Path("/var/log/pods"),
                     Path("/var/lib/kubelet"))


class HostError(RuntimeError):
    """The host cannot run the real node (missing tool, no permission)."""


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise HostError(f"`{' '.join(command)}` failed: {result.stderr.strip()}")
    return result


def read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        Path("/proc/sys", name).write_text(value)


class JsonRecord:
    """A dataclass kept as a JSON file in the state directory, so a later `strata dev down`
    (even after a crash) knows what to undo."""

    @classmethod
    def load(cls, path: Path) -> Self | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


@dataclass
class HostRecord(JsonRecord):
    """What the host looked like before the node changed it."""

    sysctls: dict[str, str] = field(default_factory=dict)
    netns_before: list[str] = field(default_factory=list)
    created_dirs: list[str] = field(default_factory=list)


def prepare(state_dir: Path) -> None:
    """Record the host's state, then set up the bridge, sysctls and cgroup parents."""
    if os.geteuid() != 0:
        raise HostError("the real node needs root (kubelet, containerd and CNI set up "
                        "namespaces, cgroups and iptables); run as root or use --no-real-node")
    record_path = state_dir / "host.json"
    if HostRecord.load(record_path) is None:  # keep the oldest record across failed starts
        record = HostRecord(
            sysctls={name: value for name in SYSCTLS if (value := read_sysctl(name)) is not None},
            netns_before=sorted(p.name for p in NETNS_DIR.glob("*")) if NETNS_DIR.is_dir() else [],
            created_dirs=[str(d) for d in KUBELET_HOST_DIRS if not d.exists()],
        )
        record.save(record_path)
    ensure_bridge()
    write_sysctl("net/ipv4/ip_forward", "1")
    # Replies from a Service backend to a client on the same bridge must pass iptables to be
    # un-NATed (kube-proxy also masquerades all Service traffic, which covers hosts without
    # br_netfilter).
    write_sysctl("net/bridge/bridge-nf-call-iptables", "1")
    for hierarchy in cgroup_hierarchies():
        (hierarchy / NODE_CGROUP_PARENT).mkdir(exist_ok=True)


def ensure_bridge() -> None:
    """The pods' bridge with the node IP, created before anything listens on that IP."""
    if not Path(f"/sys/class/net/{NODE_BRIDGE}").exists():
        _run("ip", "link", "add", NODE_BRIDGE, "type", "bridge")
    prefix = NODE_POD_CIDR.split("/")[1]
    addresses = _run("ip", "-4", "-o", "addr", "show", "dev", NODE_BRIDGE).stdout
    if f"{NODE_IP}/{prefix}" not in addresses:
        _run("ip", "addr", "add", f"{NODE_IP}/{prefix}", "dev", NODE_BRIDGE)
    _run("ip", "link", "set", NODE_BRIDGE, "up")


def cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup v1 hierarchies (kubelet wants its cgroupRoot in each, name=systemd too)."""
    hierarchies = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fstype, _, options = (after.split() + ["", "", ""])[:3]
        if fstype != "cgroup":
            continue
        hierarchies.append(Path(before.split()[4]))
    return hierarchies


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below `directory`, deepest first."""
    prefix = str(directory.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=lambda p: p.count("/"), reverse=True)


def unmount_all(directory: Path) -> None:
    for point in mounts_under(directory):
        _run("umount", "-l", point, check=False)


def remove_netns(keep: list[str]) -> None:
    """Network namespaces that CNI made for the node's pods (their veths go with them)."""
    if not NETNS_DIR.is_dir():
        return
    for path in NETNS_DIR.glob("cni-*"):
        if path.name in keep:
            continue
        _run("umount", "-l", str(path), check=False)
        with contextlib.suppress(OSError):
            path.unlink()


def remove_cgroups() -> None:
    """Every cgroup below our parent, children first (each must be empty of tasks)."""
    for hierarchy in cgroup_hierarchies():
        parent = hierarchy / NODE_CGROUP_PARENT
        if not parent.is_dir():
            continue
        for directory in sorted((p for p in parent.rglob("*") if p.is_dir()),
                                key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            parent.rmdir()


def kill_cgroup_tasks() -> None:
    """SIGKILL whatever still runs in the node's cgroups (containers whose shim died)."""
    for hierarchy in cgroup_hierarchies():
        parent = hierarchy / NODE_CGROUP_PARENT
        if not parent.is_dir():
            continue
        for procs in parent.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), 9)


def sweep_iptables() -> None:
    """Delete the KUBE-* and CNI-* chains and every rule that jumps to them, in all tables."""
    for tool in ("iptables", "ip6tables"):
        for table in ("nat", "filter", "mangle"):
            listing = _run(tool, "-w", "-t", table, "-S", check=False)
            if listing.returncode != 0:
                continue
            chains = []
            for line in listing.stdout.splitlines():
                parts = line.split()
                if parts[:1] == ["-N"] and _OUR_CHAIN.match(parts[1]):
                    chains.append(parts[1])
                elif parts[:1] == ["-A"] and not _OUR_CHAIN.match(parts[1]) and any(
                        _OUR_CHAIN.match(word) for word in parts[2:]):
                    # A builtin chain's rule that jumps into one of ours.
                    _run(tool, "-w", "-t", table, "-D", *shlex.split(line[3:]), check=False)
            for chain in chains:
                _run(tool, "-w", "-t", table, "-F", chain, check=False)
            for chain in chains:
                _run(tool, "-w", "-t", table, "-X", chain, check=False)


def delete_bridge() -> None:
    if Path(f"/sys/class/net/{NODE_BRIDGE}").exists():
        _run("ip", "link", "delete", NODE_BRIDGE, check=False)


def restore(state_dir: Path) -> None:
    """Undo what `prepare` and the node's components did; safe to run more than once."""
    record_path = state_dir / "host.json"
    record = HostRecord.load(record_path)
    kill_cgroup_tasks()
    unmount_all(state_dir)
    remove_netns(record.netns_before if record else [])
    remove_cgroups()
    sweep_iptables()
    delete_bridge()
    if record is None:
        return
    for name, value in record.sysctls.items():
        if read_sysctl(name) != value:
            write_sysctl(name, value)
    for directory in map(Path, record.created_dirs):
        _remove_tree_of_links_and_empty_dirs(directory)
    record_path.unlink(missing_ok=True)


def _remove_tree_of_links_and_empty_dirs(directory: Path) -> None:
    """Remove a directory kubelet created outside its root, if only links and dirs are left."""
    if not directory.is_dir():
        return
    for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            if path.is_symlink() or path.is_file() and path.stat().st_size == 0:
                path.unlink()
            elif path.is_dir():
                path.rmdir()
    with contextlib.suppress(OSError):
        directory.rmdir()


def snapshot() -> dict[str, object]:
    """What a test compares before `up` and after `down`: interfaces, mounts, rules, sysctls."""
    interfaces = sorted(p.name for p in Path("/sys/class/net").iterdir())
    mounts = sorted(line.split()[4] for line in
                    Path("/proc/self/mountinfo").read_text().splitlines())
    rules = {}
    for tool in ("iptables", "ip6tables"):
        for table in ("nat", "filter", "mangle"):
            listing = _run(tool, "-w", "-t", table, "-S", check=False).stdout
            rules[f"{tool}/{table}"] = sorted(listing.splitlines())
    netns = sorted(p.name for p in NETNS_DIR.glob("*")) if NETNS_DIR.is_dir() else []
    cgroups = sorted(str(h / NODE_CGROUP_PARENT) for h in cgroup_hierarchies()
                     if (h / NODE_CGROUP_PARENT).exists())
    return {
        "interfaces": interfaces,
        "mounts": mounts,
        "iptables": rules,
        "netns": netns,
        "cgroups": cgroups,
        "sysctls": {name: read_sysctl(name) for name in SYSCTLS},
    }
