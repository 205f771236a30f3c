"""Tools an agent can call: plain functions with a JSON schema taken from their type hints.

    ```python
    from prefect_beluga.tools import tool
    @tool
    def add(a: int, b: int) -> int:
        \"\"\"Add two integers.

        Args:
            a: The first number.
            b: The second number.
        \"\"\"
        return a + b
    add.name, add.description  # ('add', 'Add two integers.')
    add.parameters["properties"]["a"]  # {'description': 'The first number.', 'type': 'integer'}
    ```

The schema comes from the signature through pydantic (so `int`, `list[str]`, `Literal[...]`,
`Optional`, pydantic models and `Annotated[str, Field(description=...)]` all work), the
description from the docstring (its text before `Args:`), and each argument's description from
the docstring's `Args:` section. Inside an agent (`prefect_beluga.agents.Agent`) each call is a
Prefect task run named after the tool; `retries` and `timeout` are that task's retry policy and
timeout. A tool still is the function: `add(1, 2)` returns 3.

A Runnable is a tool too: `tool(chain, name="research", description="...")` takes
`{"input": str}` unless `args_schema=` (a pydantic model) says otherwise, and is called with the
arguments as its input dict.

A `Toolset` stands for tools known only once a run starts (an MCP server's:
`prefect_beluga.mcp.MCPServer`); it goes in `Agent(tools=[...])` next to plain tools, and each
agent run opens it once (`Toolset.open()`), for the tools it lists, and closes it at the run's end.
"""

from prefect_beluga.core.errors import ToolArgumentsError
from prefect_beluga.tools._tool import Tool, tool
from prefect_beluga.tools._toolset import Toolset, ToolsetSession

__all__ = ["Tool", "ToolArgumentsError", "Toolset", "ToolsetSession", "tool"]
