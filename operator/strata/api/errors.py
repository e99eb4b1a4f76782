"""Turning model validation errors into messages that name the offending field."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(error: ValidationError, root: str = "spec") -> str:
    """'spec.deepspeed.zeroStage: Input should be less than or equal to 3; ...', paths as kubectl writes them."""
    return "; ".join(validation_problems(error, root))


def validation_problems(error: ValidationError, root: str = "spec") -> list[str]:
    """One 'field: message' per problem, every problem found (as the API server lists them)."""
    parts = []
    for problem in error.errors():
        location = root + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in problem["loc"])
        # A CEL rule names the field it is about, relative to the object it is attached to.
        field_path = (problem.get("ctx") or {}).get("field_path", "")
        parts.append(f"{location}{field_path}: {problem['msg']}")
    return parts
