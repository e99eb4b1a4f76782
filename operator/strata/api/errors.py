"""Turning model validation errors into messages that name the offending field."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(error: ValidationError, root: str = "spec") -> str:
    """'spec.deepspeed.zeroStage: Input should be less than or equal to 3; ...'"""
    parts = []
    for problem in error.errors():
        location = ".".join(str(part) for part in (root, *problem["loc"]))
        parts.append(f"{location}: {problem['msg']}")
    return "; ".join(parts)
