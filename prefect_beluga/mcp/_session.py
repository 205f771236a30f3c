"""An MCP server's session for one agent run: opened, listed, watched for tool-list changes,
called, and closed, in a task of its own (see `prefect_beluga.mcp._client` for why)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from prefect_beluga.core.errors import MCPToolError
from prefect_beluga.tools import Tool, ToolsetSession

if TYPE_CHECKING:
    import mcp

logger = logging.getLogger("prefect_beluga.mcp")


class Server(Protocol):
    """What a session needs of its server (an `MCPServer`)."""

    name: str

    def _transport(self) -> Any:
        """The SDK's transport for one session."""

    def _tool_for(self, spec: mcp.Tool) -> Tool | None:
        """The tool for the server's definition `spec` (None when left out)."""


#: Seconds a server has to start, answer the handshake and list its tools (`uvx` may download first).
CONNECT_TIMEOUT = 120.0

#: The sessions of the current agent run, by server (set by `MCPServer.open`).
run_sessions: ContextVar[Mapping[int, Session] | None] = ContextVar("prefect_beluga_mcp_sessions", default=None)


class Session(ToolsetSession):
    """One client session of one server for one agent run, owned by a task of its own."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._client: mcp.Client | None = None
        self._tools: list[Tool] = []
        self._stale = False
        self._closing = asyncio.Event()
        self._ready: asyncio.Future[None] | None = None
        self._owner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the session: the handshake and the first tools/list, within `CONNECT_TIMEOUT`."""
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ready = ready
        self._owner = asyncio.create_task(self._own(), name=f"mcp session {self.server.name}")
        try:
            await asyncio.wait_for(asyncio.shield(ready), CONNECT_TIMEOUT)
        except asyncio.TimeoutError:
            await self.close()
            raise ConnectionError(
                f"MCP server {self.server!r} did not answer its handshake and tools/list within {CONNECT_TIMEOUT:g} s"
            ) from None
        except BaseException:
            await self.close()
            raise

    async def _own(self) -> None:
        from mcp import Client

        assert self._ready is not None
        ready = self._ready
        try:
            async with Client(self.server._transport(), message_handler=self._on_message) as client:
                self._client = client
                await self._list()
                async with anyio.create_task_group() as group:
                    if _announces_changes(client):
                        group.start_soon(self._watch, client)
                    ready.set_result(None)
                    await self._closing.wait()
                    group.cancel_scope.cancel()
        except asyncio.CancelledError:
            ready.cancel()  # stopped while connecting (close() after a timeout), or at the loop's end
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the run, or logged after it started
            if not ready.done():
                ready.set_exception(_connect_error(self.server, exc))
            else:
                logger.warning("MCP server %s: the session ended with %s", self.server.name, type(exc).__name__)
        finally:
            self._client = None

    async def close(self) -> None:
        """End the session (and a stdio server's process); waits for it, even when cancelled.

        An open session ends when its owner sees `_closing`; one still connecting is cancelled
        (the SDK's stdio shutdown is shielded and bounded, so the process is not left behind)."""
        self._closing.set()
        owner = self._owner
        if owner is None or owner.done():
            return
        if self._ready is not None and not self._ready.done():
            owner.cancel()
        try:
            await asyncio.wait({owner})
        except asyncio.CancelledError:
            await asyncio.wait({owner}, timeout=10)
            raise
        finally:
            if self._ready is not None and self._ready.done() and not self._ready.cancelled():
                self._ready.exception()  # retrieved: asyncio does not warn about it

    async def _watch(self, client: mcp.Client) -> None:
        """On a 2026-07-28 connection: listen for `tools/list_changed` (a legacy server sends
        it as a notification instead: `_on_message`)."""
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    self._stale = True
        except Exception as exc:  # noqa: BLE001 - the tools stay as listed; the session goes on
            logger.debug("MCP server %s: no tools/list_changed events (%s)", self.server.name, type(exc).__name__)

    async def _on_message(self, message: Any) -> None:
        from mcp import types

        if isinstance(message, types.ToolListChangedNotification):
            self._stale = True

    async def _list(self) -> None:
        assert self._client is not None
        specs: list[mcp.Tool] = []
        cursor: str | None = None
        while True:
            page = await self._client.list_tools(cursor=cursor, cache_mode="refresh" if self._stale else "use")
            specs.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self._stale = False
        self._tools = [tool for spec in specs if (tool := self.server._tool_for(spec)) is not None]

    async def tools(self) -> Sequence[Tool]:
        if self._stale and self._client is not None:
            await self._list()
        return list(self._tools)

    async def call(self, remote_name: str, name: str, arguments: dict[str, Any]) -> str:
        """Call the server's tool `remote_name` (the agent's `name`); the result as the tool message's text."""
        client = self._client
        if client is None:
            raise ConnectionError(f"the session of MCP server {self.server.name!r} is closed")
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

        try:
            result = await client.call_tool(remote_name, arguments)
        except MCPError as exc:
            if exc.code in (CONNECTION_CLOSED, REQUEST_TIMEOUT):
                raise  # lost in transit: retried under the server's `retries`
            raise MCPToolError(f"JSON-RPC error {exc.code}: {exc}", tool=name, code=exc.code) from None
        text = render_content(result)
        if result.is_error:
            raise MCPToolError(text or "the server reported an error without a message", tool=name)
        return text


def render_content(result: Any) -> str:
    """A `CallToolResult` as the text the model reads: its text blocks; structured content as
    JSON when there is no text; images, audio and binary resources as a note of what they were."""
    parts = list(_render_blocks(result.content or ()))
    if not any(parts) and result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False, default=str)
    return "\n".join(part for part in parts if part)


def _render_blocks(blocks: Sequence[Any]) -> Iterator[str]:
    for block in blocks:
        kind = getattr(block, "type", None)
        if kind == "text":
            yield block.text
        elif kind in ("image", "audio"):
            size = len(block.data) * 3 // 4 - len(block.data[-2:]) + len(block.data[-2:].rstrip("="))
            yield f"[{kind} ({block.mime_type}, about {size} bytes) returned by the tool; not shown]"
        elif kind == "resource":
            resource = block.resource
            text = getattr(resource, "text", None)
            yield text if text is not None else f"[binary resource {resource.uri} returned by the tool; not shown]"
        elif kind == "resource_link":
            yield f"[resource link: {block.uri}{f' ({block.name})' if getattr(block, 'name', None) else ''}]"
        else:
            yield f"[{kind} content returned by the tool; not shown]"


def _announces_changes(client: mcp.Client) -> bool:
    """Whether the server says its tool list changes, on a connection that must listen for it."""
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    tools = client.server_capabilities.tools
    return bool(tools and tools.list_changed) and client.protocol_version in MODERN_PROTOCOL_VERSIONS


def _connect_error(server: Server, exc: BaseException) -> BaseException:
    if isinstance(exc, asyncio.CancelledError):
        return exc
    inner = getattr(exc, "exceptions", None)  # an exception group of one, from the SDK's task groups
    while isinstance(inner, (list, tuple)) and len(inner) == 1:
        exc, inner = inner[0], getattr(inner[0], "exceptions", None)
    error = ConnectionError(f"could not open a session with MCP server {server!r}: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
