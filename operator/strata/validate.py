"""`strata validate`: check manifests offline, for CI and pre-commit hooks in GitOps repos.

Every Strata object's spec is parsed by the API models, which apply the same field
constraints and CEL rules the API server does; other kinds are skipped.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from strata.api import KINDS_BY_NAME
from strata.api.errors import describe_validation_error
from strata.constants import API_VERSION


def _manifest_files(paths: list[Path]) -> list[Path]:
    files = []
    for path in paths:
        files.extend(sorted(path.rglob("*.y*ml")) if path.is_dir() else [path])
    return files


def validate_files(paths: list[Path]) -> list[str]:
    """One line per problem: '<file>: <Kind>/<name>: <field>: <message>'; empty when all is valid."""
    problems = []
    for path in _manifest_files(paths):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as error:
            problems.append(f"{path}: cannot read: {error}")
            continue
        for doc in documents:
            if not isinstance(doc, dict) or doc.get("apiVersion") != API_VERSION:
                continue
            kind = KINDS_BY_NAME.get(doc.get("kind", ""))
            name = (doc.get("metadata") or {}).get("name", "<unnamed>")
            if kind is None:
                problems.append(f"{path}: {doc.get('kind')}/{name}: unknown kind in {API_VERSION}")
                continue
            try:
                kind.spec_model.model_validate(doc.get("spec") or {})
            except ValidationError as error:
                problems.append(f"{path}: {kind.kind}/{name}: {describe_validation_error(error)}")
    return problems
