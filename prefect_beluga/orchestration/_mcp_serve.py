"""Runnables and Workflows as MCP tools: `serve(...)`, `create_server(...)`, `http_app(...)`.

    ```python
    # example: not run (serves MCP over stdio or HTTP until the process is stopped)
    from prefect_beluga.mcp import serve
    serve(research_chain, support_workflow, name="beluga")            # stdio, for a desktop client
    serve(research_chain, transport="http", port=8765, token=token)   # streamable HTTP at /mcp
    ```

Each target is one MCP tool. A Runnable (chain, graph, agent, ...) is called with the tool's
arguments as its input dict, inside a Prefect flow run named after the tool; a `Workflow` is
started with `aexecute(arguments, stream=True)` (so through its deployment when it has one) and
its result awaited. Its schema is `{"input": str}` unless the target is a `tool(runnable,
args_schema=Model, ...)`, whose name, description and argument model are used; the description
is otherwise the target's docstring (a workflow's `description`).

Progress: when the client sends a progress token, a Workflow's stream events (tokens, retries)
and a Runnable's start and end are `notifications/progress`. A cancelled request (the client's
`notifications/cancelled`, or a closed connection) cancels the call: a Runnable's flow run is
cancelled with it, a Workflow run is cancelled through the API. An exception goes back as the
tool's error result (`isError`), its type and message as text.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any, Literal

from pydantic import SecretStr

from prefect_beluga.core import events
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.runnable import Runnable
from prefect_beluga.mcp._client import require_sdk
from prefect_beluga.tools import Tool
from prefect_beluga.tools._tool import render_result

logger = logging.getLogger("prefect_beluga.mcp")

Transport = Literal["stdio", "http"]

#: The message of the Cancelled state of a call the MCP client cancelled.
CANCELLED = "Cancelled: the MCP client cancelled the call"
_STOP_GRACE = 10.0  # seconds a cancelled call may take to stop before it is cancelled outright


class _Exposed:
    """One served target: its tool name, description, schema and how a call runs."""

    def __init__(self, target: Any, index: int) -> None:
        from prefect_beluga.orchestration.workflow import Workflow

        self.workflow: Workflow | None = None
        self.runnable: Runnable | None = None
        if isinstance(target, Workflow):
            self.workflow = target
            self.spec = Tool(_workflow_input, name=target.workflow_id,
                             description=target.description or _doc(target.flow.fn))
        elif isinstance(target, Tool):
            if target._runnable is None:
                raise ValidationError(
                    f"serve(): targets[{index}] is a tool of a plain function; serve Runnables and Workflows "
                    f"(e.g. RunnableCallable(fn) or a Chain)"
                )
            self.runnable, self.spec = target._runnable, target
        elif isinstance(target, Runnable):
            self.runnable = target
            self.spec = Tool(target, description=_doc(target))
        else:
            raise ValidationError(
                f"serve(): targets[{index}] must be a Runnable, a Workflow or tool(runnable, ...), "
                f"got {type(target).__name__}: {target!r:.80}"
            )
        self.name = self.spec.name
        self._flow: Any = None

    def describe(self) -> Any:
        from mcp import types

        return types.Tool(name=self.name, description=self.spec.description or None, input_schema=self.spec.parameters)

    async def call(self, arguments: dict[str, Any], progress: Any) -> Any:
        """Run the target on the validated `arguments`; its result."""
        payload = {key: value.model_dump(mode="json") if hasattr(value, "model_dump") else value
                   for key, value in self.spec.parse_arguments(arguments).items()}
        if self.workflow is not None:
            return await self._call_workflow(payload, progress)
        return await self._call_runnable(payload, progress)

    async def _call_runnable(self, payload: dict[str, Any], progress: Any) -> Any:
        from prefect_beluga.core.streaming import StopSignal, stoppable

        if self._flow is None:
            self._flow = self._build_flow()
        await progress(0.0, 1.0, f"{self.name}: started")
        signal = StopSignal()
        with stoppable(signal):  # the flow run's task sees the signal (its context is a copy of this one)
            run = asyncio.ensure_future(self._flow(payload))
        try:
            result = await asyncio.shield(run)
        except asyncio.CancelledError:
            # Not a plain cancel, which Prefect's engine would record as a crash: the stop signal
            # cancels the innermost block running, and the flow returns a Cancelled state.
            signal.request(CANCELLED)
            await asyncio.wait({run}, timeout=_STOP_GRACE)
            if not run.done():
                run.cancel()
            elif not run.cancelled():
                run.exception()  # retrieved, so asyncio does not warn about it
            raise
        await progress(1.0, 1.0, f"{self.name}: done")
        return result

    def _build_flow(self) -> Any:
        from prefect import flow
        from prefect.exceptions import CancelledRun
        from prefect.states import Cancelled

        from prefect_beluga.core.streaming import cancellable, stop_signal

        runnable = self.runnable
        assert runnable is not None

        async def body(arguments: dict[str, Any]) -> Any:
            signal = stop_signal()
            try:
                with cancellable():
                    return await runnable.ainvoke(arguments)
            except (asyncio.CancelledError, CancelledRun):
                if signal is not None and signal.requested:
                    return Cancelled(message=signal.requested)
                raise

        body.__name__ = body.__qualname__ = self.name
        return flow(name=self.name, description=self.spec.description or None, log_prints=False,
                    persist_result=False)(body)

    async def _call_workflow(self, payload: dict[str, Any], progress: Any) -> Any:
        workflow = self.workflow
        assert workflow is not None
        workflow_id, run_id = await workflow.aexecute(payload, stream=True)
        await progress(0, None, f"{workflow_id}: run {run_id} started")
        try:
            steps = 0
            async for event in workflow.astream(run_id):
                if events.END in event:
                    return event[events.END]
                steps += 1
                await progress(steps, None, _event_text(event))
            return await workflow.aget_result(workflow_id, run_id)
        except asyncio.CancelledError:
            await asyncio.shield(workflow.acancel(run_id, message=CANCELLED))
            raise


def _workflow_input(input: str) -> Any:
    """A workflow's tool schema: `{"input": str}` (never called: the workflow runs instead).

    Args:
        input: The input text.
    """
    raise NotImplementedError


def create_server(*targets: Any, name: str = "prefect-beluga") -> Any:
    """The MCP server (the official SDK's low-level `Server`) with one tool per target.

    Args:
        *targets: Runnables (chains, graphs, agents), Workflows, or `tool(runnable, name=...,
            description=..., args_schema=...)` to choose how one is shown.
        name: The server's name, shown by MCP clients.

    Examples:
        ```python
        from prefect_beluga import Chain
        from prefect_beluga.mcp import create_server

        research_chain = Chain([lambda state: {**state, "output": state["input"].upper()}], name="research")
        server = create_server(research_chain, name="beluga")
        app = server.streamable_http_app()   # an ASGI app, e.g. to mount in your own Starlette app
        ```
    """
    require_sdk()
    from mcp import types
    from mcp.server.lowlevel import Server

    if not targets:
        raise ValidationError("serve(): give at least one Runnable or Workflow to expose")
    if not isinstance(name, str) or not name:
        raise ValidationError(f"serve(): name must be a non-empty str, got {name!r}")
    exposed: dict[str, _Exposed] = {}
    for index, target in enumerate(targets):
        item = _Exposed(target, index)
        if item.name in exposed:
            raise ValidationError(
                f"serve(): two targets are named {item.name!r}; name one with tool(runnable, name=...)"
            )
        exposed[item.name] = item

    async def list_tools(ctx: Any, params: Any) -> Any:
        return types.ListToolsResult(tools=[item.describe() for item in exposed.values()])

    async def call_tool(ctx: Any, params: Any) -> Any:
        item = exposed.get(params.name)
        if item is None:
            return _error(f"there is no tool named {params.name!r}; the tools are {', '.join(exposed)}")

        async def progress(done: float, total: float | None, message: str) -> None:
            try:
                await ctx.session.report_progress(done, total, message)
            except Exception:  # noqa: BLE001 - progress is best effort; the call goes on
                logger.debug("could not send a progress notification", exc_info=True)

        try:
            value = await item.call(dict(params.arguments or {}), progress)
        except Exception as exc:  # noqa: BLE001 - the client's model reads what went wrong
            return _error(f"{type(exc).__name__}: {exc}")
        structured = value if isinstance(value, dict) else None
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=render_result(value))],
            structured_content=_jsonable(structured),
        )

    return Server(name, on_list_tools=list_tools, on_call_tool=call_tool)


def http_app(*targets: Any, name: str = "prefect-beluga", token: str | SecretStr | None = None,
             host: str = "127.0.0.1") -> Any:
    """`create_server(...)` as a streamable HTTP ASGI app (endpoint `/mcp`), behind a bearer
    token when `token` is given (`Authorization: Bearer <token>`, else 401)."""
    server = create_server(*targets, name=name)
    app = server.streamable_http_app(host=host)
    if token is None:
        return app
    secret = token.get_secret_value() if isinstance(token, SecretStr) else token
    if not isinstance(secret, str) or len(secret) < 8:
        raise ValidationError("serve(): token must be a string of at least 8 characters (or None: no token)")
    return _BearerToken(app, secret)


def serve(
    *targets: Any,
    name: str = "prefect-beluga",
    transport: Transport = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | SecretStr | None = None,
) -> None:
    """Serve Runnables and Workflows as MCP tools until stopped (see the module docstring).

    Args:
        *targets: Runnables, Workflows, or `tool(runnable, ...)` (see `create_server`).
        name: The server's name, shown by MCP clients.
        transport: "stdio" (a desktop client starts this process) or "http" (streamable HTTP
            at `http://host:port/mcp`).
        host: The address to listen on (http); loopback by default.
        port: The port (http).
        token: A bearer token every HTTP request must carry (at least 8 characters); None:
            none. Not with stdio (the client that starts the process is the only caller).

    Examples:
        ```python
        # example: not run (serves MCP over stdio or HTTP until the process is stopped)
        serve(research_chain)                                              # stdio
        serve(research_chain, transport="http", port=8765, token=os.environ["MCP_TOKEN"])
        ```
    """
    import anyio

    if transport not in ("stdio", "http"):
        raise ValidationError(f"serve(): transport must be 'stdio' or 'http', got {transport!r}")
    if transport == "stdio":
        if token is not None:
            raise ValidationError("serve(): a token goes with transport='http'; a stdio server has one caller")
        from mcp.server.stdio import stdio_server

        server = create_server(*targets, name=name)

        async def run() -> None:
            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())

        anyio.run(run)
        return
    from prefect_beluga.core._cli import run_asgi

    run_asgi(http_app(*targets, name=name, token=token, host=host), host, port, log_level="warning")


class _BearerToken:
    """ASGI middleware: HTTP requests need `Authorization: Bearer <token>` (compared in constant time)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            header = dict(scope.get("headers") or ()).get(b"authorization", b"")
            scheme, _, value = header.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self._token):
                body = json.dumps({"error": "unauthorized: send Authorization: Bearer <token>"}).encode()
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def __repr__(self) -> str:
        return "_BearerToken(token=***)"


def _error(text: str) -> Any:
    from mcp import types

    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def _doc(obj: Any) -> str:
    import inspect

    doc = inspect.getdoc(obj) or ""
    if type(obj).__doc__ and doc == inspect.getdoc(type(obj)) and type(obj).__module__.startswith("prefect_beluga."):
        doc = ""  # the library class's docstring says nothing about this chain
    return doc.split("\n\n", 1)[0].strip() or f"Runs {getattr(obj, 'name', type(obj).__name__)!r}."


def _event_text(event: dict[str, Any]) -> str:
    (kind, value), *_ = event.items()
    if kind == events.TOKEN and isinstance(value, dict):
        return f"{value.get('node')}: {value.get('text')}"
    return f"{kind}: {json.dumps(value, default=str)[:200]}"


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return None


__all__ = ["create_server", "http_app", "serve"]
