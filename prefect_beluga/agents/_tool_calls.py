"""One model turn's tool calls: found by name, their arguments checked, approved where a tool
asks for it, run as sub-steps (at most `max_concurrency` at once) and answered as tool messages.

A call that cannot run or fails is answered too, with an error the model can act on: the loop
goes on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

from prefect_beluga.core._substeps import SubstepRunner
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.streaming import emit_tool_call, emit_tool_result
from prefect_beluga.schema import ToolCall, ToolMessage
from prefect_beluga.tools import Tool, ToolArgumentsError, Toolset
from prefect_beluga.tools._tool import render_result


class RunTools:
    """The tools of one agent run: the agent's own, and those its toolsets' sessions list now."""

    def __init__(
        self,
        agent: str,
        own: Mapping[str, Tool],
        specs: list[dict[str, Any]],
        toolsets: Sequence[Toolset] = (),
        sessions: Sequence[Any] = (),
        *,
        reserved: frozenset[str] = frozenset(),
    ) -> None:
        self.agent = agent
        self.own = own
        self.toolsets = toolsets
        self.sessions = sessions
        self.reserved = reserved
        self.by_name: Mapping[str, Tool] = own
        self._own_specs = specs
        self._specs = specs
        self._listed: list[Sequence[Tool]] | None = None

    async def specs(self) -> list[dict[str, Any]]:
        """The `tools` parameter of the next model turn (the toolsets' tools listed again only
        when a server said they changed)."""
        if not self.sessions:
            return self._specs
        listed = [await session.tools() for session in self.sessions]
        if listed != self._listed:
            by_name = dict(self.own)
            for toolset, tools in zip(self.toolsets, listed, strict=True):
                for item in tools:
                    if item.name in by_name or item.name in self.reserved:
                        raise ValidationError(
                            f"Agent {self.agent!r}: the tool {item.name!r} of {toolset.name!r} has the name of "
                            f"another tool of the agent; give the server a prefix (MCPServer(..., prefix=...))"
                        )
                    by_name[item.name] = item
            self.by_name, self._listed = by_name, listed
            self._specs = [*self._own_specs, *(t.to_openai() for tools in listed for t in tools)]
        return self._specs


def announce(calls: Sequence[ToolCall], *, node: str) -> None:
    """A `__tool_call__` stream event for each call, before it runs."""
    for call in calls:
        emit_tool_call(call.name, call.id, _arguments_of(call), default_node=node)


async def run_tool_calls(
    runner: SubstepRunner, calls: Sequence[ToolCall], tools: RunTools, *, max_concurrency: int | None
) -> list[ToolMessage]:
    """The tool messages answering `calls`, in their order; the calls run concurrently."""
    limit = asyncio.Semaphore(max_concurrency or len(calls))

    async def one(call: ToolCall) -> ToolMessage:
        async with limit:
            content, ok = await _tool_call(runner, call, tools)
        emit_tool_result(call.name, call.id, content, ok=ok, default_node=tools.agent)
        return ToolMessage(content, tool_call_id=call.id, name=call.name)

    return list(await asyncio.gather(*(one(call) for call in calls)))


async def _tool_call(runner: SubstepRunner, call: ToolCall, tools: RunTools) -> tuple[str, bool]:
    """The tool message's text for `call` (the result, or an error the model can act on),
    and whether the tool ran and returned."""
    item = tools.by_name.get(call.name)
    if item is None:
        available = ", ".join(tools.by_name) or "none"
        return f"Error: there is no tool named {call.name!r}. Available tools: {available}.", False
    try:
        arguments = item.parse_arguments(call.arguments)
    except ToolArgumentsError as exc:
        return f"Error: {exc}. Fix the arguments and call the tool again.", False
    if item.requires_approval:
        refusal = await _approval(runner, item)
        if refusal is not None:
            return refusal, False
    try:
        value = await runner.run(item.substep, item.run_call, arguments, call.id)
    except Exception as exc:  # noqa: BLE001 - any tool error goes back to the model
        kind = "timed out" if isinstance(exc, TimeoutError) else "failed"
        return f"Error: tool {item.name!r} {kind}: {type(exc).__name__}: {exc}", False
    return render_result(value), True


async def _approval(runner: SubstepRunner, item: Tool) -> str | None:
    """None when the call may run; else the tool message saying why it did not."""
    if not runner.in_workflow():
        return (
            f"Error: tool {item.name!r} needs approval, which only a workflow run can wait for "
            f"(signal 'approve:{item.name}'); it was not run."
        )
    payload = await runner.wait_for_signal(f"approve:{item.name}")
    approved = payload is not False and not (isinstance(payload, Mapping) and payload.get("approved") is False)
    if approved:
        return None
    reason = payload.get("reason") if isinstance(payload, Mapping) else None
    return f"The call to {item.name!r} was not approved{f': {reason}' if reason else ''}; it was not run."


def _arguments_of(call: ToolCall) -> Any:
    """The call's arguments for a stream event: the JSON object, or the text as the model sent it."""
    try:
        return json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        return call.arguments
