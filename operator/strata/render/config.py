"""The configuration ConfigMap each kind owns: the file its workload pods mount.

Immutable and content-named (`<owner>-<component>-<hash of the data>`): a changed
configuration is a new ConfigMap, so a pod that restarts mid-change reads either the old
file or the new one, never half of each. The old one is pruned once the new one exists.

TrainingJob: the trainer's own config file (see render/trainer.py); Dataset: the pipeline's
(render/dataset.py). The other kinds' hold the validated spec with every default filled in,
which is also a record users can read of what the operator understood.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

import yaml

from strata.api import DATASET, FEEDBACK_POLICY, MODEL_DEPLOYMENT, TRAINING_JOB, KindInfo
from strata.api.base import StrataModel
from strata.constants import ChildPolicy
from strata.render.common import child_metadata
from strata.render.dataset import render_pipeline_config
from strata.render.trainer import TRAINER_CONFIG_FILE, render_trainer_config
from strata_workloads.data.result import CONFIG_FILE as PIPELINE_CONFIG_FILE

ConfigBuilder = Callable[[StrataModel, str], dict[str, Any]]


def _resolved_spec(spec: StrataModel, _name: str) -> dict[str, Any]:
    return spec.to_wire()


# Per kind: the component the config feeds, the file name it is mounted as, and its content.
CONFIG_FILES: dict[str, tuple[str, str, ConfigBuilder]] = {
    DATASET.kind: ("pipeline", PIPELINE_CONFIG_FILE, render_pipeline_config),
    TRAINING_JOB.kind: ("trainer", TRAINER_CONFIG_FILE, render_trainer_config),
    MODEL_DEPLOYMENT.kind: ("serving", "serving.yaml", _resolved_spec),
    FEEDBACK_POLICY.kind: ("monitor", "policy.yaml", _resolved_spec),
}


# Hex digits of the content hash in the name: enough that two configurations of one owner
# never share a name in practice, short enough to read.
HASH_LENGTH = 10
MAX_NAME_LENGTH = 253


def content_hash(data: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:HASH_LENGTH]


def config_map_name(info: KindInfo, owner_name: str, data: dict[str, str]) -> str:
    component, _, _ = CONFIG_FILES[info.kind]
    suffix = f"-{component}-{content_hash(data)}"
    return owner_name[: MAX_NAME_LENGTH - len(suffix)] + suffix


def render_config_map(info: KindInfo, owner: dict[str, Any], spec: StrataModel,
                      config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The kind's config file from its spec (or `config`, built by the controller from more)."""
    component, filename, build = CONFIG_FILES[info.kind]
    name = owner["metadata"]["name"]
    data = {filename: yaml.safe_dump(build(spec, name) if config is None else config, sort_keys=True)}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(info, owner, config_map_name(info, name, data), component, ChildPolicy.CREATE_ONCE),
        "immutable": True,
        "data": data,
    }
