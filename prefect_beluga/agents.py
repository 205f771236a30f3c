"""Agents: a chat model calling tools in a loop, each model call and tool call a Prefect task run.

    ```python
    from prefect_beluga import llms
    from prefect_beluga.agents import Agent
    from prefect_beluga.tools import tool
    @tool(retries=2, timeout=10)
    def add(a: int, b: int) -> int:
        \"\"\"Add two integers.\"\"\"
        return a + b
    agent = Agent(llms.OpenAIChatModel(llms.Config(model_name="gpt-4o-mini")), tools=[add],
                  system_prompt="Use the tools.", name="adder")
    agent.invoke("What is 2 + 40?")["output"]  # '2 + 40 = 42.'
    ```

The loop: the model gets the conversation and the tools' JSON schemas; when it answers with
tool calls, they run — those of one turn concurrently, at most `max_concurrency` at a time —
and their results go back as tool messages (with their call ids); when it answers with text,
that is the output. A tool that finally fails (after its retries) or arguments that do not fit
its schema do not stop the loop: the error goes back to the model as the tool message, naming
the field, so the model can fix its call. `max_iterations` model turns without a final answer
raise `AgentIterationLimit`. With `output_type` (a pydantic model), the answer is asked for in
the way the model's server supports (`llm.capabilities`, declared per server preset, never
guessed from the model name), validated by pydantic, and parsed into the model; an answer that
does not validate gets one corrective turn, then `AgentOutputError`. The output modes:

- "json_schema": a `json_schema` response format (where the server honours it, and honours
  it together with tools when the agent has tools): OpenAI, Azure, Ollama, vLLM; Groq and
  Gemini when the agent has no tools.
- "tool": a forced call of an output tool, `final_result`, whose parameters are the schema
  (the way Pydantic AI's default output mode works): `tool_choice="required"` when the agent
  has tools of its own, the output tool named otherwise. Anthropic; Groq and Gemini with tools.
- "prompted": the schema in the system prompt, with a `json_object` response format where
  the server has JSON mode: servers declared to support neither of the above ("compatible").

`Agent(..., output_mode=...)` picks one explicitly (a mode the server does not support is a
`ValidationError` naming the capability).

Prefect: the agent asks `prefect_beluga.core.substeps` to run each model call and tool call as
a sub-step; inside a flow run (as a chain step, a graph node, a workflow body or in your own
`@flow`) each is a Prefect task run — the model call named after the chat model, a tool call
after the tool, with the tool's `retries` / `timeout` as its task policy. Invoked on its own,
outside any flow run, the agent starts one flow run named after it. Inside a workflow run tool
calls and model turns are durable like chain steps (a retried run reads back the finished ones),
and a tool made with `requires_approval=True` waits for the signal `approve:<tool>`:

    ```python
    workflow.signal(run_id, "approve:refund", {"approved": True})
    ```

Streaming (docs/streaming.md): streamed with `astream(..., tokens=True)`, on its own or in a
chain or graph, the model's text streams as `__token__` events, and each tool call shows as a
`__tool_call__` event (before it runs) and a `__tool_result__` event (what went back to the
model); on its own, `{name: output}` and `{"__end__": output}` follow, as for a chain step.

Caching (docs/cache.md): `Agent.cache_key()` describes the agent by value (the model's
`cache_key()`, the tools' names, schemas and code, the system prompt, `max_iterations`, the
output schema), so an agent step with `cache=True` is a cross-run cache hit for a repeated
input. Inside such a step each model turn is cached too, by the model's `cache_key()` and the
messages so far: a re-run after a failure does not pay again for the turns already answered.
Tool calls are never cached (they may have side effects).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, Literal

import pydantic
from pydantic import BaseModel

from prefect_beluga.core import _telemetry
from prefect_beluga.core._checks import check_bool, check_int
from prefect_beluga.core.config import ConfigLike, ensure_config
from prefect_beluga.core.errors import (
    AgentIterationLimit,
    AgentOutputError,
    ValidationError,
)
from prefect_beluga.core.fingerprint import fingerprint, key_of
from prefect_beluga.core.runnable import Runnable
from prefect_beluga.core.streaming import emit_tool_call, emit_tool_result
from prefect_beluga.core.substeps import Substep, SubstepRunner, substeps
from prefect_beluga.llms.base import ChatModel, messages_from_state
from prefect_beluga.schema import (
    AIMessage,
    AnyMessage,
    ChatResult,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from prefect_beluga.tools import Tool, ToolArgumentsError, Toolset, as_tool, render_result
from prefect_beluga.usage import UsageLimits, check_limits, check_prices, priced_as
from prefect_beluga.usage import scope as usage_scope

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
_FENCED_BLOCK = re.compile(r"```(?:json)?\s*(\{.*\})\s*```", re.DOTALL)

#: The tool an `output_type` answer is given through in the "tool" output mode.
OUTPUT_TOOL = "final_result"

OutputMode = Literal["json_schema", "tool", "prompted"]
OUTPUT_MODES: tuple[str, ...] = ("json_schema", "tool", "prompted")


class Agent(Runnable):
    """A chat model that calls tools in a loop until it answers; a Runnable step.

    Input: `{"input": str}` (or a str), or `{"messages": [...]}` (e.g. an earlier result's
    messages plus a new `HumanMessage`); a chain's `"system"` and memory `"history"` keys are
    honoured as by a chat model step. Output: `{"output": final answer (str, or an
    `output_type` instance), "messages": the whole conversation, tool calls and results
    included}`.

    Args:
        llm: The chat model (`llms.OpenAIChatModel`, the offline model, ...).
        tools: Tools (see `prefect_beluga.tools.tool`); plain functions and Runnables are made
            tools as they are; a `Toolset` (an MCP server: `prefect_beluga.mcp.MCPServer`)
            stands for the tools it lists, opened once per run.
        system_prompt: Instructions put first (unless the input's messages already start with
            a system message).
        max_iterations: Model turns allowed; past them, `AgentIterationLimit`.
        output_type: A pydantic model the final answer must fit (asked for as the server
            supports: see the module docstring's output modes; then validated and parsed).
        name: The agent's name (its flow run's, when invoked on its own). Default "agent".
        max_concurrency: Tool calls of one turn running at once (default: all of them).
        model_retries: Extra attempts of a model call that failed with a transient error
            (the model call task's retries; rate limits' `Retry-After` is honoured).
        model_retry_delay: Seconds between those attempts.
        model_timeout: Seconds one model call may take.
        output_mode: How `output_type` is asked for: "json_schema", "tool" or "prompted";
            None (default) chooses from `llm.capabilities`.
        durable: Inside a flow run, persist each finished model turn and tool call under the
            run and its place in it, so a retried or re-run flow run reads them back instead of
            paying again (docs/durability.md). False: they run again.
        usage_limits: A `UsageLimits` budget for each run of the agent, shared by all its model
            turns (and their retries): a turn past it is not sent and `UsageLimitExceeded` is
            raised, stopping the loop (docs/budgets.md). Inside a chain, graph or workflow with
            limits of its own, both hold.

    Examples:
        ```python
        agent = Agent(llm, tools=[search_docs], system_prompt="Cite the docs.")
        agent.invoke({"input": "How are Prefect tasks retried?"})["output"]
        ```

        Structured output:

        ```python
        class Answer(pydantic.BaseModel):
            answer: str
            sources: list[str]
        Agent(llm, tools=[search_docs], output_type=Answer).invoke("...")["output"].sources
        ```

        As a chain step or graph node:

        ```python
        Chain([prepare, agent, publish], retries=2).invoke({"input": "..."})
        graph.add_node("research", agent)
        ```
    """

    def __init__(
        self,
        llm: ChatModel,
        tools: Sequence[Tool | Any] = (),
        system_prompt: str | None = None,
        max_iterations: int = 10,
        output_type: type[BaseModel] | None = None,
        name: str | None = None,
        *,
        max_concurrency: int | None = None,
        model_retries: int = 0,
        model_retry_delay: float = 0.0,
        model_timeout: float | None = None,
        output_mode: OutputMode | None = None,
        durable: bool = True,
        usage_limits: UsageLimits | None = None,
    ) -> None:
        self.name = name if name is not None else "agent"
        if not isinstance(self.name, str) or not self.name:
            raise ValidationError(f"Agent name must be a non-empty str, got {name!r}")
        where = f"Agent {self.name!r}"
        if not isinstance(llm, ChatModel):
            raise ValidationError(
                f"{where}: llm must be a chat model (e.g. llms.OpenAIChatModel), got {type(llm).__name__}"
            )
        if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
            raise ValidationError(f"{where}: tools must be a list, got {type(tools).__name__}")
        self.llm = llm
        self.toolsets: tuple[Toolset, ...] = tuple(t for t in tools if isinstance(t, Toolset))
        self.tools: tuple[Tool, ...] = tuple(
            as_tool(t, where=f"{where}: tools[{i}]") for i, t in enumerate(tools) if not isinstance(t, Toolset)
        )
        seen: dict[str, int] = {}
        for index, item in enumerate(self.tools):
            if item.name in seen:
                raise ValidationError(
                    f"{where}: tools[{seen[item.name]}] and tools[{index}] are both named {item.name!r}; "
                    f"give one another name with tool(name=...)"
                )
            seen[item.name] = index
        self._by_name = {t.name: t for t in self.tools}
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ValidationError(f"{where}: system_prompt must be a str, got {type(system_prompt).__name__}")
        self.system_prompt = system_prompt
        self.max_iterations = check_int(max_iterations, f"{where}: max_iterations", low=1)
        if output_type is not None and not (isinstance(output_type, type) and issubclass(output_type, BaseModel)):
            raise ValidationError(f"{where}: output_type must be a pydantic model class, got {output_type!r}")
        self.output_type = output_type
        self.max_concurrency = check_int(max_concurrency, f"{where}: max_concurrency", low=1, none=True)
        # read by the sub-step runner (orchestration/_durable.py)
        self.durable = check_bool(durable, f"{where}: durable")
        self.usage_limits = check_limits(usage_limits, where)
        check_prices(self.usage_limits, [priced_as(llm.config)], where)
        try:
            self.model_step = Substep(
                llm.name,
                retries=model_retries,
                retry_delay=model_retry_delay,
                timeout=model_timeout,
                cache_key=llm.cache_key,  # a model turn is pure: cached by value in a cached step
            )
        except ValidationError as exc:
            raise ValidationError(f"{where}: {str(exc).replace('sub-step', 'model call', 1)}") from None
        self._tool_specs = [t.to_openai() for t in self.tools]
        self.output_mode: OutputMode | None = None
        self._response_format: dict[str, Any] | None = None
        self._tool_choice: str | dict[str, Any] | None = None
        self._instructions: str | None = None
        if output_type is not None:
            self._set_output_mode(output_mode, where)
        elif output_mode is not None:
            raise ValidationError(f"{where}: output_mode={output_mode!r} needs an output_type")

    def _set_output_mode(self, output_mode: str | None, where: str) -> None:
        """Choose how `output_type` is asked for, from the model's declared capabilities."""
        assert self.output_type is not None
        caps = self.llm.capabilities
        has_tools = bool(self.tools or self.toolsets)
        server = getattr(getattr(self.llm, "server", None), "name", None)
        at = f" (server preset {server!r})" if server else ""
        supported = {
            "json_schema": caps.json_schema and (caps.json_schema_with_tools or not has_tools),
            "tool": caps.tools and caps.tool_choice,
            "prompted": True,
        }
        if output_mode is None:
            output_mode = next(mode for mode in OUTPUT_MODES if supported[mode])
        elif output_mode not in OUTPUT_MODES:
            raise ValidationError(f"{where}: output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
        elif not supported[output_mode]:
            if output_mode == "json_schema":
                needed = "json_schema" if not caps.json_schema else "json_schema_with_tools"
            else:
                needed = "tools" if not caps.tools else "tool_choice"
            raise ValidationError(
                f"{where}: output_mode={output_mode!r} needs capability {needed}, which {self.llm.name!r}{at} "
                f"does not declare; leave output_mode out to choose a supported one"
            )
        if OUTPUT_TOOL in self._by_name and output_mode == "tool":
            raise ValidationError(
                f"{where}: a tool is named {OUTPUT_TOOL!r}, the name of the output tool of output_mode='tool'; "
                "rename it with tool(name=...)"
            )
        self.output_mode = output_mode  # type: ignore[assignment]
        schema = self.output_type.model_json_schema()
        if output_mode == "json_schema":
            self._response_format = _response_format(self.output_type)
        elif output_mode == "tool":
            self._tool_specs = [*self._tool_specs, {
                "type": "function",
                "function": {
                    "name": OUTPUT_TOOL,
                    "description": f"Give the final answer as {self.output_type.__name__}; call it once you have it.",
                    "parameters": schema,
                },
            }]
            self._tool_choice = (
                "required" if has_tools else {"type": "function", "function": {"name": OUTPUT_TOOL}}
            )
        else:
            self._instructions = (
                f"When you give your final answer, reply with only a JSON object that matches this JSON schema "
                f"of {self.output_type.__name__}, and nothing else:\n{json.dumps(schema)}"
            )
            if caps.json_object:
                self._response_format = {"type": "json_object"}

    # -- Runnable ------------------------------------------------------------------------------

    async def ainvoke(self, input: Any, config: ConfigLike = None) -> dict[str, Any]:
        """Run the loop on `input`; see the class docstring for the shapes."""
        messages = self._initial_messages(input)
        return await substeps().root(self, self.name, self._traced_loop, messages, ensure_config(config))

    async def _traced_loop(self, messages: list[AnyMessage]) -> dict[str, Any]:
        """The loop, inside the agent's run: an `invoke_agent` span when an OpenTelemetry SDK is
        configured (core/_telemetry.py), the model calls' and tool calls' spans inside it."""
        with _telemetry.agent_run(self.name, self.llm):
            return await self._loop(messages)

    def cache_key(self) -> str:
        """What this agent is, for the cross-run cache (docs/cache.md): the chat model's
        `cache_key()` (which holds only a digest of its API key), each tool's name, JSON schema
        and code fingerprint, the system prompt, `max_iterations` and the output schema.

        Examples:
            ```python
            Agent(llm, tools=[add]).cache_key() != Agent(llm, tools=[add, search]).cache_key()
            ```
        """
        toolsets = {"toolsets": [t.cache_key() for t in self.toolsets]} if self.toolsets else {}
        return key_of(
            f"{type(self).__module__}.{type(self).__qualname__}",
            llm=fingerprint(self.llm),
            tools=[
                {"name": t.name, "schema": t.to_openai(), "code": fingerprint(t.fn)} for t in self.tools
            ],
            system_prompt=self.system_prompt,
            max_iterations=self.max_iterations,
            output_type=self._output_spec(),
            **toolsets,
        )

    def _output_spec(self) -> Any:
        """How the output is asked for, for the cache key (json_schema: the response format, as before)."""
        if self.output_mode in (None, "json_schema"):
            return self._response_format
        return {"mode": self.output_mode, "schema": self.output_type.model_json_schema()}  # type: ignore[union-attr]

    # -- the loop ------------------------------------------------------------------------------

    def _initial_messages(self, input: Any) -> list[AnyMessage]:
        where = f"Agent {self.name!r}"
        if isinstance(input, str):
            input = {"input": input}
        if not isinstance(input, Mapping):
            raise ValidationError(
                f"{where} expects {{'input': str}} or {{'messages': [...]}} (or a str), got {type(input).__name__}"
            )
        messages = messages_from_state(input, where=where)
        if self.system_prompt and not (messages and isinstance(messages[0], SystemMessage)):
            messages = [SystemMessage(self.system_prompt), *messages]
        if self._instructions is not None:
            if messages and isinstance(messages[0], SystemMessage):
                if self._instructions not in messages[0].content:
                    messages = [SystemMessage(f"{messages[0].content}\n\n{self._instructions}"), *messages[1:]]
            else:
                messages = [SystemMessage(self._instructions), *messages]
        return messages

    async def _loop(self, messages: list[AnyMessage]) -> dict[str, Any]:
        if self.usage_limits is not None:  # one budget per run, for every turn (docs/budgets.md)
            with usage_scope(self.usage_limits, name=f"agent {self.name!r}"):
                return await self._loop_tools(messages)
        return await self._loop_tools(messages)

    async def _loop_tools(self, messages: list[AnyMessage]) -> dict[str, Any]:
        if not self.toolsets:
            return await self._turns(messages, _RunTools(self))
        async with AsyncExitStack() as stack:  # each toolset's session: opened now, closed with the run
            sessions = [await stack.enter_async_context(toolset.open()) for toolset in self.toolsets]
            return await self._turns(messages, _RunTools(self, sessions))

    async def _turns(self, messages: list[AnyMessage], tools: _RunTools) -> dict[str, Any]:
        runner = substeps()
        messages = list(messages)
        turns = 0
        correcting = corrected = False
        while True:
            if turns >= self.max_iterations and not correcting:
                asked = ", ".join(sorted({c.name for c in _last_calls(messages)})) or "none"
                raise AgentIterationLimit(
                    f"agent {self.name!r} reached max_iterations={self.max_iterations}: after "
                    f"{turns} model turns the model still asked for tools (last: {asked}); "
                    f"raise max_iterations or check what the tools return",
                    agent=self.name,
                    max_iterations=self.max_iterations,
                )
            turns += 1
            correcting = False
            args: tuple[Any, ...] = (list(messages), await tools.specs(), self._response_format)
            if self._tool_choice is not None:
                args = (*args, self._tool_choice)
            result: ChatResult = await runner.run(self.model_step, self._model_call, *args)
            messages.append(result.message)
            calls = result.message.tool_calls
            final = next((c for c in calls if c.name == OUTPUT_TOOL), None) if self.output_mode == "tool" else None
            for call in calls:
                if call is not final:
                    emit_tool_call(call.name, call.id, _arguments_of(call), default_node=self.name)
            if final is not None:
                assert self.output_type is not None
                parsed, problems = _parse_output(self.output_type, final.arguments)
                others = [c for c in calls if c is not final]
                skipped = [ToolMessage("Not run: the final result was given in the same turn.",
                                       tool_call_id=c.id, name=c.name) for c in others]
                if parsed is not None:
                    messages.extend([ToolMessage("Final result processed.", tool_call_id=final.id, name=OUTPUT_TOOL),
                                     *skipped])
                    return {"output": parsed, "messages": messages}
                messages.extend(skipped)
                if corrected:
                    raise AgentOutputError(
                        f"agent {self.name!r}: the {OUTPUT_TOOL} arguments do not fit {self.output_type.__name__}, "
                        f"even after a corrective turn: {'; '.join(problems)}",
                        agent=self.name,
                        content=final.arguments,
                        errors=problems,
                    )
                corrected = correcting = True
                messages.append(ToolMessage(
                    f"Error: the arguments do not match the schema of {self.output_type.__name__}: "
                    f"{'; '.join(problems)}. Call {OUTPUT_TOOL} again with arguments that match it.",
                    tool_call_id=final.id, name=OUTPUT_TOOL,
                ))
                continue
            if calls:
                messages.extend(await self._tool_calls(runner, calls, tools))
                continue
            if self.output_type is None:
                return {"output": result.content, "messages": messages}
            parsed, problems = _parse_output(self.output_type, result.content)
            if parsed is not None:
                return {"output": parsed, "messages": messages}
            if corrected:
                raise AgentOutputError(
                    f"agent {self.name!r}: the answer does not fit {self.output_type.__name__}, "
                    f"even after a corrective turn: {'; '.join(problems)}",
                    agent=self.name,
                    content=result.content,
                    errors=problems,
                )
            corrected = correcting = True
            how = (f"Call {OUTPUT_TOOL} with arguments that match the schema." if self.output_mode == "tool"
                   else "Reply again with only a JSON object that matches the schema.")
            messages.append(HumanMessage(
                f"Your answer does not match the required JSON schema of {self.output_type.__name__}: "
                f"{'; '.join(problems)}. {how}"
            ))

    async def _model_call(
        self,
        messages: list[AnyMessage],
        tools: list[dict[str, Any]],
        response_format: dict[str, Any] | None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> ChatResult:
        """One model turn (a sub-step: a Prefect task run named after the chat model)."""
        if tool_choice is None:
            return await self.llm.agenerate(messages, tools=tools or None, response_format=response_format)
        return await self.llm.agenerate(
            messages, tools=tools or None, response_format=response_format, tool_choice=tool_choice
        )

    async def _tool_calls(
        self, runner: SubstepRunner, calls: Sequence[ToolCall], tools: _RunTools
    ) -> list[ToolMessage]:
        limit = asyncio.Semaphore(self.max_concurrency or len(calls))

        async def one(call: ToolCall) -> ToolMessage:
            async with limit:
                content, ok = await self._tool_call(runner, call, tools)
            emit_tool_result(call.name, call.id, content, ok=ok, default_node=self.name)
            return ToolMessage(content, tool_call_id=call.id, name=call.name)

        return list(await asyncio.gather(*(one(call) for call in calls)))

    async def _tool_call(self, runner: SubstepRunner, call: ToolCall, tools: _RunTools) -> tuple[str, bool]:
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

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, llm={self.llm!r}, tools={[t.name for t in self.tools]})"


class _RunTools:
    """The tools of one agent run: the agent's own, and those its toolsets' sessions list now."""

    def __init__(self, agent: Agent, sessions: Sequence[Any] = ()) -> None:
        self.agent = agent
        self.sessions = sessions
        self.by_name: dict[str, Tool] = agent._by_name
        self._listed: list[Sequence[Tool]] | None = None
        self._specs = agent._tool_specs

    async def specs(self) -> list[dict[str, Any]]:
        """The `tools` parameter of the next model turn (the toolsets' tools listed again only
        when a server said they changed)."""
        if not self.sessions:
            return self._specs
        listed = [await session.tools() for session in self.sessions]
        if listed != self._listed:
            by_name = dict(self.agent._by_name)
            reserved = {OUTPUT_TOOL} if self.agent.output_mode == "tool" else set()
            for toolset, tools in zip(self.agent.toolsets, listed, strict=True):
                for item in tools:
                    if item.name in by_name or item.name in reserved:
                        raise ValidationError(
                            f"Agent {self.agent.name!r}: the tool {item.name!r} of {toolset.name!r} has the name of "
                            f"another tool of the agent; give the server a prefix (MCPServer(..., prefix=...))"
                        )
                    by_name[item.name] = item
            self.by_name, self._listed = by_name, listed
            self._specs = [*self.agent._tool_specs, *(t.to_openai() for tools in listed for t in tools)]
        return self._specs


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


def _last_calls(messages: list[AnyMessage]) -> tuple[ToolCall, ...]:
    for message in reversed(messages):
        if isinstance(message, AIMessage):
            return message.tool_calls
    return ()


def _response_format(output_type: type[BaseModel]) -> dict[str, Any]:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", output_type.__name__)[:64] or "output"
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": output_type.model_json_schema(), "strict": False},
    }


def _parse_output(output_type: type[BaseModel], content: str) -> tuple[BaseModel | None, list[str]]:
    fenced = _FENCE.match(content or "") or _FENCED_BLOCK.search(content or "")
    text = fenced.group(1) if fenced else (content or "")
    try:
        data = json.loads(text)
    except ValueError as exc:
        return None, [f"the answer is not valid JSON ({exc})"]
    try:
        return output_type.model_validate(data), []
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            location = ".".join(str(part) for part in error.get("loc", ())) or "(root)"
            problems.append(f"field {location!r}: {error.get('msg', 'invalid')}")
        return None, problems


__all__ = ["OUTPUT_MODES", "OUTPUT_TOOL", "Agent", "AgentIterationLimit", "AgentOutputError", "OutputMode"]
