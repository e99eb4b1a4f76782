"""The `strata` command: run the operator, generate CRDs, drive the local dev cluster."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# The CRDs are written twice: for kubectl users, and inside the Helm chart.
DEFAULT_CRD_DIRS = [Path("crds"), Path("helm/strata/crds")]


def _keep_out_of_the_operator() -> None:
    """The operator process loads no credential plugins it never uses.

    The kubernetes client imports google-auth only to support the legacy `gcp` auth-provider
    in kubeconfigs (removed from kubectl in 1.26 for the exec plugin, which still works), and
    google-auth imports `cryptography`. Marked absent here, the client carries on without it.
    """
    for module in ("google.auth", "google.auth.transport.requests"):
        sys.modules.setdefault(module, None)  # type: ignore[arg-type]


def _run(args: argparse.Namespace) -> int:
    _keep_out_of_the_operator()
    import kopf

    if args.kubeconfig:
        os.environ["KUBECONFIG"] = str(args.kubeconfig)
    if args.metrics_port is not None:
        os.environ["STRATA_METRICS_PORT"] = str(args.metrics_port)

    import strata.controllers  # noqa: F401 - importing registers the handlers

    kopf.configure(verbose=args.verbose)
    _start_operator(kopf, args)
    return 0


def _start_operator(kopf, args: argparse.Namespace) -> None:
    """Runs until stopped. Its own function so a test can see what `strata run` imported."""
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness,
    )


def _crds(args: argparse.Namespace) -> int:
    from strata.api.crd import REGENERATE_COMMAND, crd_drift, write_crds

    directories = args.out or DEFAULT_CRD_DIRS
    if args.check:
        stale = 0
        for directory in directories:
            diffs = crd_drift(directory)
            if diffs:
                sys.stdout.write("".join(diffs))
                print(f"\n{directory}/ is out of date with the API models; regenerate with: {REGENERATE_COMMAND}")
                stale += 1
            else:
                print(f"{directory}/ matches the API models.")
        return 1 if stale else 0
    for directory in directories:
        for path in write_crds(directory):
            print(f"wrote {path}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from strata.validate import validate_files

    reports = validate_files(args.files)
    for report in reports:
        if report.problems:
            print("\n".join(report.problems))
        else:
            print(f"{report.path}: {report.checked} Strata object{'' if report.checked == 1 else 's'} valid")
    objects = sum(report.checked for report in reports)
    problems = sum(len(report.problems) for report in reports)
    if not reports:
        print("No YAML files found.")
        return 1
    print(f"Checked {len(reports)} file{'' if len(reports) == 1 else 's'}, {objects} Strata object{'' if objects == 1 else 's'}: "
          + (f"{problems} problem{'' if problems == 1 else 's'}." if problems else "all valid."))
    return 1 if problems else 0


def _review(args: argparse.Namespace) -> int:
    from strata.k8s import current_namespace
    from strata.review import ReviewError, list_review, resolve_review

    if args.kubeconfig:
        os.environ["KUBECONFIG"] = str(args.kubeconfig)
    namespace = args.namespace or current_namespace()
    try:
        if args.review_command == "list":
            print(list_review(namespace, args.policy))
        else:
            print(resolve_review(namespace, args.policy, args.id, args.verdict))
    except ReviewError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from strata.demo import run_demo, stop_demo

    if args.down:
        return stop_demo(Path(args.state_dir))
    return run_demo(Path(args.state_dir), args.examples, real_node=args.real_node)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strata", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator against the current kubeconfig context")
    run.add_argument("-n", "--namespace", action="append", help="watch only these namespaces (repeatable)")
    run.add_argument("--liveness", default="http://0.0.0.0:8081/healthz", help="health endpoint URL")
    run.add_argument("--kubeconfig", type=Path, help="kubeconfig to use (default: in-cluster, then $KUBECONFIG)")
    run.add_argument("--metrics-port", type=int, help="Prometheus metrics port (default 8080; 0 disables)")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=_run)

    crds = commands.add_parser("crds", help="generate CRDs from the API models")
    crds.add_argument(
        "--out", type=Path, action="append", help="directory to write, repeatable (default: crds and helm/strata/crds)"
    )
    crds.add_argument("--check", action="store_true", help="exit 1 if the directory differs from the models")
    crds.set_defaults(func=_crds)

    validate = commands.add_parser(
        "validate", help="check Strata manifests offline, with the API server's rules (CEL included)"
    )
    validate.add_argument("files", nargs="+", type=Path, help="YAML files or directories")
    validate.set_defaults(func=_validate)

    dev = commands.add_parser("dev", help="the local control plane: build | up | down | status | kubeconfig")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    if (sys.argv[1:] if argv is None else argv)[:1] != ["run"]:
        # The dev cluster's code (and its certificate library) stays out of `strata run`.
        from strata.devcluster.cli import add_subcommands, run as run_dev

        add_subcommands(dev_commands)
        dev.set_defaults(func=run_dev)

    review = commands.add_parser("review", help="list and resolve the outputs a FeedbackPolicy flagged for review")
    review_commands = review.add_subparsers(dest="review_command", required=True, metavar="COMMAND")
    review_list = review_commands.add_parser("list", help="the open items of a FeedbackPolicy's review queue")
    review_resolve = review_commands.add_parser(
        "resolve", help="record a verdict (the annotation review.strata.dev/ID=VERDICT on the policy)")
    for sub in (review_list, review_resolve):
        sub.add_argument("policy", metavar="POLICY")
        sub.add_argument("-n", "--namespace", help="the policy's namespace (default: the kubeconfig context's)")
        sub.add_argument("--kubeconfig", type=Path, help="kubeconfig to use (default: $KUBECONFIG, ~/.kube/config)")
    review_resolve.add_argument("id", metavar="ID", help="the item's id, as `strata review list` shows it")
    review_resolve.add_argument("verdict", choices=("approve", "reject"))
    review.set_defaults(func=_review)

    demo = commands.add_parser(
        "demo", help="start the dev cluster, install CRDs, run the operator, and run the whole loop "
                     "(examples/loop: data, training, serving, feedback, retraining, promotion)"
    )
    demo.add_argument("--state-dir", default=".strata/dev")
    demo.add_argument("--examples", type=Path,
                      help="apply these manifests (a file or a directory) and wait until each is reported on, "
                           "instead of running the loop")
    demo.add_argument("--down", action="store_true", help="stop the operator and the dev cluster")
    demo.add_argument("--no-real-node", dest="real_node", action="store_false",
                      help="start the dev cluster with kwok's simulated nodes only (no kubelet, "
                           "nothing changed on the host)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
