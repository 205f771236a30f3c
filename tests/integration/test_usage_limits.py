"""Usage limits (issue 30): one budget per run across parallel graph nodes, Map items, agent
turns and retries; a request past the budget is never sent (the loopback server's request
count shows it); the unpriced-model error; usage readable in the run and on its artifact.

The model is the loopback OpenAI server (`prefect_beluga.testing.OpenAIServer`) spoken to by
the official SDK; its usage counts are tiktoken counts, as the budget's estimates are.
"""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter

from prefect_beluga import (
    Chain,
    Graph,
    GraphNodesFailed,
    Map,
    Orchestrator,
    RunConfig,
    UsageLimitExceeded,
    UsageLimits,
    ValidationError,
    WorkflowFailed,
    llms,
    usage,
)
from prefect_beluga.agents import Agent
from prefect_beluga.schema import HumanMessage
from prefect_beluga.testing import OpenAIServer
from prefect_beluga.tools import tool
from prefect_beluga.usage._limits import estimate_input_tokens


def chat_model(server: OpenAIServer, model: str = "gpt-4o-mini", **options) -> llms.OpenAIChatModel:
    return llms.OpenAIChatModel(llms.Config(model_name=model, api_key="sk-test", base_url=server.base_url, **options))


def asker(llm: llms.ChatModel, key: str):
    """A node that asks `llm` one question and writes the answer under `key`."""

    async def ask(state):
        reply = await llm.agenerate(f"Question {key}: {state['input']}")
        return {key: reply.content}

    ask.__name__ = key
    return ask


def fan_out(llm: llms.ChatModel, width: int, limits: UsageLimits, name: str, fail_fast: bool = True) -> Graph:
    graph = Graph(name=name, usage_limits=limits, fail_fast=fail_fast)
    graph.add_node("start", lambda state: {})
    graph.set_entry_point("start")
    for i in range(width):
        graph.add_node(f"n{i}", asker(llm, f"n{i}"))
        graph.add_edge("start", f"n{i}")
        graph.set_finish_point(f"n{i}")
    return graph


# -- requests, tokens: shared across parallel nodes and Map items ------------------------------------


def test_requests_limit_holds_across_parallel_graph_nodes(openai_server):
    openai_server.latency = 0.2  # every node's request is in flight at once
    graph = fan_out(chat_model(openai_server), 6, UsageLimits(requests=4), "wide")
    with pytest.raises(UsageLimitExceeded) as caught:
        graph.invoke({"input": "hi"})
    exc = caught.value
    assert exc.limit == "requests" and exc.value == 4
    assert exc.step is not None and exc.step.startswith("n")  # the node's task run
    assert "graph 'wide'" in str(exc) and "not sent" in str(exc)
    assert exc.usage.requests == 4
    assert len(openai_server.chat_requests()) <= 4  # fail_fast may cancel the admitted ones in flight


def test_requests_limit_parallel_nodes_all_finishing(openai_server):
    openai_server.latency = 0.2
    graph = fan_out(chat_model(openai_server), 6, UsageLimits(requests=4), "wide-all", fail_fast=False)
    with pytest.raises(GraphNodesFailed) as caught:
        graph.invoke({"input": "hi"})
    failures = caught.value.failures
    assert len(failures) == 2 and all(isinstance(e, UsageLimitExceeded) for e in failures.values())
    assert len(openai_server.chat_requests()) == 4  # exactly the limit reached the server
    assert openai_server.max_in_flight == 4  # all at once, and still no overshoot


def test_input_tokens_limit_across_map_items_is_never_passed(openai_server):
    llm = chat_model(openai_server)
    one = estimate_input_tokens("gpt-4o-mini", [HumanMessage("Question item: same text")])
    limit = 3 * one + one // 2  # room for three requests, not four

    async def ask(state):
        await llm.agenerate("Question item: same text")
        return {"index": state["index"]}

    openai_server.latency = 0.1
    chain = Chain([Map(ask, over="items", into="answers", max_concurrency=1)], name="mapped",
                  usage_limits=UsageLimits(input_tokens=limit))
    with pytest.raises(UsageLimitExceeded) as caught:
        chain.invoke({"items": list(range(8))})
    assert caught.value.limit == "input_tokens"
    sent = openai_server.chat_requests()
    assert len(sent) == 3
    assert caught.value.usage.input_tokens <= limit  # reserved before sending: no overshoot
    assert caught.value.step == "ask[3]"  # the Map item's task run


