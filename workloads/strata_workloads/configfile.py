"""Reading a workload's configuration file, with one shape of error for every workload.

The trainer, the sidecar and the data pipeline each validate their file with their own
pydantic model; reading it, parsing the YAML (a superset of JSON) and the messages that name
each bad setting are shared here, so a person fixing any of the three files reads the same
kind of sentence.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

Model = TypeVar("Model", bound=BaseModel)

_MESSAGES = {
    "extra_forbidden": "unknown setting",
    "missing": "required setting is missing",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "greater_than": "must be greater than {gt}",
    "less_than": "must be less than {lt}",
    "literal_error": "must be one of {expected}",
}
# Parts of an error's location that name a validator, not a setting.
_VALIDATOR_PARTS = ("function-after", "function-before", "function-wrap", "function-plain")


class ConfigError(ValueError):
    """An invalid workload configuration; the message names each offending setting. Each
    workload raises its own subclass."""


def describe(error: dict[str, Any]) -> str:
    """One validation error as `setting.path: what is wrong, got value`."""
    location = ".".join(to_camel(part) if isinstance(part, str) else str(part)
                        for part in error["loc"] if part not in _VALIDATOR_PARTS)
    kind = error["type"]
    context = error.get("ctx") or {}
    message = _MESSAGES[kind].format(**context) if kind in _MESSAGES else error["msg"].removeprefix("Value error, ")
    if kind not in ("missing", "value_error") and "input" in error and not isinstance(error["input"], dict):
        message += f", got {error['input']!r}"
    return f"{location}: {message}" if location else message


def validate(model: type[Model], raw: Any, source: str, error_type: type[ConfigError] = ConfigError) -> Model:
    """`raw` (an already-parsed mapping) as `model`; else `error_type` naming every bad setting."""
    if not isinstance(raw, dict):
        raise error_type(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        problems = [describe(item) for item in error.errors()]
        raise error_type(f"{source}: invalid configuration:\n  " + "\n  ".join(problems)) from None


def read(path: str | os.PathLike[str] | None, env: str | None = None,
         error_type: type[ConfigError] = ConfigError) -> tuple[Any, str]:
    """(the parsed file, its path) from `path`, else from the file `$env` names."""
    path = path or (os.environ.get(env) if env else None)
    if not path:
        hint = f" or set {env}" if env else ""
        raise error_type(f"no configuration: pass --config FILE{hint}")
    import yaml  # only when a file is read: the operator imports the models, not this

    try:
        text = Path(path).read_text()
    except OSError as error:
        raise error_type(f"{path}: cannot read configuration ({error.strerror})") from None
    try:
        return yaml.safe_load(text), str(path)
    except yaml.YAMLError as error:
        raise error_type(f"{path}: not valid YAML/JSON ({error})") from None
