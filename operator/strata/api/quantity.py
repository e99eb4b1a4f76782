"""Kubernetes resource quantities ("500m", "8Gi", "2"), parsed as the API server parses them.

A port of the grammar of k8s.io/apimachinery/pkg/api/resource.ParseQuantity, so that the
CEL quantity library (`isQuantity`, `quantity(...).sign()`), which the API server evaluates
for the CRDs' rules, can be evaluated client-side with the same answers.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

DIGITS = "0123456789"
# Characters a suffix may be made of (SI, binary SI, and the e/E of an exponent).
_SUFFIX_CHARACTERS = "eEinumkKMGTP"
# suffix -> (base, exponent)
_SUFFIXES: dict[str, tuple[int, int]] = {
    "": (10, 0),
    "n": (10, -9), "u": (10, -6), "m": (10, -3),
    "k": (10, 3), "M": (10, 6), "G": (10, 9), "T": (10, 12), "P": (10, 15), "E": (10, 18),
    "Ki": (2, 10), "Mi": (2, 20), "Gi": (2, 30), "Ti": (2, 40), "Pi": (2, 50), "Ei": (2, 60),
}


def _split(text: str) -> tuple[bool, str, str, str] | None:
    """(positive, numerator digits, denominator digits, suffix), or None if malformed."""
    positive, position, end = True, 0, len(text)
    if position < end and text[0] in "+-":
        positive = text[0] == "+"
        position += 1
    start = position
    while position < end and text[position] in DIGITS:
        position += 1
    numerator = text[start:position]
    denominator = ""
    if position < end and text[position] == ".":
        position += 1
        start = position
        while position < end and text[position] in DIGITS:
            position += 1
        denominator = text[start:position]
    suffix_start = position
    while position < end and text[position] in _SUFFIX_CHARACTERS:
        position += 1
    if position < end and text[position] in "+-":
        position += 1
    while position < end and text[position] in DIGITS:
        position += 1
    if position < end:
        return None
    return positive, numerator, denominator, text[suffix_start:]


def _multiplier(suffix: str) -> Decimal | None:
    if suffix in _SUFFIXES:
        base, exponent = _SUFFIXES[suffix]
        return Decimal(base) ** exponent
    # A decimal exponent: 1e3, 5E-2.
    if len(suffix) > 1 and suffix[0] in "eE":
        exponent = suffix[1:].lstrip("+-")
        if exponent and all(c in DIGITS for c in exponent):
            return Decimal(10) ** int(suffix[1:])
    return None


def parse_quantity(text: str) -> Decimal | None:
    """The quantity's value, or None when the API server would refuse the string."""
    if not text:
        return None
    parts = _split(text)
    if parts is None:
        return None
    positive, numerator, denominator, suffix = parts
    multiplier = _multiplier(suffix)
    if multiplier is None:
        return None
    try:
        # Like the API server, a bare sign or point counts as zero ("-", ".").
        magnitude = Decimal(f"{numerator or '0'}.{denominator or '0'}") * multiplier
    except InvalidOperation:
        return None
    return magnitude if positive else -magnitude


def is_quantity(text: str) -> bool:
    return parse_quantity(text) is not None