def test_output_tokens_overshoot_is_bounded_by_the_requests_in_flight(openai_server):
    llm = chat_model(openai_server)
    openai_server.latency = 0.2

    async def ask(state):
        await llm.agenerate(f"Say item {state['item']}")
        return {}

    limit = 10
    chain = Chain([Map(ask, over="items", max_concurrency=3)], usage_limits=UsageLimits(output_tokens=limit))
    with pytest.raises(UsageLimitExceeded) as caught:
        chain.invoke({"items": list(range(12))})
    used = caught.value.usage
    per_reply = max(r["usage"]["completion_tokens"] for r in _replies(openai_server))
    assert caught.value.limit == "output_tokens"
    assert used.output_tokens > limit  # only a reply tells the output tokens ...
    assert used.output_tokens <= limit + openai_server.max_in_flight * per_reply  # ... bounded by those in flight
    assert used.requests == len(openai_server.chat_requests()) < 12


def _replies(server: OpenAIServer) -> list[dict]:
    # The server's replies carry tiktoken usage; recompute from what it was sent, as it does.
    from prefect_beluga.tokens import count_message_tokens, count_tokens

    out = []
    for request in server.chat_requests():
        messages = request.body["messages"]
        completion = count_tokens("Echo: " + messages[-1]["content"])
        out.append({"usage": {"prompt_tokens": count_message_tokens(messages), "completion_tokens": completion}})
    return out


def test_retries_are_counted_and_a_limit_is_not_retried(openai_server):
    openai_server.fail_next(503, times=2)
    chain = Chain([chat_model(openai_server)], name="flaky", retries=5, usage_limits=UsageLimits(requests=2))
    with pytest.raises(UsageLimitExceeded) as caught:
        chain.invoke({"input": "hello"})
    assert caught.value.limit == "requests"
    assert len(openai_server.chat_requests()) == 2  # two failed attempts; the third was refused, not retried


# -- agents ----------------------------------------------------------------------------------------


@tool
def lookup(query: str) -> str:
    """Look something up."""
    return f"nothing about {query}"


