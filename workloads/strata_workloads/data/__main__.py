"""``python -m strata_workloads.data --config F --out DIR``: build one dataset version under DIR.

Prints one JSON line (version, path, created, counts). Exit codes: 0 done (also when the version
already existed), 2 bad configuration (the message names the setting), 1 a source cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys

from strata_workloads.data.config import ConfigError, load_config
from strata_workloads.data.sources import SourceError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m strata_workloads.data", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="pipeline configuration (YAML or JSON)")
    parser.add_argument("--out", required=True, help="directory holding the versions; each is a sub-directory")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"strata-data: bad configuration: {error}", file=sys.stderr)
        return 2
    from strata_workloads.data.pipeline import run_pipeline

    try:
        result = run_pipeline(config, args.out)
    except SourceError as error:
        print(f"strata-data: {error}", file=sys.stderr)
        return 1
    report = result.manifest.pipeline
    print(json.dumps({
        "version": result.version, "path": str(result.path), "created": result.created,
        "records": sum(split.rows for split in result.manifest.splits.values()),
        "steps": [step.model_dump(by_alias=True) for step in report.steps] if report else [],
        "quarantined": report.quarantined if report else 0,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
