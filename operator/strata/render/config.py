"""The configuration ConfigMap each kind owns: the file its workload pods mount.

TrainingJob: the trainer's own config file (see render/trainer.py). The other kinds'
workloads are not built yet, so theirs hold the validated spec with every default filled
in, which is also a record users can read of what the operator understood.
"""

from __future__ import annotations

from typing import Any, Callable

import yaml

from strata.api import DATASET, FEEDBACK_POLICY, MODEL_DEPLOYMENT, TRAINING_JOB, KindInfo
from strata.api.base import StrataModel
from strata.render.common import child_metadata
from strata.render.trainer import TRAINER_CONFIG_FILE, render_trainer_config

ConfigBuilder = Callable[[StrataModel, str], dict[str, Any]]


def _resolved_spec(spec: StrataModel, _name: str) -> dict[str, Any]:
    return spec.to_wire()


# Per kind: the component the config feeds, the file name it is mounted as, and its content.
CONFIG_FILES: dict[str, tuple[str, str, ConfigBuilder]] = {
    DATASET.kind: ("pipeline", "pipeline.yaml", _resolved_spec),
    TRAINING_JOB.kind: ("trainer", TRAINER_CONFIG_FILE, render_trainer_config),
    MODEL_DEPLOYMENT.kind: ("serving", "serving.yaml", _resolved_spec),
    FEEDBACK_POLICY.kind: ("monitor", "policy.yaml", _resolved_spec),
}


def config_map_name(info: KindInfo, owner_name: str) -> str:
    component, _, _ = CONFIG_FILES[info.kind]
    return f"{owner_name}-{component}"


def render_config_map(info: KindInfo, owner: dict[str, Any], spec: StrataModel) -> dict[str, Any]:
    component, filename, build = CONFIG_FILES[info.kind]
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(info, owner, config_map_name(info, name), component),
        "data": {filename: yaml.safe_dump(build(spec, name), sort_keys=True)},
    }