def usage_artifact(run_name: str) -> str:
    """The usage artifact's markdown on the flow run named `run_name`."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name={"any_": [run_name]}))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[runs[0].id]))
        )
    return next(a.data for a in artifacts if "Usage limits" in (a.data or ""))


def test_an_agent_loop_is_stopped_mid_way(openai_server, run_name):
    openai_server.responder = lambda messages: {"tool_calls": [{"name": "lookup", "arguments": {"query": "x"}}]}
    agent = Agent(chat_model(openai_server), tools=[lookup], max_iterations=50, name="runaway",
                  usage_limits=UsageLimits(requests=3))
    with pytest.raises(UsageLimitExceeded) as caught:
        agent.invoke("Find it.", RunConfig(run_name=run_name))
    assert "agent 'runaway'" in str(caught.value)
    assert len(openai_server.chat_requests()) == 3  # turn 4 was never sent
    assert len(openai_server.tool_results()) == 2  # tools ran between the turns that were sent
    assert "| requests | 3 | 3 |" in usage_artifact(run_name)  # on the agent's own flow run


def test_an_agent_in_a_chain_shares_the_chain_budget_and_keeps_its_own(openai_server):
    openai_server.reply_with({"tool_calls": [{"name": "lookup", "arguments": {"query": "x"}}]}, "done",
                             {"tool_calls": [{"name": "lookup", "arguments": {"query": "y"}}]}, "done")
    agent = Agent(chat_model(openai_server), tools=[lookup], name="helper", usage_limits=UsageLimits(requests=5))

    async def twice(state):
        first = await agent.ainvoke(state["input"])
        second = await agent.ainvoke(state["input"])
        return {"output": first["output"] + second["output"]}

    chain = Chain([twice], name="outer", usage_limits=UsageLimits(requests=3))
    with pytest.raises(UsageLimitExceeded) as caught:
        chain.invoke({"input": "go"})
    assert caught.value.run == "chain 'outer'"  # the outer budget: 2 + 1, the agent's own had room
    assert len(openai_server.chat_requests()) == 3


# -- a request past the budget is never sent; cost ---------------------------------------------------


def test_a_request_that_would_exceed_is_not_sent(openai_server):
    chain = Chain([chat_model(openai_server)], name="long", usage_limits=UsageLimits(total_tokens=50))
    with pytest.raises(UsageLimitExceeded) as caught:
        chain.invoke({"input": "word " * 200})
    exc = caught.value
    assert exc.limit == "total_tokens" and exc.usage.requests == 0
    assert "not sent" in str(exc) and "step 'openai:gpt-4o-mini'" in str(exc)
    assert openai_server.chat_requests() == []


def test_cost_limit_counts_priced_replies(openai_server):
    llm = chat_model(openai_server)
    one = llms.pricing.estimate_cost("gpt-4o-mini", {"prompt_tokens": 12, "completion_tokens": 0})
    chain = Chain([llm, llm, llm, llm], usage_limits=UsageLimits(cost_usd=one * 2.5))
    with pytest.raises(UsageLimitExceeded) as caught:
        chain.invoke({"input": "hello"})
    assert caught.value.limit == "cost_usd"
    assert caught.value.usage.cost_usd > 0
    assert len(openai_server.chat_requests()) < 4


def test_cost_limit_with_an_unpriced_model_is_an_error(openai_server):
    config = llms.Config(server="ollama", model_name="llama3.2", base_url=openai_server.base_url)
    unpriced = llms.OpenAIChatModel(config)
    limits = UsageLimits(cost_usd=1.0)
    for build in (
        lambda: Chain([unpriced], usage_limits=limits),
        lambda: Agent(unpriced, usage_limits=limits),
        lambda: Orchestrator().create_workflow(Chain([unpriced]), workflow_id="unpriced", usage_limits=limits),
    ):
        with pytest.raises(ValidationError, match=r"'llama3.2' \(provider 'ollama'\) has no known price"):
            build()
    graph = Graph(usage_limits=limits).add_node("a", unpriced).set_entry_point("a").set_finish_point("a")
    with pytest.raises(ValidationError, match="has no known price"):
        graph.compile()

    async def hidden(state):  # a model the chain cannot see until it is called
        return {"output": (await unpriced.agenerate(state["input"])).content}

    with pytest.raises(ValidationError, match="has no known price"):
        Chain([hidden], usage_limits=limits).invoke({"input": "hi"})
    assert openai_server.chat_requests() == []  # refused before sending, never a silent pass


# -- usage readable in the run and on its artifact; workflows ----------------------------------------


async def test_usage_is_readable_in_the_run_and_on_its_artifact(openai_server, run_name):
    llm = chat_model(openai_server)
    seen = []

    def report(state):
        seen.append(usage.current_usage())
        return {}

    chain = Chain([llm, report], name="metered", usage_limits=UsageLimits(requests=10, total_tokens=10_000))
    await chain.ainvoke({"input": "hello"}, RunConfig(run_name=run_name))
    assert seen[0].requests == 1 and seen[0].total_tokens > 0
    async with get_client() as client:
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name={"any_": [run_name]}))
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[runs[0].id]))
        )
    markdown = next(a.data for a in artifacts if "Usage limits" in (a.data or ""))
    assert "| requests | 1 | 10 |" in markdown
    assert f"| total_tokens | {seen[0].total_tokens} | 10000 |" in markdown


def test_usage_scope_counts_a_run_without_limits(openai_server):
    with usage.scope() as budget:
        Chain([chat_model(openai_server)]).invoke({"input": "hello"})
    used = budget.usage()
    assert used.requests == 1 and used.input_tokens > 0 and used.cost_usd > 0


def test_a_workflow_run_has_one_budget(openai_server):
    llm = chat_model(openai_server)
    workflow = Orchestrator().create_workflow(
        Chain([llm, llm, llm]), workflow_id="budgeted-workflow", usage_limits=UsageLimits(requests=2)
    )
    workflow_id, run_id = workflow.execute({"input": "hello"})
    with pytest.raises(WorkflowFailed) as caught:
        workflow.get_result(workflow_id, run_id, timeout=60)
    assert isinstance(caught.value.cause, UsageLimitExceeded) or "UsageLimitExceeded" in str(caught.value)
    assert len(openai_server.chat_requests()) == 2


def test_a_resumed_workflow_counts_its_finished_steps(openai_server):
    llm = chat_model(openai_server)
    attempts = []

    def flaky(state):
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("lost the network")  # the run fails once, then is retried
        return {}

    workflow = Orchestrator().create_workflow(
        Chain([llm, flaky, llm, llm], name="resumable"), workflow_id="budget-resume", retries=1,
        usage_limits=UsageLimits(requests=2),
    )
    workflow_id, run_id = workflow.execute({"input": "hello"})
    with pytest.raises(WorkflowFailed) as caught:
        workflow.get_result(workflow_id, run_id, timeout=60)
    assert len(attempts) == 2  # the retried run read the first model step back, did not call it again
    exc = caught.value.cause
    assert isinstance(exc, UsageLimitExceeded) and exc.limit == "requests"
    # 1 request read back from the record + 1 sent = the limit: the last step was refused.
    assert len(openai_server.chat_requests()) == 2
    assert exc.usage.requests == 2


def test_a_resumed_workflow_counts_a_function_steps_model_calls(openai_server):
    """docs/budgets.md: a finished function step's own model calls are counted on resume from
    the usage record beside its result, whether or not its output says what it used."""
    llm = chat_model(openai_server)

    def run(report_usage: bool) -> tuple[int, BaseException | None]:
        attempts = []

        def summarise(state):
            result = llm.generate(state["input"])
            out = {"summary": result.message.content}
            if report_usage:
                out.update(usage=result.usage.model_dump(), model=llm.config.model_name)
            return out

        def flaky(state):
            attempts.append(1)
            if len(attempts) == 1:
                raise ConnectionError("lost the network")
            return {"input": state["summary"]}

        workflow = Orchestrator().create_workflow(
            Chain([summarise, flaky, llm, llm], name="summing"), workflow_id=f"budget-fn-{report_usage}", retries=1,
            usage_limits=UsageLimits(requests=2),
        )
        before = len(openai_server.chat_requests())
        workflow_id, run_id = workflow.execute({"input": "hello"})
        try:
            workflow.get_result(workflow_id, run_id, timeout=60)
            error = None
        except WorkflowFailed as caught:
            error = caught.cause
        assert len(attempts) == 2  # retried once; `summarise` was read back, not run again
        return len(openai_server.chat_requests()) - before, error

    for report_usage in (True, False):
        # 1 request read back (summarise) + 1 sent = the limit: the last step was refused
        sent, error = run(report_usage)
        assert sent == 2 and isinstance(error, UsageLimitExceeded), (report_usage, sent, error)
        assert error.usage.requests == 2 and error.limit == "requests"


def test_a_retried_flow_counts_an_agent_steps_turns_from_its_usage_record(openai_server):
    """An agent step that finished (two model turns) is read back on the flow's retry; its
    turns count against the budget from the step's usage record, not from its output."""
    from prefect import flow

    llm = chat_model(openai_server)
    openai_server.reply_with({"tool_calls": [{"name": "double", "arguments": {"x": 2}}]}, "4")

    def double(x: int) -> int:
        """Double x."""
        return 2 * x

    attempts = []

    def flaky(state):
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("lost the network")
        return {}

    chain = Chain([Agent(llm, tools=[double], name="doubler"), flaky, llm], name="agentic",
                  usage_limits=UsageLimits(requests=2), subflow=False)

    @flow(retries=1, retry_delay_seconds=0)
    def user_flow():
        return chain.invoke({"input": "double 2"})

    before = len(openai_server.chat_requests())
    with pytest.raises(UsageLimitExceeded) as caught:
        user_flow()
    assert len(attempts) == 2 and len(openai_server.chat_requests()) - before == 2
    assert caught.value.usage.requests == 2  # the agent's two turns, read back with its step
