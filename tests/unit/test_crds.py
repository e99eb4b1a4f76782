"""The CRDs are generated from the API models; these tests keep the two in step."""

from __future__ import annotations

from pathlib import Path

import pytest

from strata.api import KINDS, TRAINING_JOB
from strata.api.crd import REGENERATE_COMMAND, crd_drift, openapi_schema, render_crd

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("directory", ["crds", "helm/strata/crds"])
def test_committed_crds_match_the_models(directory):
    diffs = crd_drift(REPO / directory)
    assert not diffs, (
        f"{directory}/ is out of date with operator/strata/api; regenerate with "
        f"`{REGENERATE_COMMAND}` and commit.\n" + "".join(diffs)[:4000]
    )


def _walk(schema: dict, path: str = ""):
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}[*]")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_every_schema_node_is_structural(info):
    for model in (info.spec_model, info.status_model):
        for path, node in _walk(openapi_schema(model)):
            if node.get("x-kubernetes-int-or-string"):
                assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], f"{info.kind}{path}"
                continue
            assert "type" in node, f"{info.kind}{path} has no type"
            assert "$ref" not in node and "anyOf" not in node, f"{info.kind}{path} is not structural"
            assert not ("properties" in node and "additionalProperties" in node), f"{info.kind}{path}"


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_crd_lists_the_kind_under_the_strata_category_with_a_status_subresource(info):
    crd = render_crd(info)
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["names"]["categories"] == ["strata"]
    assert version["subresources"] == {"status": {}}
    column_names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert column_names[0] == "Ready" and column_names[-1] == "Age"


def test_nested_defaults_reach_the_api_server():
    spec = openapi_schema(TRAINING_JOB.spec_model)
    deepspeed = spec["properties"]["deepspeed"]
    assert deepspeed["default"]["zeroStage"] == 2 and deepspeed["default"]["offload"] == "none"
    assert deepspeed["properties"]["zeroStage"]["default"] == 2


def test_exclusive_bounds_use_the_openapi_v3_boolean_form():
    learning_rate = openapi_schema(TRAINING_JOB.spec_model)["properties"]["hyperparameters"]["properties"]["learningRate"]
    assert learning_rate["minimum"] == 0 and learning_rate["exclusiveMinimum"] is True


def test_short_names_are_unique_across_kinds():
    names = [name for info in KINDS for name in info.short_names]
    assert len(names) == len(set(names))


def _explained_fields(info):
    """Every field `kubectl explain --recursive` lists: (path, schema), list items folded in."""
    root = render_crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return [(path, node) for path, node in _walk(root) if path and not path.endswith(("[]", "[*]"))]


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_every_field_kubectl_explains_has_a_description(info):
    # metadata is the one exception: the API server refuses a CRD that describes it, and
    # explains it as ObjectMeta itself.
    undocumented = [path for path, node in _explained_fields(info)
                    if path != ".metadata" and not node.get("description", "").strip()]
    assert not undocumented, f"{info.kind} fields without a description (add one in operator/strata/api): {undocumented}"


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_every_scalar_default_is_stated_in_the_description(info):
    # kubectl explain does not show `default`, so the description has to.
    for path, node in _explained_fields(info):
        if "default" in node and not isinstance(node["default"], (dict, list)):
            assert "default" in node["description"].lower(), f"{info.kind}{path}: {node['description']}"


def test_quantities_are_int_or_string_checked_by_the_cel_quantity_library():
    cpu = openapi_schema(TRAINING_JOB.spec_model)["properties"]["resources"]["properties"]["cpu"]
    assert cpu["x-kubernetes-int-or-string"] is True
    rules = " ".join(rule["rule"] for rule in cpu["x-kubernetes-validations"])
    assert "isQuantity(self)" in rules and "!quantity(self).isLessThan(quantity('0'))" in rules
    assert "quantity" in cpu["description"]


def test_no_size_setting_of_another_family_is_defaulted_into_an_object():
    size = openapi_schema(TRAINING_JOB.spec_model)["properties"]["model"]["properties"]["size"]
    assert size["default"] == {}
    assert all("default" not in field for field in size["properties"].values())
    assert "imageSize" not in size["properties"]
