"""MCP servers as an agent's tools: `MCPServer`, a `Toolset` on the official `mcp` SDK's client.

    ```python
    import sys

    from prefect_beluga.agents import Agent
    from prefect_beluga.llms import OfflineChatModel
    from prefect_beluga.mcp import MCPServer
    from prefect_beluga.tools import tool

    @tool
    def add(a: int, b: int) -> int:
        \"\"\"Add two integers.\"\"\"
        return a + b

    # `pip install mcp-server-time`; command="mcp-server-time" where its script is on PATH
    time_server = MCPServer(command=sys.executable, args=["-m", "mcp_server_time", "--local-timezone", "UTC"],
                            include=["get_current_time"])
    agent = Agent(OfflineChatModel(), tools=[add, time_server])   # add's schema, and the server's tools
    agent.invoke("Asia/Tokyo")["output"]   # the offline model calls get_current_time(timezone="Asia/Tokyo")
    # -> '[offline model] { "timezone": "Asia/Tokyo", "datetime": "...T...+09:00", ... }'
    ```

How a run uses a server. When an agent run starts it opens one session per `MCPServer` (a
stdio process started, or a streamable HTTP connection made), lists the tools once, and keeps
the session for the whole run: every tool call of the run, parallel ones included, goes through
it; a `notifications/tools/list_changed` makes the next model turn list the tools again (or the
turn after it, when the change arrives after that turn's request was sent: MCP does not order
the change against a call's result; docs/mcp.md says why this is not waited for). The
session is closed when the run ends, whether it returns, fails or is cancelled; a stdio server's
process ends with it (the SDK closes its stdin, then terminates its process tree).

The session lives in a task of its own (`_session.Session._own`): the SDK's transports are anyio
context managers that must be entered and left by one task, while the agent's tool calls run in
other tasks (one per concurrent call, each a Prefect task run). The run reaches its sessions
through a context variable, so the tool objects themselves are long-lived (one per server tool
definition), and so are the Prefect tasks built for them.

Nothing here imports Prefect: a call is a sub-step (`prefect_beluga.core._substeps`) like a
function tool's, which `orchestration/` turns into a task run named after the tool.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from prefect_beluga.core._checks import check_int, check_number
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.fingerprint import key_of
from prefect_beluga.mcp._session import Session, run_sessions
from prefect_beluga.tools import Tool, ToolArgumentsError, Toolset

if TYPE_CHECKING:
    import mcp

_INVALID = re.compile(r"[^A-Za-z0-9_-]")


class MCPServer(Toolset):
    """An MCP server whose tools an agent can call: put it in `Agent(tools=[...])`.

    Give either `command` (a stdio server: a process started per agent run) or `url` (a
    streamable HTTP server).

    Args:
        command: The executable of a stdio server (e.g. "mcp-server-time", "uvx").
        args: Its command-line arguments.
        env: Extra environment variables for it (kept as `SecretStr`: they often hold keys).
            The SDK passes a safe default environment (HOME, PATH, ...) under them.
        cwd: Its working directory.
        url: The endpoint of a streamable HTTP server (e.g. "http://127.0.0.1:8000/mcp").
        headers: HTTP headers for every request (e.g. `{"Authorization": "Bearer ..."}`),
            kept as `SecretStr` and never logged.
        include: Only these of the server's tools (by the server's names).
        exclude: All of the server's tools but these.
        prefix: Put before each tool's name (e.g. "git_" or "time_"), to keep two servers'
            names apart; the Prefect task runs are named after the prefixed name.
        requires_approval: True for every tool of the server, or a list of the server's tool
            names: inside a workflow run, such a call waits for the signal `approve:<tool>`
            (`workflow.signal(run_id, "approve:<tool>", {"approved": True})`), as a function
            tool made with `tool(requires_approval=True)` does.
        timeout: Seconds one attempt of a tool call may take (the task run's timeout); None: no limit.
        retries: Extra attempts of a call that failed in transit: a timeout, a lost connection,
            a request the SDK gave up on (Prefect task retries, as a function tool's `retries`).
            An error the server answers with (`isError`, a JSON-RPC error) is not retried: it
            goes to the model. Mind that a retried call may have run on the server already.
        retry_delay: Seconds between attempts.

    Examples:
        A stdio server from the package index:

        ```python
        from prefect_beluga.mcp import MCPServer

        MCPServer(command="mcp-server-git", args=["--repository", "/srv/repo"], prefix="git_",
                  include=["git_status", "git_log"])
        ```

        A streamable HTTP server with a bearer token:

        ```python
        import os

        token = os.environ.get("TOOLS_TOKEN", "")   # no connection is made until an agent run
        MCPServer(url="https://tools.example.com/mcp", headers={"Authorization": f"Bearer {token}"},
                  requires_approval=["delete_record"], timeout=30)
        ```
    """

    def __init__(
        self,
        command: str | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str | SecretStr] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        url: str | None = None,
        headers: Mapping[str, str | SecretStr] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        prefix: str | None = None,
        requires_approval: bool | Sequence[str] = False,
        timeout: float | None = None,
        retries: int = 0,
        retry_delay: float = 0.0,
    ) -> None:
        require_sdk()
        if (command is None) == (url is None):
            raise ValidationError(
                "MCPServer needs exactly one of `command` (a stdio server) and `url` (a streamable HTTP server)"
                + ("; got both" if command is not None else "")
            )
        if command is not None:
            if not isinstance(command, str) or not command:
                raise ValidationError(f"MCPServer: command must be a non-empty str, got {command!r}")
            if headers:
                raise ValidationError("MCPServer: `headers` go with `url`, not with `command` (a stdio server)")
        else:
            if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
                raise ValidationError(f"MCPServer: url must be an http(s) URL, got {url!r}")
            if args or env or cwd is not None:
                raise ValidationError("MCPServer: `args`, `env` and `cwd` go with `command`, not with `url`")
        self.command = command
        self.args = tuple(_strings(args, "args"))
        self.env = _secrets(env, "env")
        self.cwd = str(cwd) if cwd is not None else None
        self.url = url
        self.headers = _secrets(headers, "headers")
        self.include = frozenset(_strings(include, "include")) if include is not None else None
        self.exclude = frozenset(_strings(exclude, "exclude")) if exclude is not None else frozenset()
        if prefix is not None and (not isinstance(prefix, str) or _INVALID.search(prefix)):
            raise ValidationError(f"MCPServer: prefix must be letters, digits, '_' or '-', got {prefix!r}")
        self.prefix = prefix or ""
        if isinstance(requires_approval, bool):
            self.requires_approval: bool | frozenset[str] = requires_approval
        else:
            self.requires_approval = frozenset(_strings(requires_approval, "requires_approval"))
        self.timeout = check_number(timeout, "MCPServer: timeout", none=True, seconds=True)
        self.retries = check_int(retries, "MCPServer: retries")
        self.retry_delay = float(check_number(retry_delay, "MCPServer: retry_delay", strict=False, seconds=True))
        self.name = Path(command).name if command is not None else (urlsplit(url).netloc or url)  # type: ignore[arg-type]
        self._tools: dict[str, MCPTool] = {}  # by prefixed name: reused while the definition holds

    # -- Toolset -------------------------------------------------------------------------------

    @asynccontextmanager
    async def open(self) -> Any:
        """Open a session for one run (see the module docstring); yields it."""
        session = Session(self)
        await session.start()
        token = run_sessions.set({**(run_sessions.get() or {}), id(self): session})
        try:
            yield session
        finally:
            run_sessions.reset(token)
            await session.close()

    def cache_key(self) -> str:
        """The server's identity and tool selection (no env values, no headers)."""
        return key_of(
            f"{type(self).__module__}.{type(self).__qualname__}",
            command=self.command,
            args=list(self.args),
            env=sorted(self.env),
            cwd=self.cwd,
            url=self.url,
            include=sorted(self.include) if self.include is not None else None,
            exclude=sorted(self.exclude),
            prefix=self.prefix,
            requires_approval=(
                self.requires_approval if isinstance(self.requires_approval, bool) else sorted(self.requires_approval)
            ),
            timeout=self.timeout,
            retries=self.retries,
            retry_delay=self.retry_delay,
        )

    # -- tools ---------------------------------------------------------------------------------

    def _tool_for(self, spec: mcp.Tool) -> MCPTool | None:
        """The tool for the server's definition `spec` (None when include/exclude leave it out)."""
        if spec.name in self.exclude or (self.include is not None and spec.name not in self.include):
            return None
        name = (self.prefix + _INVALID.sub("_", spec.name))[:64]
        approval = (
            self.requires_approval
            if isinstance(self.requires_approval, bool)
            else spec.name in self.requires_approval or name in self.requires_approval
        )
        schema = dict(spec.input_schema or {"type": "object"})
        schema.setdefault("properties", {})
        description = spec.description or spec.title or ""
        existing = self._tools.get(name)
        if (
            existing is not None
            and existing.remote_name == spec.name
            and existing.parameters == schema
            and existing.description == description
            and existing.requires_approval == approval
        ):
            return existing
        tool = MCPTool(self, spec.name, name, description, schema, approval)
        self._tools[name] = tool
        return tool

    def _transport(self) -> Any:
        """The SDK's transport for this server, for one session."""
        if self.command is not None:
            from mcp import StdioServerParameters

            return StdioServerParameters(
                command=self.command,
                args=list(self.args),
                env={key: value.get_secret_value() for key, value in self.env.items()} or None,
                cwd=self.cwd,
            )
        import httpx2  # the mcp SDK's HTTP client
        from mcp.client.streamable_http import streamable_http_client

        # the SDK's default timeouts: 30 s to connect, write or wait for the pool, 300 s to read a stream
        http = httpx2.AsyncClient(
            headers={key: value.get_secret_value() for key, value in self.headers.items()},
            timeout=httpx2.Timeout(30.0, read=300.0),
        )
        return _owned_http(streamable_http_client(self.url, http_client=http), http)

    def __repr__(self) -> str:
        where = f"command={self.command!r}, args={list(self.args)!r}" if self.command else f"url={self.url!r}"
        return f"MCPServer({where})"


class MCPTool(Tool):
    """One tool of an MCP server, as an agent sees it (built by `MCPServer`, not by hand).

    Its arguments are checked against the server's JSON schema only as far as the agent can
    tell the model what to fix (an object, its required fields, no unknown fields when the
    schema forbids them); the server validates the rest and its error goes back to the model.
    """

    def __init__(
        self, server: MCPServer, remote_name: str, name: str, description: str, schema: dict[str, Any], approval: bool
    ) -> None:
        # Not Tool.__init__ (there is no Python function): its checks and attributes, though.
        self._runnable = None
        self.fn = self  # fingerprinted by the agent's cache key through the server instead
        self.server = server
        self.remote_name = remote_name
        self.args_model = None  # type: ignore[assignment]
        self._is_async = True
        self._describe(name, description, schema, retries=server.retries, retry_delay=server.retry_delay,
                       timeout=server.timeout, requires_approval=approval)

    def _validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The server's schema checked as far as the model can be told what to fix (see the class)."""
        problems = [f"field {field!r} is required but missing" for field in self.parameters.get("required", ())
                    if field not in arguments]
        if self.parameters.get("additionalProperties") is False:
            known = self.parameters.get("properties", {})
            problems += [f"field {field!r} is not an argument of this tool" for field in arguments
                         if field not in known]
        if problems:
            raise ToolArgumentsError(f"invalid arguments for tool {self.name!r}: {'; '.join(problems)}")
        return arguments

    async def acall(self, arguments: dict[str, Any]) -> str:
        """Call the tool through the current run's session; the result as the tool message's text."""
        session = (run_sessions.get() or {}).get(id(self.server))
        if session is None:
            raise ValidationError(
                f"MCP tool {self.name!r} was called outside a run of an agent that has its server {self.server!r}"
            )
        return await session.call(self.remote_name, self.name, arguments)

    def __call__(self, **arguments: Any) -> Any:
        raise ValidationError(f"MCP tool {self.name!r} is called by an agent run, not directly")

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        return self

    def __repr__(self) -> str:
        return f"MCPTool({self.name!r}, server={self.server!r})"


def require_sdk() -> None:
    """Fail with the fix when the `mcp` extra is not installed (checked without importing it)."""
    if importlib.util.find_spec("mcp") is None:
        raise ImportError("prefect_beluga.mcp needs the official MCP SDK: pip install 'prefect-beluga[mcp]'")


@asynccontextmanager
async def _owned_http(transport: Any, http: Any) -> Any:
    """The streamable HTTP transport, closing the HTTP client it was given when it ends."""
    async with http, transport as streams:
        yield streams


def _strings(values: Sequence[str] | None, option: str) -> list[str]:
    if values is None:
        return []
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence | frozenset | set):
        raise ValidationError(f"MCPServer: {option} must be a list of str, got {values!r:.80}")
    values = list(values)
    bad = [value for value in values if not isinstance(value, str)]
    if bad:
        raise ValidationError(f"MCPServer: {option} must be a list of str, got {bad[0]!r:.80} in it")
    return values


def _secrets(values: Mapping[str, str | SecretStr] | None, option: str) -> dict[str, SecretStr]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ValidationError(f"MCPServer: {option} must be a mapping of str to str, got {type(values).__name__}")
    secrets: dict[str, SecretStr] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not isinstance(value, (str, SecretStr)):
            raise ValidationError(f"MCPServer: {option} must map str to str (or SecretStr); {key!r} does not")
        secrets[key] = value if isinstance(value, SecretStr) else SecretStr(value)
    return secrets


__all__ = ["MCPServer", "MCPTool"]
