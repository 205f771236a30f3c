"""`MCPServerBlock`: an MCP server's settings saved in Prefect (public as `prefect_beluga.mcp.MCPServerBlock`)."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from prefect_beluga.mcp._client import MCPServer


class MCPServerBlock(Block):
    """An MCP server an agent can use: a stdio command or a streamable HTTP URL, saved in Prefect.

    `get_server()` hands back the `MCPServer` to put in `Agent(tools=[...])`; env values and
    headers are stored as secrets (obscured in the UI and the API).

    Examples:
        Load a stored MCP server and give its tools to an agent:
        ```python
        from prefect_beluga.mcp import MCPServerBlock

        mcp_server_block = MCPServerBlock.load("BLOCK_NAME")
        agent = Agent(llm, tools=[mcp_server_block.get_server()])
        ```
    """

    _block_type_name = "Beluga MCP Server"
    _block_type_slug = "beluga-mcp-server"
    _documentation_url = "https://modelcontextprotocol.io/docs/getting-started/intro"  # type: ignore[assignment]

    command: str | None = Field(default=None, description="The executable of a stdio server, e.g. mcp-server-time.")
    args: list[str] = Field(default_factory=list, description="The stdio server's command-line arguments.")
    env: dict[str, SecretStr] = Field(
        default_factory=dict, description="Extra environment variables for the stdio server (stored as secrets)."
    )
    cwd: str | None = Field(default=None, description="The stdio server's working directory.")
    url: str | None = Field(default=None, description="The endpoint of a streamable HTTP server, e.g. http://host/mcp.")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="HTTP headers for every request, e.g. Authorization (stored as secrets)."
    )
    include: list[str] | None = Field(default=None, description="Only these of the server's tools; empty for all.")
    exclude: list[str] = Field(default_factory=list, description="The server's tools to leave out.")
    prefix: str | None = Field(default=None, description="Put before each tool's name, e.g. git_.")
    requires_approval: bool | list[str] = Field(
        default=False, description="True for all tools, or the names of those that wait for an approval signal."
    )
    timeout: float | None = Field(default=None, gt=0, description="Seconds one tool call may take; empty for none.")
    retries: int = Field(
        default=0, ge=0, description="Extra attempts of a call lost in transit (a timeout); never of a server's error."
    )
    retry_delay: float = Field(default=0.0, ge=0, description="Seconds between attempts.")

    def get_server(self) -> MCPServer:
        """The `MCPServer` these settings describe (validated as `MCPServer(...)` validates)."""
        options: dict[str, Any] = {
            "include": self.include,
            "exclude": self.exclude,
            "prefix": self.prefix,
            "requires_approval": self.requires_approval,
            "timeout": self.timeout,
            "retries": self.retries,
            "retry_delay": self.retry_delay,
        }
        if self.command is not None:
            options.update(command=self.command, args=self.args, env=self.env, cwd=self.cwd)
        if self.url is not None:
            options.update(url=self.url, headers=self.headers)
        return MCPServer(**options)


__all__ = ["MCPServerBlock"]
