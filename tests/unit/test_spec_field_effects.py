"""Every TrainingJob spec field has an effect: it changes the trainer's rendered configuration,
or the operator consumes it itself (listed below, each with where).

The fields are walked from the spec's schema, so a field added to the API fails here until it
is rendered or listed.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from strata.api import TRAINING_JOB
from strata.api.crd import openapi_schema
from strata.render.trainer import render_trainer_config
from strata.validate import object_problems
from strata.constants import API_VERSION
from tests_support import example_spec

# Spec fields (dotted paths; a path covers everything under it) that the operator acts on
# itself rather than rendering into the trainer's configuration file.
OPERATOR_CONSUMED = {
    # The worker group: the Indexed Job (render/training_job.py) sets completions/parallelism
    # from nodes, the GPU request from gpusPerNode and gpuResource, nodeSelector, tolerations
    # and priorityClassName on the pod, and the kueue.x-k8s.io/queue-name label.
    "topology": "Indexed Job renderer (render/training_job.py): parallelism, GPU requests, scheduling",
    "resources": "Indexed Job renderer: each worker container's CPU and memory requests and limits",
    "image": "Indexed Job renderer: the worker container's image (the operator's default when unset)",
    "retries": "TrainingJob renderer (plan_attempts): how many failed attempts of the worker group are restarted",
    "suspend": "TrainingJob renderer (plan_attempts): the running attempt's Job is stopped; resume starts the next",
    # The Dataset: the controller resolves it (and its current version when unpinned) and the
    # Job mounts that version at DATA_DIR, which is what the trainer reads.
    "dataset.name": "TrainingJob controller (references) and Indexed Job renderer: the Dataset volume",
    "dataset.version": "TrainingJob controller: which Dataset version is mounted at DATA_DIR; status.datasetVersion",
    "checkpoints.storage": "Indexed Job renderer: the volume mounted at CHECKPOINT_DIR (a scratch PVC when unset)",
    "export.tritonRepository": "Indexed Job renderer: the volume mounted at EXPORT_DIR",
}
# Listed above before the field exists (none now).
FIELDS_BEING_ADDED: set[str] = set()

SPEC_SCHEMA = openapi_schema(TRAINING_JOB.spec_model)


def leaves(node: dict[str, Any], path: str = "") -> dict[str, dict[str, Any]]:
    """Dotted path -> schema node of every field with no named fields under it."""
    if node.get("type") == "object" and "properties" in node:
        found = {}
        for name, child in node["properties"].items():
            found.update(leaves(child, f"{path}.{name}" if path else name))
        return found
    return {path: node}


LEAVES = leaves(SPEC_SCHEMA)


def consumer(path: str) -> str | None:
    return next((where for prefix, where in OPERATOR_CONSUMED.items()
                 if path == prefix or path.startswith(prefix + ".")), None)


# Specs to change one field of: the example, as each family (a size setting is read by some
# families only), with the optional sections present so that their fields can be changed.
def bases() -> list[dict[str, Any]]:
    found = []
    for family in SPEC_SCHEMA["properties"]["model"]["properties"]["family"]["enum"]:
        spec = copy.deepcopy(example_spec("TrainingJob"))
        spec["model"] = {"family": family}
        spec["tracking"] = {"mlflowUri": "http://mlflow.example:5000"}
        spec["validation"] = {"earlyStopping": {"metric": "valLoss"}}
        found.append(spec)
    return found


# Strings with no enum: a few shapes, each kept only where the field's pattern takes it.
STRINGS = ("x", "strata-experiment", "https://mlflow.example:5000", "http://other.example")


def candidates(node: dict[str, Any]) -> list[Any]:
    """Values to try for a scalar field: its enum, or its bounds and a few between."""
    if "enum" in node:
        return list(node["enum"])
    kind = node.get("type")
    if kind == "boolean":
        return [True, False]
    if kind == "string":
        return list(STRINGS)
    if kind in ("integer", "number"):
        low, high = node.get("minimum", 0), node.get("maximum", 10**6)
        values = [low, high, (low + high) / 2, low + 1, low + 2, low + 10, node.get("default", low) * 2]
        if kind == "integer":
            values = [int(v) for v in values]
        return [v for v in values if low <= v <= high
                and not (node.get("exclusiveMinimum") and v == low) and not (node.get("exclusiveMaximum") and v == high)]
    raise AssertionError(f"no values to try for a {kind} field: list it in OPERATOR_CONSUMED or extend candidates()")


def with_value(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(spec)
    target = changed
    *parents, leaf = path.split(".")
    for key in parents:
        target = target.setdefault(key, {})
    target[leaf] = value
    return changed


def accepted(spec: dict[str, Any]) -> bool:
    job = {"apiVersion": API_VERSION, "kind": TRAINING_JOB.kind, "metadata": {"name": "j"}, "spec": spec}
    return object_problems(job) == []


def rendered(spec: dict[str, Any]) -> dict[str, Any]:
    return render_trainer_config(TRAINING_JOB.spec_model.model_validate(spec), "j")


def changes_the_rendering(path: str) -> bool:
    """Whether, in one of the base specs, two values of `path` the API accepts render differently."""
    for base in bases():
        seen = set()
        for value in candidates(LEAVES[path]):
            spec = with_value(base, path, value)
            if accepted(spec):
                seen.add(repr(rendered(spec)))
        if len(seen) >= 2:
            return True
    return False


RENDERED = sorted(path for path in LEAVES if consumer(path) is None)


@pytest.mark.parametrize("path", RENDERED)
def test_each_field_the_operator_does_not_consume_changes_the_trainers_configuration(path):
    assert changes_the_rendering(path), (
        f"spec.{path} never changes the rendered trainer configuration: render it "
        "(render/trainer.py), or list it in OPERATOR_CONSUMED with where the operator uses it, or remove it")


def test_every_operator_consumed_entry_names_a_spec_field():
    fields = set(LEAVES) | {prefix for path in LEAVES for prefix in _prefixes(path)}
    stale = set(OPERATOR_CONSUMED) - fields - FIELDS_BEING_ADDED
    assert not stale, f"OPERATOR_CONSUMED lists fields the spec does not have: {sorted(stale)}"
    assert not FIELDS_BEING_ADDED & fields, "the field exists now: take it out of FIELDS_BEING_ADDED"


def _prefixes(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def test_the_walk_finds_the_fields():
    # The walk itself: a nested size setting and an operator-consumed field are among the leaves.
    assert "model.size.latentDim" in LEAVES and consumer("topology.gpusPerNode") is not None
    assert "model.size.latentDim" in RENDERED


ENUMS = sorted(path for path in RENDERED if "enum" in LEAVES[path])


@pytest.mark.parametrize("path", ENUMS)
def test_each_value_of_a_rendered_choice_renders_differently(path):
    # A value that trains exactly as another does (conditioning: prompt did, as none) misleads.
    values = LEAVES[path]["enum"]
    alike = []
    for i, first in enumerate(values):
        for second in values[i + 1:]:
            differ = False
            for base in bases():
                one, other = with_value(base, path, first), with_value(base, path, second)
                if accepted(one) and accepted(other) and rendered(one) != rendered(other):
                    differ = True
                    break
            if not differ:
                alike.append((first, second))
    assert not alike, f"spec.{path}: these values render the same trainer configuration: {alike}"
