"""MCP servers from configuration: a desktop client's `mcpServers` JSON, or a saved Prefect block.

    ```python
    import json
    from pathlib import Path

    from prefect_beluga.agents import Agent
    from prefect_beluga.llms import OfflineChatModel
    from prefect_beluga.mcp import MCPServerBlock, servers_from_config
    llm = OfflineChatModel()
    Path("mcp.json").write_text(json.dumps({"mcpServers": {"time": {"command": "mcp-server-time"}}}))
    servers = servers_from_config("mcp.json")     # -> [MCPServer(command='mcp-server-time', args=[])]
    agent = Agent(llm, tools=[*servers])
    MCPServerBlock(command="mcp-server-time").save("time-server", overwrite=True)
    agent = Agent(llm, tools=[MCPServerBlock.load("time-server").get_server()])
    ```

The JSON is the one desktop MCP clients (Claude Desktop, Cursor, VS Code) read: each entry is
`{"command", "args", "env", "cwd"}` (stdio) or `{"url", "headers"}` (streamable HTTP; a `type`
/ `transport` key of "http" or "streamable-http" is accepted, "sse" is refused); the keys of
`MCPServer` (`include`, `exclude`, `prefix`, `requires_approval`, `timeout`, `retries`, `retry_delay`) may be added.
An entry's name becomes the server's name and, with `prefix_names=True`, its tools' prefix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect_beluga.core.errors import ValidationError
from prefect_beluga.mcp._client import MCPServer

_OPTIONS = {"command", "args", "env", "cwd", "url", "headers", "include", "exclude", "prefix",
            "requires_approval", "timeout", "retries", "retry_delay"}
_IGNORED = {"type", "transport", "disabled", "description", "autoApprove", "alwaysAllow"}


def server_from_config(entry: Mapping[str, Any], *, name: str | None = None) -> MCPServer:
    """One `mcpServers` entry as an `MCPServer` (see the module docstring)."""
    where = f"MCP server {name!r}" if name else "MCP server entry"
    if not isinstance(entry, Mapping):
        raise ValidationError(f"{where}: expected an object, got {type(entry).__name__}")
    kind = entry.get("type", entry.get("transport"))
    if kind is not None and kind not in ("stdio", "http", "streamable-http", "streamableHttp"):
        raise ValidationError(
            f"{where}: transport {kind!r} is not supported; use a stdio command or a streamable HTTP url"
        )
    unknown = set(entry) - _OPTIONS - _IGNORED
    if unknown:
        raise ValidationError(f"{where}: unknown key(s) {sorted(unknown)}; the keys are {sorted(_OPTIONS)}")
    try:
        server = MCPServer(**{key: value for key, value in entry.items() if key in _OPTIONS})
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc}") from None
    if name:
        server.name = name
    return server


def servers_from_config(
    config: Mapping[str, Any] | str | os.PathLike[str], *, prefix_names: bool = False
) -> list[MCPServer]:
    """The servers of a desktop client's configuration (a mapping, or the path of its JSON file).

    Args:
        config: `{"mcpServers": {name: entry, ...}}` (or `{"servers": ...}`, VS Code's key), or
            the path of a JSON file holding it.
        prefix_names: Prefix each server's tools with its entry's name and "_" (unless the
            entry gives a `prefix`), so two servers' tool names never clash.

    Examples:
        ```python
        from prefect_beluga.mcp import servers_from_config

        servers_from_config({"mcpServers": {"time": {"command": "mcp-server-time"}}})
        # -> [MCPServer(command='mcp-server-time', args=[])]
        ```
    """
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValidationError(f"cannot read MCP configuration {str(path)!r}: {exc}") from None
    if not isinstance(config, Mapping):
        raise ValidationError(f"MCP configuration must be an object, got {type(config).__name__}")
    entries = config.get("mcpServers", config.get("servers"))
    if not isinstance(entries, Mapping):
        raise ValidationError('MCP configuration needs an "mcpServers" object: {"mcpServers": {"name": {...}}}')
    servers = []
    for name, entry in entries.items():
        if isinstance(entry, Mapping) and entry.get("disabled") is True:
            continue
        if prefix_names and isinstance(entry, Mapping) and "prefix" not in entry:
            entry = {**entry, "prefix": f"{name}_"}
        servers.append(server_from_config(entry, name=name))
    return servers


__all__ = ["server_from_config", "servers_from_config"]
