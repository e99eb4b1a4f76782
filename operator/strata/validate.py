"""`strata validate`: check manifests offline, for CI and pre-commit hooks in GitOps repos.

Every Strata object is checked as the API server would check it: its apiVersion, its
metadata.name, and its spec through the API models, which apply the same field constraints
and CEL rules and report every problem at once. Objects of other API groups are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from strata.api import KINDS_BY_NAME
from strata.api.cel import failed_rules
from strata.api.errors import validation_problems
from strata.constants import API_VERSION, GROUP

# What the API server requires of a custom resource's name (a DNS-1123 subdomain).
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass
class FileReport:
    path: Path
    checked: int = 0  # Strata objects in the file
    problems: list[str] = field(default_factory=list)


def _manifest_files(paths: list[Path]) -> list[Path]:
    files = []
    for path in paths:
        files.extend(sorted(path.rglob("*.y*ml")) if path.is_dir() else [path])
    return files


def _metadata_problems(metadata: Any) -> list[str]:
    if not isinstance(metadata, dict):
        return ["metadata: Required value"]
    problems = []
    name = metadata.get("name")
    if not name and not metadata.get("generateName"):
        problems.append("metadata.name: Required value")
    elif name and (len(name) > 253 or not _SUBDOMAIN.fullmatch(str(name))):
        problems.append(
            f'metadata.name: Invalid value: "{name}": must be a lowercase RFC 1123 subdomain '
            "(lower case letters, digits, '-' and '.', starting and ending with a letter or digit; at most 253)"
        )
    namespace = metadata.get("namespace")
    if namespace is not None and (len(str(namespace)) > 63 or not _LABEL.fullmatch(str(namespace))):
        problems.append(
            f'metadata.namespace: Invalid value: "{namespace}": must be a lowercase RFC 1123 label '
            "(lower case letters, digits and '-', starting and ending with a letter or digit; at most 63)"
        )
    return problems


def object_problems(doc: dict[str, Any]) -> list[str] | None:
    """Every problem the API server would report for a strata.dev object; None for other groups."""
    api_version = str(doc.get("apiVersion", ""))
    if api_version.split("/")[0] != GROUP:
        return None
    kind_name = doc.get("kind", "")
    if api_version != API_VERSION:
        return [f'no matches for kind "{kind_name}" in version "{api_version}": this Strata serves {API_VERSION}']
    kind = KINDS_BY_NAME.get(kind_name)
    if kind is None:
        known = ", ".join(KINDS_BY_NAME)
        return [f'no matches for kind "{kind_name}" in version "{api_version}": the kinds are {known}']
    problems = _metadata_problems(doc.get("metadata"))
    if not isinstance(doc.get("spec"), dict):
        return [*problems, "spec: Required value"]
    try:
        kind.spec_model.model_validate(doc["spec"])
    except ValidationError as error:
        problems.extend(validation_problems(error))
    if isinstance(doc.get("metadata"), dict) and doc["metadata"].get("name"):
        # The kind's rules on the whole object (its name, say); those that judge an update
        # against the old object are the API server's alone (failed_rules skips them).
        for rule in failed_rules(list(kind.object_rules), doc):
            field = rule.get("fieldPath", "").removeprefix(".")
            problems.append(f"{field}: {rule['message']}" if field else rule["message"])
    return problems


def validate_files(paths: list[Path]) -> list[FileReport]:
    """One report per file. Each problem reads '<file>: <Kind>/<name>: <field>: <message>'."""
    reports = []
    for path in _manifest_files(paths):
        report = FileReport(path)
        reports.append(report)
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as error:
            report.problems.append(f"{path}: cannot read: {error}")
            continue
        for doc in documents:
            if not isinstance(doc, dict):
                continue
            problems = object_problems(doc)
            if problems is None:
                continue
            report.checked += 1
            name = (doc.get("metadata") or {}).get("name", "<unnamed>") if isinstance(doc.get("metadata"), dict) else "<unnamed>"
            report.problems.extend(f"{path}: {doc.get('kind')}/{name}: {problem}" for problem in problems)
    return reports
