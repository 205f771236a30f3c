"""The `Agent` Runnable: its options checked, and its loop of model turns (the agents module
docstring tells the whole story; `_tool_calls.py` runs a turn's tool calls, `_output.py` asks
for and reads an `output_type`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

from pydantic import BaseModel

from prefect_beluga.agents._output import OUTPUT_TOOL, OutputMode, output_request, parse_output
from prefect_beluga.agents._tool_calls import RunTools, announce, run_tool_calls
from prefect_beluga.core import _telemetry
from prefect_beluga.core._checks import check_bool, check_int
from prefect_beluga.core._substeps import Substep, substeps
from prefect_beluga.core.config import ConfigLike, ensure_config
from prefect_beluga.core.errors import AgentIterationLimit, AgentOutputError, ValidationError
from prefect_beluga.core.fingerprint import fingerprint, key_of
from prefect_beluga.core.runnable import Runnable
from prefect_beluga.llms.base import ChatModel, messages_from_state
from prefect_beluga.schema import AIMessage, AnyMessage, ChatResult, HumanMessage, SystemMessage, ToolCall, ToolMessage
from prefect_beluga.tools import Tool, Toolset
from prefect_beluga.tools._tool import as_tool
from prefect_beluga.usage import UsageLimits
from prefect_beluga.usage import scope as usage_scope
from prefect_beluga.usage._limits import check_limits, check_prices, priced_as


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
            supports: see `prefect_beluga.agents`' output modes; then validated and parsed).
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
        from prefect_beluga.agents import Agent
        from prefect_beluga.llms import OfflineChatModel
        from prefect_beluga.tools import tool

        @tool
        def search_docs(query: str) -> str:
            \"\"\"Search the Prefect docs.\"\"\"
            return "A failed task run is retried up to its retries count."

        llm = OfflineChatModel()
        agent = Agent(llm, tools=[search_docs], system_prompt="Cite the docs.")
        agent.invoke({"input": "How are Prefect tasks retried?"})["output"]
        # -> '[offline model] A failed task run is retried up to its retries count.'
        ```

        Structured output:

        ```python
        # example: not run (needs a model answering in JSON, e.g. OpenAI with a real OPENAI_API_KEY)
        import pydantic

        class Answer(pydantic.BaseModel):
            answer: str
            sources: list[str]
        Agent(llm, tools=[search_docs], output_type=Answer).invoke("...")["output"].sources
        ```

        As a chain step or graph node:

        ```python
        from prefect_beluga import Chain, Graph

        def prepare(state):
            return {"input": state["input"].strip()}

        def publish(state):
            return {"published": state["output"]}

        Chain([prepare, agent, publish], retries=2).invoke({"input": " How are tasks retried? "})["published"]
        # -> '[offline model] A failed task run is retried up to its retries count.'
        graph = Graph().add_node("research", agent).set_entry_point("research").set_finish_point("research")
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
            request = output_request(
                llm, output_type, output_mode, has_tools=bool(self.tools or self.toolsets),
                tool_names=set(self._by_name), where=where,
            )
            self.output_mode = request.mode
            self._response_format, self._tool_choice = request.response_format, request.tool_choice
            self._instructions = request.instructions
            if request.tool_spec is not None:
                self._tool_specs = [*self._tool_specs, request.tool_spec]
        elif output_mode is not None:
            raise ValidationError(f"{where}: output_mode={output_mode!r} needs an output_type")

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
            from prefect_beluga.agents import Agent
            from prefect_beluga.llms import OfflineChatModel
            from prefect_beluga.tools import tool

            @tool
            def add(a: int, b: int) -> int:
                \"\"\"Add two integers.\"\"\"
                return a + b

            @tool
            def search(query: str) -> str:
                \"\"\"Search the docs.\"\"\"
                return query

            llm = OfflineChatModel()
            Agent(llm, tools=[add]).cache_key() != Agent(llm, tools=[add, search]).cache_key()  # -> True
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
            return await self._turns(messages, self._run_tools())
        async with AsyncExitStack() as stack:  # each toolset's session: opened now, closed with the run
            sessions = [await stack.enter_async_context(toolset.open()) for toolset in self.toolsets]
            return await self._turns(messages, self._run_tools(sessions))

    def _run_tools(self, sessions: Sequence[Any] = ()) -> RunTools:
        reserved = frozenset({OUTPUT_TOOL}) if self.output_mode == "tool" else frozenset()
        return RunTools(self.name, self._by_name, self._tool_specs, self.toolsets, sessions, reserved=reserved)

    async def _turns(self, messages: list[AnyMessage], tools: RunTools) -> dict[str, Any]:
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
            announce([c for c in calls if c is not final], node=self.name)
            if final is not None:
                assert self.output_type is not None
                parsed, problems = parse_output(self.output_type, final.arguments)
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
                messages.extend(await run_tool_calls(runner, calls, tools, max_concurrency=self.max_concurrency))
                continue
            if self.output_type is None:
                return {"output": result.content, "messages": messages}
            parsed, problems = parse_output(self.output_type, result.content)
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

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, llm={self.llm!r}, tools={[t.name for t in self.tools]})"


def _last_calls(messages: list[AnyMessage]) -> tuple[ToolCall, ...]:
    for message in reversed(messages):
        if isinstance(message, AIMessage):
            return message.tool_calls
    return ()


__all__ = ["Agent"]
