"""Agents: a chat model calling tools in a loop, each model call and tool call a Prefect task run.

    ```python
    # example: not run (needs a real OPENAI_API_KEY)
    from prefect_beluga import llms
    from prefect_beluga.agents import Agent
    from prefect_beluga.tools import tool
    @tool(retries=2, timeout=10)
    def add(a: int, b: int) -> int:
        \"\"\"Add two integers.\"\"\"
        return a + b
    agent = Agent(llms.OpenAIChatModel(llms.Config(model_name="gpt-4o-mini")), tools=[add],
                  system_prompt="Use the tools.", name="adder")
    agent.invoke("What is 2 + 40?")["output"]  # -> '2 + 40 = 42.'
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

Prefect: the agent asks `prefect_beluga.core._substeps` to run each model call and tool call as
a sub-step; inside a flow run (as a chain step, a graph node, a workflow body or in your own
`@flow`) each is a Prefect task run — the model call named after the chat model, a tool call
after the tool, with the tool's `retries` / `timeout` as its task policy. Invoked on its own,
outside any flow run, the agent starts one flow run named after it. Inside a workflow run tool
calls and model turns are durable like chain steps (a retried run reads back the finished ones),
and a tool made with `requires_approval=True` waits for the signal `approve:<tool>`:

    ```python
    from prefect_beluga import Orchestrator
    from prefect_beluga.agents import Agent
    from prefect_beluga.llms import OfflineChatModel
    from prefect_beluga.tools import tool
    @tool(requires_approval=True)
    def refund(order_id: str) -> str:
        \"\"\"Refund an order.\"\"\"
        return f"Refunded: {order_id}."
    workflow = Orchestrator().create_workflow(Agent(OfflineChatModel(), tools=[refund]), workflow_id="refunds")
    workflow_id, run_id = workflow.execute({"input": "Refund order A1"})   # the run pauses at the call
    workflow.signal(run_id, "approve:refund", {"approved": True})
    workflow.get_result(workflow_id, run_id, timeout=60)["output"]  # -> '[offline model] Refunded: Refund order A1.'
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

from prefect_beluga.agents._agent import Agent
from prefect_beluga.agents._output import OUTPUT_MODES, OUTPUT_TOOL, OutputMode
from prefect_beluga.core.errors import AgentIterationLimit, AgentOutputError

__all__ = ["OUTPUT_MODES", "OUTPUT_TOOL", "Agent", "AgentIterationLimit", "AgentOutputError", "OutputMode"]
