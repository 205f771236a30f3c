"""`tools.tool`: what a function's signature becomes (JSON schema from type hints, description from
the docstring), how its arguments are checked, and the mistakes it refuses."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import pydantic
import pytest

from prefect_beluga.core._substeps import InlineSubsteps, use_substeps
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.tools import Tool, ToolArgumentsError, tool


@tool
def add(a: int, b: int = 0) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number,
            zero when not given.
    """
    return a + b


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


# -- schema from hints and docstring --------------------------------------------------------------


def test_tool_schema_comes_from_type_hints_and_docstring():
    class Filters(pydantic.BaseModel):
        tags: list[str] = []

    @tool(name="search", retries=2, timeout=5)
    async def search_docs(
        query: str,
        k: int = 3,
        mode: Literal["fast", "exact"] = "fast",
        filters: Filters | None = None,
        lang: Annotated[str, pydantic.Field(description="ISO code.")] = "en",
    ) -> list[str]:
        """Search the docs.

        Returns the best passages.

        Args:
            query: What to look for.
            k: How many passages.

        Returns:
            Passages.
        """
        return [query] * k

    assert isinstance(search_docs, Tool)
    assert (search_docs.name, search_docs.retries, search_docs.timeout) == ("search", 2, 5)
    assert search_docs.description == "Search the docs.\n\nReturns the best passages."
    spec = search_docs.to_openai()
    assert spec["type"] == "function" and spec["function"]["name"] == "search"
    schema = spec["function"]["parameters"]
    assert schema["required"] == ["query"]
    assert schema["properties"]["query"] == {"type": "string", "description": "What to look for."}
    assert schema["properties"]["k"] == {"type": "integer", "default": 3, "description": "How many passages."}
    assert schema["properties"]["mode"]["enum"] == ["fast", "exact"]
    assert schema["properties"]["lang"]["description"] == "ISO code."
    assert "Filters" in schema["$defs"] and schema["additionalProperties"] is False
    # multi-line argument descriptions are joined; the tool is still the function
    assert add.parameters["properties"]["b"]["description"] == "The second number, zero when not given."
    assert add(2, 3) == 5 and add.__name__ == "add"
    assert asyncio.run(search_docs("x", k=2)) == ["x", "x"]


def test_tool_arguments_are_checked_naming_the_field():
    assert add.parse_arguments('{"a": "4"}') == {"a": 4, "b": 0}
    cases = {
        '{"a": "four"}': "field 'a': Input should be a valid integer",
        "{}": "field 'a' is required but missing",
        '{"a": 1, "c": 2}': "field 'c' is not an argument of this tool",
        "not json": "are not valid JSON",
        "[1, 2]": "must be a JSON object",
    }
    for arguments, message in cases.items():
        with pytest.raises(ToolArgumentsError, match=message):
            add.parse_arguments(arguments)


def test_bad_tools_are_clear_errors():
    with pytest.raises(ValidationError, match="tool name 'no spaces!' is not valid"):
        tool(lambda x: x, name="no spaces!")
    with pytest.raises(ValidationError, match=r"\*args / \*\*args cannot be described"):
        tool(lambda *args: args, name="star")
    with pytest.raises(ValidationError, match="tool 'slow': timeout must be > 0"):
        tool(lambda: 1, name="slow", timeout=0)


def test_a_method_is_a_tool_bound_to_its_instance():
    class Shop:
        def __init__(self, stock):
            self.stock = stock

        @tool
        def count(self, item: str) -> int:
            """How many of `item` are in stock."""
            return self.stock.get(item, 0)

    shop = Shop({"pens": 3})
    assert list(Shop.count.parameters["properties"]) == ["item"]
    with use_substeps(InlineSubsteps()):
        assert asyncio.run(shop.count.acall(shop.count.parse_arguments('{"item": "pens"}'))) == 3
    assert shop.count("pens") == 3
