"""The client-side port of resource.ParseQuantity agrees with the API server's grammar."""

from decimal import Decimal

import pytest

from strata.api.quantity import parse_quantity


@pytest.mark.parametrize(
    "text, value",
    [
        pytest.param("2", Decimal(2), id="a plain integer is a quantity"),
        pytest.param("500m", Decimal("0.5"), id="milli is a thousandth"),
        pytest.param("8Gi", Decimal(8 * 2**30), id="binary suffixes are powers of two"),
        pytest.param("1e3", Decimal(1000), id="a decimal exponent is a suffix"),
        pytest.param("1.5k", Decimal(1500), id="a fraction takes a suffix"),
        pytest.param("-4Gi", Decimal(-4 * 2**30), id="a sign is part of the grammar (refused later as negative)"),
        pytest.param(".5", Decimal("0.5"), id="a leading point is allowed"),
        pytest.param("1.2.3", None, id="two points are refused"),
        pytest.param("4eeee", None, id="an unknown suffix is refused"),
        pytest.param("lots", None, id="words are refused"),
        pytest.param("", None, id="an empty string is refused"),
        pytest.param("1Ki3", None, id="digits after a binary suffix are refused"),
    ],
)
def test_quantities_parse_as_the_api_server_parses_them(text, value):
    assert parse_quantity(text) == value
