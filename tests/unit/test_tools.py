"""`tools.tool`: what a function's signature becomes, and the mistakes it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from prefect_beluga.core.errors import ValidationError
from prefect_beluga.tools import tool


def test_an_argument_without_a_type_hint_is_a_clear_error_naming_the_tool_and_the_argument():
    def weather(city, days: int = 1) -> str:
        return f"sunny in {city}"

    with pytest.raises(ValidationError, match=r"tool 'weather': argument 'city' has no type hint.*typing\.Any"):
        tool(weather)


def test_any_said_explicitly_accepts_any_json_value():
    @tool
    def echo(value: Any) -> str:
        """Echo a value."""
        return repr(value)

    assert "value" in echo.parameters["properties"]
    assert echo.parameters["required"] == ["value"]
