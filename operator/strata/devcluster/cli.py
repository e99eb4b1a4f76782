"""`strata dev build|images|up|down|status|kubeconfig`: the local control plane from the shell.

`strata.cli` delegates here with `main(argv)` (argv without the leading "dev"), or mounts
the subcommands onto its own parser with `add_subcommands(subparsers)`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import binaries
from .cluster import DEFAULT_STATE_DIR, DevClusterError, default_nodes, down, reset, status, up
from .network import REAL_NODE_NAME


def _cmd_build(args: argparse.Namespace) -> int:
    for name, path in binaries.ensure_binaries().items():
        print(f"{name}: {path}")
    return 0


def _cmd_images(args: argparse.Namespace) -> int:
    from . import images  # imports packaging etc. only when images are wanted

    started = time.monotonic()
    try:
        built = images.ensure_images(args.only or None, log=lambda line: print(line, flush=True))
    except images.ImageBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(images.format_table(built.values()))
    print(f"{len(built)} images in {time.monotonic() - started:.1f}s (cache: {images.images_cache()})")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    if args.reset:
        reset(args.state_dir)
    started = time.monotonic()
    nodes = default_nodes(args.cpu_nodes, args.gpu_nodes, args.gpus_per_node)
    cluster = up(args.state_dir, nodes=nodes, startup_timeout=args.timeout,
                 real_node=args.real_node, kueue=args.kueue, monitoring=args.monitoring,
                 # The kubelet's sandboxes need pause, whatever else was asked for.
                 images=tuple(dict.fromkeys(["pause", *args.images])) if args.images else None)
    print(f"Dev cluster up in {time.monotonic() - started:.1f}s at {cluster.server}")
    names = [node.name for node in nodes] + ([REAL_NODE_NAME + " (real)"] if args.real_node else [])
    print(f"  nodes: {', '.join(names)}")
    for name, ref in cluster.image_refs.items():
        print(f"  image {name}: {ref}")
    if cluster.kueue_ports is not None:
        print(f"  kueue: webhook at https://127.0.0.1:{cluster.kueue_ports.webhook}; queues: "
              "kubectl apply -n <namespace> -f examples/kueue/kueue.yaml")
    if cluster.monitoring_ports is not None:
        print(f"  monitoring: Prometheus at http://127.0.0.1:{cluster.monitoring_ports.prometheus}; "
              "custom metrics: kubectl get --raw /apis/custom.metrics.k8s.io/v1beta1")
    print(f"  logs:  {cluster.state_dir / 'logs'}")
    print(f"  export KUBECONFIG={cluster.kubeconfig}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    stopped = down(args.state_dir)
    print(f"Stopped: {', '.join(stopped)}" if stopped else "Nothing was running.")
    if args.reset:
        reset(args.state_dir)
        print(f"Removed {Path(args.state_dir).resolve()}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from strata.demo import running_operator  # the operator `strata demo` runs against this cluster

    report = status(args.state_dir)
    report["operator"] = running_operator(args.state_dir)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, pid in report["running"].items():
            print(f"{name:<24} running (pid {pid})")
        for name in report["stopped"]:
            print(f"{name:<24} stopped")
        if report["operator"] is not None:
            print(f"{'operator (strata demo)':<24} running (pid {report['operator']})")
        if report["server"]:
            print(f"server: {report['server']}\nkubeconfig: {report['kubeconfig']}")
    # Like `systemctl is-active`: non-zero unless everything runs.
    return 0 if not report["stopped"] else 3


def _cmd_kubeconfig(args: argparse.Namespace) -> int:
    path = Path(args.state_dir).resolve() / "kubeconfig"
    if not path.is_file():
        print(f"No kubeconfig at {path}; run `strata dev up` first.", file=sys.stderr)
        return 1
    print(path if args.path else path.read_text(), end="\n" if args.path else "")
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add build/up/down/status/kubeconfig to an existing `dev` subparsers group."""

    def add(name: str, handler, help: str) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help, description=help)
        parser.set_defaults(dev_handler=handler)
        if name not in ("build", "images"):
            parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                                help="cluster state directory (default: %(default)s)")
        return parser

    add("build", _cmd_build, "Build (or locate) the control-plane binaries.")

    images_parser = add("images", _cmd_images,
                        "Build (or reuse from the cache) the real node's container images.")
    images_parser.add_argument("--only", action="append", metavar="NAME",
                               help="build only this image (repeatable; default: all)")

    up_parser = add("up", _cmd_up, "Start the dev cluster in the background.")
    up_parser.add_argument("--cpu-nodes", type=int, default=2)
    up_parser.add_argument("--gpu-nodes", type=int, default=2)
    up_parser.add_argument("--gpus-per-node", type=int, default=8)
    up_parser.add_argument("--timeout", type=float, default=120.0,
                           help="seconds to wait for each component (default: %(default)s)")
    up_parser.add_argument("--reset", action="store_true",
                           help="delete existing state (data, certs) first")
    up_parser.add_argument("--no-real-node", dest="real_node", action="store_false",
                           help="only kwok's simulated nodes: no kubelet, containerd, kube-proxy, "
                                "DNS or metrics, and nothing changed on the host (starts in seconds)")
    up_parser.add_argument("--kueue", action="store_true",
                           help="also run Kueue's controller (built on first use, minutes), which "
                                "admits suspended Jobs labelled kueue.x-k8s.io/queue-name when "
                                "their whole group fits the ClusterQueue's quota")
    up_parser.add_argument("--monitoring", action="store_true",
                           help="also run Prometheus, scraping pods' container ports named "
                                "*-metrics, and prometheus-adapter serving the chart's rules as "
                                "the custom metrics API (both built on first use, minutes)")
    up_parser.add_argument("--image", dest="images", action="append", metavar="NAME",
                           help="build and import only this image into the real node "
                                "(repeatable; default: all of Strata's images)")

    down_parser = add("down", _cmd_down, "Stop the dev cluster.")
    down_parser.add_argument("--reset", action="store_true",
                             help="also delete its state (data, certs, logs)")

    status_parser = add("status", _cmd_status, "Show which components are running.")
    status_parser.add_argument("--json", action="store_true")

    kubeconfig_parser = add("kubeconfig", _cmd_kubeconfig, "Print the admin kubeconfig.")
    kubeconfig_parser.add_argument("--path", action="store_true",
                                   help="print its path instead of its contents")


def build_parser(prog: str = "strata dev") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Local Kubernetes control plane.")
    add_subcommands(parser.add_subparsers(dest="dev_command", required=True, metavar="COMMAND"))
    return parser


def run(args: argparse.Namespace) -> int:
    """Run parsed arguments (for callers that used add_subcommands)."""
    try:
        return args.dev_handler(args)
    except (DevClusterError, binaries.BuildError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
