"""``python -m strata_workloads.data --config F [--out DIR]``: build one dataset version under DIR.

DIR is the configuration's ``output`` unless given. Prints one JSON line (version, path,
created, counts, gate verdicts) and writes the same result as the container's termination
message (:mod:`strata_workloads.data.result`, the operator's contract). Exit codes: 0 done
(also when the version already existed, and when a quality gate kept it from being promoted),
2 bad configuration (the message names the setting), 1 a source cannot be read.

A parallel run (``--shards N --run-id ID``, one process or pod per shard; the shard's index
from ``--shard`` or ``$JOB_COMPLETION_INDEX``, which an Indexed Job sets): shard 0 builds the
version once every shard has mapped its share of the input (strata_workloads.data.pipeline);
the others print and leave a one-line summary of their share, which is not a result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from strata_workloads.data.config import ConfigError, load_config
from strata_workloads.data.result import (
    EXIT_INVALID_CONFIG,
    EXIT_OK,
    EXIT_SOURCE_ERROR,
    RunResult,
    write_termination_message,
    write_termination_text,
)
from strata_workloads.data.sources import SourceError


def _fail(code: int, message: str, termination_log: str | None) -> int:
    print(f"strata-data: {message}", file=sys.stderr)
    write_termination_message(RunResult(error=message), termination_log)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m strata_workloads.data", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="pipeline configuration (YAML or JSON)")
    parser.add_argument("--out", help="directory holding the versions (default: the configuration's output)")
    parser.add_argument("--parent-version", help="the current version: lineage, and the drift gate's reference")
    parser.add_argument("--termination-log", help="where the result goes (default $STRATA_TERMINATION_LOG or "
                                                   "/dev/termination-log)")
    parser.add_argument("--shards", type=int, default=1, help="how many shards the run's input is shared among")
    parser.add_argument("--shard", type=int, help="this shard's index (default $JOB_COMPLETION_INDEX, else 0)")
    parser.add_argument("--run-id", help="the run's name, the same for all its shards (their shared directory)")
    parser.add_argument("--shard-timeout", type=float, default=24 * 3600,
                        help="how long shard 0 waits for the others (seconds)")
    args = parser.parse_args(argv)
    shard = args.shard if args.shard is not None else int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
    if args.shards < 1 or not 0 <= shard < args.shards or (args.shards > 1 and not args.run_id):
        return _fail(EXIT_INVALID_CONFIG, f"bad arguments: --shard {shard} of --shards {args.shards}"
                     f"{'' if args.run_id or args.shards == 1 else ' needs --run-id'}; the shard is 0 to shards - 1",
                     args.termination_log)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        return _fail(EXIT_INVALID_CONFIG, f"bad configuration: {error}", args.termination_log)
    if args.parent_version:
        config = config.model_copy(update={"parent_version": args.parent_version})
    out = args.out or config.output
    if not out:
        return _fail(EXIT_INVALID_CONFIG, f"bad configuration: {args.config}: output: set it, or pass --out",
                     args.termination_log)
    from strata_workloads.data import gates
    from strata_workloads.data.layout import DatasetLayoutError, read_manifest
    from strata_workloads.data.pipeline import SHARD_DONE, map_shard, run_pipeline

    try:
        if shard > 0:
            directory = map_shard(config, out, shard, args.shards, args.run_id)
            summary = json.loads((directory / SHARD_DONE).read_text()) if directory else {}
            line = json.dumps({"shard": shard, "shards": args.shards, "parts": len(summary.get("parts", [])),
                               "records": (summary.get("counts") or {}).get("read", 0),
                               "versionExists": directory is None})
            print(line)
            write_termination_text(line, args.termination_log)
            return EXIT_OK
        result = run_pipeline(config, out, shards=args.shards, run_id=args.run_id, shard_timeout=args.shard_timeout)
    except SourceError as error:
        return _fail(EXIT_SOURCE_ERROR, str(error), args.termination_log)
    report = result.manifest.pipeline
    statistics = report.statistics if report else {}
    parent_reference = None
    if config.parent_version and config.parent_version != result.version:
        try:
            parent = read_manifest(Path(out) / config.parent_version).pipeline
            parent_reference = parent.reference_statistics if parent else None
        except DatasetLayoutError as error:
            print(f"strata-data: previous version unreadable, drift not compared: {error}", file=sys.stderr)
    elif config.parent_version:
        parent_reference = report.reference_statistics if report else None
    verdicts = gates.evaluate(config.quality_gates, statistics, report.reference_statistics if report else {},
                              parent_reference, config.parent_version)
    run = RunResult(
        version=result.version, path=str(result.path), created=result.created,
        promoted=all(verdict.passed for verdict in verdicts), parent_version=config.parent_version,
        records=gates.record_counts(statistics), gates=tuple(verdicts),
        reference=report.reference_statistics.get("sketches") or {} if report else {},
    )
    print(json.dumps({
        **json.loads(run.to_message()),
        "steps": [step.model_dump(by_alias=True) for step in report.steps] if report else [],
    }))
    for verdict in run.failed_gates:
        print(f"strata-data: quality gate {verdict.name} failed: {verdict.message}; version {run.version} "
              f"is kept but not promoted", file=sys.stderr)
    write_termination_message(run, args.termination_log)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
