"""Client-side evaluation of the models' CEL rules (x-kubernetes-validations).

The API server enforces these rules on every write; evaluating the same rule text here
means the operator, and any offline check of a manifest, reject exactly what the server
rejects, with the same message.

Transition rules (those that read `oldSelf`, the object before an update) are skipped here:
they judge a change, and a client holding one object (`strata validate` is offline) has no
old object to compare with. The API server enforces them on updates; tests check them there.
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal
from typing import Any

import celpy
from celpy import celtypes

from strata.api.quantity import parse_quantity

_environment = celpy.Environment()


class Quantity:
    """A value of the Kubernetes CEL quantity library's type (from `quantity("8Gi")`)."""

    def __init__(self, value: Decimal):
        self.value = value


def _quantity(text: Any) -> Quantity:
    value = parse_quantity(str(text)) if isinstance(text, str) else None
    if value is None:
        raise ValueError(f"invalid quantity {text!r}")
    return Quantity(value)


def _compare(left: Quantity, right: Quantity) -> int:
    return (left.value > right.value) - (left.value < right.value)


# Functions of the Kubernetes quantity library, as the API server's CEL offers them to CRD
# rules (it has no sign() there); methods (`quantity(x).isLessThan(y)`) are called with the
# receiver as the first argument.
KUBERNETES_FUNCTIONS = {
    "isQuantity": lambda text: celtypes.BoolType(isinstance(text, str) and parse_quantity(str(text)) is not None),
    "quantity": _quantity,
    "compareTo": lambda q, other: celtypes.IntType(_compare(q, other)),
    "isGreaterThan": lambda q, other: celtypes.BoolType(_compare(q, other) > 0),
    "isLessThan": lambda q, other: celtypes.BoolType(_compare(q, other) < 0),
}


@functools.cache
def _program(rule: str) -> Any:
    return _environment.program(_environment.compile(rule), functions=KUBERNETES_FUNCTIONS)


_OLD_SELF = re.compile(r"\boldSelf\b")


def is_transition_rule(rule: dict[str, str]) -> bool:
    """Whether the rule compares the object with its previous version (reads `oldSelf`)."""
    return bool(_OLD_SELF.search(rule["rule"]))


def failed_rules(rules: list[dict[str, str]], obj: dict[str, Any]) -> list[dict[str, str]]:
    """The rules `obj` (in wire form, as `self`) does not satisfy; an evaluation error fails too.
    Transition rules are not evaluated (there is no old object here): they never fail."""
    activation = {"self": celpy.json_to_cel(obj)}
    failures = []
    for rule in rules:
        if is_transition_rule(rule):
            continue
        try:
            result = _program(rule["rule"]).evaluate(activation)
        except celpy.CELEvalError:
            result = None
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            failures.append(rule)
    return failures
