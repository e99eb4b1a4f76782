"""The resolved-configuration ConfigMap each kind owns.

It holds the validated spec with every default filled in: the exact input the kind's pods
mount (trainer, pipeline, Triton sidecar, monitor), and a record users can read of what
the operator understood.
"""

from __future__ import annotations

from typing import Any

import yaml

from strata.api import KindInfo
from strata.api.base import StrataModel
from strata.render.common import child_metadata

# Per kind: the component the config feeds, and the file name it is mounted as.
CONFIG_COMPONENTS: dict[str, tuple[str, str]] = {
    "Dataset": ("pipeline", "pipeline.yaml"),
    "TrainingJob": ("trainer", "trainer.yaml"),
    "ModelDeployment": ("serving", "serving.yaml"),
    "FeedbackPolicy": ("monitor", "policy.yaml"),
}


def config_map_name(info: KindInfo, owner_name: str) -> str:
    component, _ = CONFIG_COMPONENTS[info.kind]
    return f"{owner_name}-{component}"


def render_config_map(info: KindInfo, owner: dict[str, Any], spec: StrataModel) -> dict[str, Any]:
    component, filename = CONFIG_COMPONENTS[info.kind]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(info, owner, config_map_name(info, owner["metadata"]["name"]), component),
        "data": {filename: yaml.safe_dump(spec.to_wire(), sort_keys=True)},
    }
