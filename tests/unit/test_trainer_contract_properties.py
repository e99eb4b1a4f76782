"""Property: every TrainingJob spec the API accepts renders to a configuration the trainer accepts.

Specs are drawn from the spec's own schema (the structural OpenAPI schema the CRD is generated
from), so a field added to the API is drawn here without editing this file. A drawn spec
counts only if the API accepts it, checked as `strata validate` checks it (pydantic bounds,
patterns and the client-side CEL rules). The trainer then has to accept its rendering: its
parser (with the cross-section checks) and the checks it runs before training, on the devices
the operator gives each worker (GPUs only with topology.gpusPerNode > 0).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, Phase, assume, example, given, note, settings
from hypothesis import strategies as st

from strata.api import TRAINING_JOB
from strata.api.crd import openapi_schema
from strata.constants import API_VERSION
from strata.render.trainer import render_trainer_config
from strata.validate import object_problems
from strata_workloads.train.config import check_before_training, parse_config

# Values the API server can store: JSON numbers in int64 and finite floats.
INT64_MAX = 2**63 - 1
# A CRD string with no maxLength can be megabytes; a few dozen characters exercise it.
LONGEST_DRAWN_STRING = 40
# x-kubernetes-int-or-string quantities: integers or the quantity grammar's common shapes (the
# schema's own CEL rules, isQuantity included, then decide).
QUANTITY_TEXT = r"[0-9]{1,4}(\.[0-9]{1,3})?(m|k|M|G|Ki|Mi|Gi|Ti)?"
# Most drawn integers small: bounds stay reachable and cross-field rules (warmupSteps below
# maxSteps, hidden a multiple of heads) hold often enough; some span the whole range.
SMALL_SPAN = 4096


def _integers(node: dict[str, Any]) -> st.SearchStrategy[int]:
    low = node.get("minimum", -INT64_MAX - 1)
    high = node.get("maximum", INT64_MAX)
    if node.get("exclusiveMinimum"):
        low += 1
    if node.get("exclusiveMaximum"):
        high -= 1
    small = st.integers(low, min(high, max(low, 0) + SMALL_SPAN))
    # The bounds themselves often: where the API and the trainer most likely disagree.
    return st.one_of(st.sampled_from(sorted({low, max(low, min(high, 0)), min(high, max(low, 1))})), small, small,
                     st.integers(low, high))


def _numbers(node: dict[str, Any]) -> st.SearchStrategy[float]:
    return st.floats(
        min_value=node.get("minimum"), max_value=node.get("maximum"),
        exclude_min=bool(node.get("exclusiveMinimum")), exclude_max=bool(node.get("exclusiveMaximum")),
        allow_nan=False, allow_infinity=False,
    )


def _strings(node: dict[str, Any]) -> st.SearchStrategy[str]:
    if "enum" in node:
        return st.sampled_from(node["enum"])
    longest = min(node.get("maxLength", LONGEST_DRAWN_STRING), LONGEST_DRAWN_STRING)
    shortest = node.get("minLength", 0)
    if "pattern" in node:
        # Anchored patterns give whole strings; a prefix pattern (^https?://) any text after it.
        anchored = node["pattern"].endswith("$")
        return st.from_regex(node["pattern"], fullmatch=anchored).filter(
            lambda text: shortest <= len(text) <= node.get("maxLength", INT64_MAX))
    return st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=shortest, max_size=longest)


def _objects(node: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    if "properties" not in node:  # a map (nodeSelector)
        return st.dictionaries(_strings({"maxLength": 20}), strategy_for(node["additionalProperties"]), max_size=3)
    required = set(node.get("required", ()))
    fields = {
        # Optional fields: left out (the API server applies the default) or drawn.
        name: strategy_for(child) if name in required else st.one_of(st.none(), strategy_for(child))
        for name, child in node["properties"].items()
    }
    return st.fixed_dictionaries(fields).map(lambda drawn: {k: v for k, v in drawn.items() if v is not None})


def strategy_for(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of one structural-schema node; constraints the schema does not state are the API's
    to refuse (the property keeps only the values it accepts)."""
    if node.get("x-kubernetes-int-or-string"):
        return st.one_of(st.integers(-8, 1 << 40), st.from_regex(f"-?{QUANTITY_TEXT}", fullmatch=True))
    kind = node["type"]
    if kind == "object":
        return _objects(node)
    if kind == "array":
        return st.lists(strategy_for(node["items"]), max_size=min(node.get("maxItems", 3), 3))
    if kind == "integer":
        return _integers(node)
    if kind == "number":
        return _numbers(node)
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        return _strings(node)
    raise AssertionError(f"no strategy for schema type {kind!r}: extend strategy_for")


SPEC_SCHEMA = openapi_schema(TRAINING_JOB.spec_model)
# What the API server takes as an object's name: a DNS-1123 subdomain (dots allowed).
JOB_NAMES = strategy_for({"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253})


@settings(
    max_examples=100,
    derandomize=True,  # the same examples on every run: CI does not flake on a lucky draw
    database=None,
    deadline=None,  # a busy shared machine; the example count bounds the time instead
    # No shrinking: on this machine it takes minutes; the failing spec is printed as drawn.
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(raw=strategy_for(SPEC_SCHEMA), job_name=JOB_NAMES)
# The disagreements this test was written for, each refused by the API now (tests/invalid_objects.py).
@example(raw={"dataset": {"name": "d"}, "model": {"family": "gan"}, "deepspeed": {"precision": "fp16"}}, job_name="j")
@example(raw={"dataset": {"name": "d"}, "model": {"family": "vae"}, "deepspeed": {"precision": "fp16"},
              "topology": {"gpusPerNode": 0}}, job_name="j")
@example(raw={"dataset": {"name": "d"}, "model": {"family": "vae"}}, job_name="support.lm")
def test_every_spec_the_api_accepts_renders_to_a_configuration_the_trainer_accepts(raw, job_name):
    job = {"apiVersion": API_VERSION, "kind": TRAINING_JOB.kind, "metadata": {"name": job_name}, "spec": raw}
    assume(object_problems(job) == [])  # what `strata validate` (and so the API server) accepts
    spec = TRAINING_JOB.spec_model.model_validate(raw)
    note(f"spec: {spec.to_wire()}")
    config = parse_config(render_trainer_config(spec, job_name), source="rendered")
    check_before_training(config, cuda_available=spec.topology.gpus_per_node > 0)
