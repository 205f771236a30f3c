"""MCP both ways: agents call MCP servers' tools, and Runnables/Workflows are MCP tools.

    ```python
    from prefect_beluga.agents import Agent
    from prefect_beluga.llms import OfflineChatModel
    from prefect_beluga.mcp import MCPServer
    agent = Agent(OfflineChatModel(), tools=[MCPServer(command="mcp-server-time")])  # a server's tools, in an agent
    ```

    ```python
    # example: not run (serves MCP over HTTP until the process is stopped)
    from prefect_beluga.mcp import serve
    serve(research_chain, transport="http", port=8765)                 # a chain, as an MCP tool
    ```

`MCPServer` (`_client.py`, no Prefect import) is a `Toolset`: each agent run opens one session
per server and closes it at the run's end; each call is a task run named after the tool.
`serve` / `create_server` / `http_app` (`orchestration/_mcp_serve.py`) expose targets over stdio
or streamable HTTP, each call a Prefect flow run. `servers_from_config` reads a desktop client's
`mcpServers` JSON; `MCPServerBlock` (`blocks/_mcp.py`) saves a server's settings in Prefect.
`python -m prefect_beluga.mcp --target module:attr` runs `serve` (docs/mcp.md). Needs the extra:
`pip install 'prefect-beluga[mcp]'`.
"""

import importlib
from typing import TYPE_CHECKING, Any

from prefect_beluga.core.errors import MCPToolError
from prefect_beluga.mcp._client import MCPServer, MCPTool
from prefect_beluga.mcp._config import server_from_config, servers_from_config

if TYPE_CHECKING:
    from prefect_beluga.blocks._mcp import MCPServerBlock
    from prefect_beluga.orchestration._mcp_serve import create_server, http_app, serve

# The Prefect-aware names live in the Prefect layer and are imported when first asked for.
_PREFECT_AWARE = {
    "MCPServerBlock": "prefect_beluga.blocks._mcp",
    "create_server": "prefect_beluga.orchestration._mcp_serve",
    "http_app": "prefect_beluga.orchestration._mcp_serve",
    "serve": "prefect_beluga.orchestration._mcp_serve",
}


def __getattr__(name: str) -> Any:
    if name in _PREFECT_AWARE:
        return getattr(importlib.import_module(_PREFECT_AWARE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MCPServer",
    "MCPServerBlock",
    "MCPTool",
    "MCPToolError",
    "create_server",
    "http_app",
    "serve",
    "server_from_config",
    "servers_from_config",
]
