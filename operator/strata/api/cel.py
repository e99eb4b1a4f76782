"""Client-side evaluation of the models' CEL rules (x-kubernetes-validations).

The API server enforces these rules on every write; evaluating the same rule text here
means the operator, and any offline check of a manifest, reject exactly what the server
rejects, with the same message.
"""

from __future__ import annotations

import functools
from typing import Any

import celpy

_environment = celpy.Environment()


@functools.cache
def _program(rule: str) -> Any:
    return _environment.program(_environment.compile(rule))


def failed_rules(rules: list[dict[str, str]], obj: dict[str, Any]) -> list[dict[str, str]]:
    """The rules `obj` (in wire form, as `self`) does not satisfy; an evaluation error fails too."""
    activation = {"self": celpy.json_to_cel(obj)}
    failures = []
    for rule in rules:
        try:
            result = _program(rule["rule"]).evaluate(activation)
        except celpy.CELEvalError:
            result = None
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            failures.append(rule)
    return failures
