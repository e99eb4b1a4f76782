"""strata.k8s is the operator's only door to the API server: no other operator module imports
the Kubernetes client (its exception type aside) or posts events through kopf directly."""

import ast
from pathlib import Path

import pytest

import strata

PACKAGE = Path(strata.__file__).parent
# Not the operator: the local dev cluster and the commands that drive it talk to it by design.
NOT_THE_OPERATOR = {"devcluster", "demo.py", "cli.py", "argocd.py", "validate.py"}
# kopf's own calls that reach the API server; handlers' decorators and errors are fine.
KOPF_API_CALLS = {"event", "info", "warn", "exception", "adopt", "append_owner_reference"}


def operator_modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] not in NOT_THE_OPERATOR and path.name != "k8s.py":
            yield pytest.param(path, id=str(relative))


@pytest.mark.parametrize("path", list(operator_modules()))
def test_only_strata_k8s_talks_to_the_api_server(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not [a.name for a in node.names if a.name.split(".")[0] == "kubernetes"], f"{path}:{node.lineno}"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "kubernetes":
            assert node.module == "kubernetes.client.rest" and [a.name for a in node.names] == ["ApiException"], \
                f"{path}:{node.lineno} imports {node.module}; API calls belong in strata.k8s"
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "kopf":
            assert node.attr not in KOPF_API_CALLS, f"{path}:{node.lineno} calls kopf.{node.attr}; use strata.k8s.post_event"
