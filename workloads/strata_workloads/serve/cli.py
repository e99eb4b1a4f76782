"""Command line of the monitoring sidecar."""

from __future__ import annotations

import argparse
import logging
import sys

from strata_workloads.serve.config import CONFIG_ENV, ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m strata_workloads.serve",
                                     description="Strata's monitoring sidecar in front of Triton.")
    parser.add_argument("--config", help=f"sidecar config file (default: ${CONFIG_ENV})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s supervisor %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from strata_workloads.serve.supervisor import Supervisor

    return Supervisor(config).run()
