"""What the image and audio pipeline tests check alike: planted problems counted, and two
shards publishing the version one does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests_support import version_files

from strata_workloads.data.config import PipelineConfig
from strata_workloads.data.pipeline import PipelineResult, map_shard, run_pipeline


def assert_planted_problems_counted(result: PipelineResult, expected: dict[str, Any], kind: str) -> None:
    """`expected`: read, quarantined (each for `kind`: "image" or "audio"), missingDropped,
    filtered, duplicates, nearDuplicates and the real records kept."""
    statistics = result.manifest.pipeline.statistics
    steps = {step.step: (step.records_in, step.records_out) for step in result.manifest.pipeline.steps}
    assert steps["read"] == (expected["read"], expected["read"])
    assert statistics["quarantined"] == expected["quarantined"]
    assert statistics["quarantineReasons"] == {kind: expected["quarantined"]}
    assert statistics["missing"]["dropped"] == expected["missingDropped"]
    assert statistics["filtered"] == expected["filtered"]
    assert statistics["duplicates"] == expected["duplicates"]
    assert statistics["nearDuplicates"] == expected["nearDuplicates"]
    assert steps["nearDedup"][1] == expected["real"] == statistics["recordsOut"]


def assert_two_shards_publish_what_one_does(config: PipelineConfig, tmp_path: Path) -> None:
    """Shard 1 maps its share first; shard 0 then merges it with its own and commits."""
    one = run_pipeline(config, tmp_path / "one")
    map_shard(config, tmp_path / "two", 1, 2, "run-1")
    two = run_pipeline(config, tmp_path / "two", shards=2, run_id="run-1", shard_timeout=60)
    assert two.version == one.version
    assert two.manifest.model_dump(exclude={"created_at"}) == one.manifest.model_dump(exclude={"created_at"})
    assert version_files(two.path) == version_files(one.path)
