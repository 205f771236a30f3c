"""Chain (prefect_beluga/orchestration/chain.py): steps as Prefect task runs, retries, timeouts,
error handling, memory, nesting inside a user's flow, and every way of calling it.

Tests that need Prefect run chains on the session's ephemeral API and read the runs back
through it; construction and input checks need no flow run and start none.
"""

from __future__ import annotations

import asyncio
from itertools import pairwise

import pytest
from prefect import flow

from prefect_beluga import (
    Chain,
    ChainTimeoutError,
    Orchestrator,
    RunConfig,
    Runnable,
    StepOutputError,
    ValidationError,
    memory,
)
from prefect_beluga.testing.helpers import read_flow_run, read_subflow_runs, read_task_runs


class SimpleStep(Runnable):
    """The tutorial's step: appends its name to a trail, so order is visible in the result."""

    def __init__(self, name: str) -> None:
        self.name = name

    def invoke(self, input: dict, config=None) -> dict:
        return {"output": f"Result from {self.name}", "trail": [*input.get("trail", []), self.name]}


class Flaky(Runnable):
    """Raises `error` on its first `failures` calls, then succeeds; counts its calls."""

    def __init__(self, name: str, failures: int, error: BaseException) -> None:
        self.name = name
        self.failures = failures
        self.error = error
        self.calls = 0

    async def ainvoke(self, input: dict, config=None) -> dict:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return {"output": f"ok after {self.calls} calls"}


class ApiError(Exception):
    """An SDK-style error carrying an HTTP status (its name says nothing about auth)."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def steps(*names: str) -> list[SimpleStep]:
    return [SimpleStep(name) for name in names]


# --- steps run in order, as Prefect task runs -------------------------------------------------


async def test_five_steps_run_in_order_as_named_task_runs(run_name):
    names = ["load", "clean", "embed", "rank", "answer"]
    chain = Chain(steps(*names), name="five")

    result = await chain.ainvoke({"input": "test"}, RunConfig(run_name=run_name))

    assert result == {"input": "test", "output": "Result from answer", "trail": names}
    flow_run = await read_flow_run(run_name)
    assert flow_run.state.is_completed()
    task_runs = await read_task_runs(flow_run.id, expected=5)
    assert [t.name for t in task_runs] == names
    assert all(t.state.is_completed() for t in task_runs)
    # each step's input is the task run before it: Prefect records the edge
    for before, after in pairwise(task_runs):
        assert [i.id for i in after.task_inputs["upstream"]] == [before.id]


class NoName(Runnable):
    """A step without a name of its own: named after its class."""

    def invoke(self, input: dict, config=None) -> dict:
        return {"count": input.get("count", 0) + 1}


async def test_steps_of_one_name_get_distinct_names_in_runs_events_and_errors(run_name):
    chain = Chain([NoName(), NoName(), lambda s: {"a": 1}, lambda s: {"b": 2 / s["zero"]}], name="repeats")
    assert chain.step_names == ("NoName", "NoName_2", "lambda", "lambda_2")

    events = [event async for event in chain.astream({"zero": 1}, RunConfig(run_name=run_name))]
    assert [next(iter(event)) for event in events] == ["NoName", "NoName_2", "lambda", "lambda_2", "__end__"]
    assert events[1] == {"NoName_2": {"count": 2}} and events[-1]["__end__"]["count"] == 2
    task_runs = await read_task_runs((await read_flow_run(run_name)).id, expected=4)
    assert [t.name for t in task_runs] == ["NoName", "NoName_2", "lambda", "lambda_2"]

    with pytest.raises(ZeroDivisionError) as failed:
        await chain.ainvoke({"zero": 0})
    assert "in step 'lambda_2' (4 of 4) of chain 'repeats'" in failed.value.__notes__
    # a number another step already has is skipped; cache= names a numbered step
    assert Chain(steps("x", "x", "x_2")).step_names == ("x", "x_3", "x_2")
    assert Chain([NoName(), NoName()], cache=["NoName_2"]).cached_steps == {"NoName_2"}
    assert repr(chain) == "Chain(name='repeats', steps=['NoName', 'NoName_2', 'lambda', 'lambda_2'])"


# --- retries ------------------------------------------------------------------------------------


async def test_step_failing_twice_succeeds_on_third_attempt(run_name):
    flaky = Flaky("flaky", failures=2, error=ConnectionError("reset by peer"))
    chain = Chain([SimpleStep("first"), flaky], name="retrying", retries=3)

    result = await chain.ainvoke("test", RunConfig(run_name=run_name))

    assert result["output"] == "ok after 3 calls"
    assert flaky.calls == 3
    flow_run = await read_flow_run(run_name)
    first, retried = await read_task_runs(flow_run.id, expected=2)
    assert (first.name, first.run_count) == ("first", 1)
    assert (retried.name, retried.run_count) == ("flaky", 3)
    assert retried.state.is_completed()


@pytest.mark.parametrize(
    "error",
    [ValidationError("the document has no text"), ApiError(401)],
    ids=["validation-error", "http-401"],
)
async def test_permanent_error_is_tried_once_and_raised_with_the_step_named(run_name, error):
    flaky = Flaky("call_api", failures=5, error=error)
    chain = Chain([SimpleStep("prepare"), flaky, SimpleStep("never")], name="perm", retries=3)

    with pytest.raises(type(error)) as raised:
        await chain.ainvoke("test", RunConfig(run_name=run_name))

    assert raised.value is error  # the step's own exception, unchanged...
    assert "in step 'call_api' (2 of 3) of chain 'perm'" in raised.value.__notes__  # ...named
    assert flaky.calls == 1
    flow_run = await read_flow_run(run_name)
    assert flow_run.state.is_failed()
    task_runs = await read_task_runs(flow_run.id, expected=2)
    assert [(t.name, t.run_count, t.state.type.value) for t in task_runs] == [
        ("prepare", 1, "COMPLETED"),
        ("call_api", 1, "FAILED"),
    ]


async def test_retry_on_narrows_what_is_retried():
    flaky = Flaky("lookup", failures=1, error=KeyError("missing"))  # retried by default
    chain = Chain([flaky], name="narrow", retries=2, retry_on=ConnectionError)

    with pytest.raises(KeyError):
        await chain.ainvoke("test")
    assert flaky.calls == 1


async def test_retry_on_widens_what_is_retried_and_retry_delay_takes_a_list():
    flaky = Flaky("validate", failures=2, error=ValidationError("not yet"))  # permanent by default
    chain = Chain(
        [flaky], name="widen", retries=2, retry_delay=[0, 0.01], retry_on=lambda exc: True
    )

    result = await chain.ainvoke("test")

    assert result["output"] == "ok after 3 calls"
    assert chain.retry_policy.retry_delay == (0, 0.01)


# --- timeouts -----------------------------------------------------------------------------------


async def test_chain_timeout_names_the_chain_and_the_running_step(run_name):
    async def stall(state):
        await asyncio.sleep(60)
        return {}

    chain = Chain([SimpleStep("quick"), stall], name="bounded", timeout=1)

    with pytest.raises(ChainTimeoutError) as raised:
        await chain.ainvoke("test", RunConfig(run_name=run_name))

    message = str(raised.value)
    assert "chain 'bounded'" in message
    assert "step 'stall' (2 of 2)" in message
    assert "1s" in message
    flow_run = await read_flow_run(run_name)
    assert flow_run.state.name == "TimedOut"


async def test_step_timeout_is_a_task_timeout_and_is_retried():
    calls = []

    async def slow_once(state):
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(60)
        return {"output": f"attempt {len(calls)}"}

    chain = Chain([slow_once], name="step-timeout", retries=1, step_timeout=0.5)

    assert (await chain.ainvoke("test"))["output"] == "attempt 2"
    assert len(calls) == 2


# --- error handler ------------------------------------------------------------------------------


async def test_error_handler_replaces_the_exception():
    seen: list[BaseException] = []

    def handler(exc):
        seen.append(exc)
        return RuntimeError("summarizer is down")

    chain = Chain(
        [SimpleStep("fetch"), Flaky("summarize", failures=1, error=ValueError("boom"))],
        name="handled",
        error_handler=handler,
    )

    with pytest.raises(RuntimeError, match="summarizer is down") as raised:
        await chain.ainvoke("test")

    [original] = seen
    assert isinstance(original, ValueError)
    assert "in step 'summarize' (2 of 2) of chain 'handled'" in original.__notes__
    assert raised.value.__cause__ is original


async def test_error_handler_recovers_with_a_dict():
    chain = Chain(
        [Flaky("summarize", failures=1, error=ValueError("boom"))],
        name="recovering",
        error_handler=lambda exc: {"output": f"fallback after {type(exc).__name__}"},
    )

    assert await chain.ainvoke("test") == {"output": "fallback after ValueError"}


# --- memory -------------------------------------------------------------------------------------


async def test_memory_carries_history_across_invocations():
    seen_history: list[str] = []

    def reply(state):
        seen_history.append(state["history"])
        return {"output": state["input"].upper()}

    chain = Chain([reply], name="chat", memory=memory.new_memory(memory.MemoryType.BUFFER))

    first = await chain.ainvoke("hello")
    second = await chain.ainvoke("again")

    assert first == {"input": "hello", "history": "", "output": "HELLO"}
    assert second["output"] == "AGAIN"
    assert seen_history == ["", "Human: hello\nAI: HELLO"]
    assert chain.memory.turns() == [("hello", "HELLO"), ("again", "AGAIN")]


def echo_with_history(state):
    return {"output": f"{state['input']} (history: {state['history']!r})"}


@pytest.mark.parametrize("max_concurrency", [None, 1])
def test_batch_items_sharing_one_memory_never_see_each_others_turns(max_concurrency):
    chain = Chain([echo_with_history], name="batch-memory", memory=memory.new_memory(memory.MemoryType.BUFFER))
    chain.invoke({"input": "earlier"})

    results = chain.batch(
        [{"input": "apple"}, {"input": "banana"}], RunConfig(max_concurrency=max_concurrency)
    )

    for result, other in zip(results, ("banana", "apple"), strict=True):
        assert result["history"] == "Human: earlier\nAI: earlier (history: '')"
        assert other not in result["history"]
    # Both turns were saved; the next sequential call sees them (the tutorial relies on it).
    turns = [turn[0] for turn in chain.memory.turns()]
    assert turns[0] == "earlier" and sorted(turns[1:]) == ["apple", "banana"]
    after = chain.invoke({"input": "cherry"})
    assert "apple" in after["history"] and "banana" in after["history"]


async def test_concurrent_ainvokes_sharing_one_memory_never_see_each_others_turns():
    chain_memory = memory.new_memory(memory.MemoryType.BUFFER)
    banana_saved = asyncio.Event()

    async def slow_apple(state):
        if state["input"] == "apple":
            await banana_saved.wait()  # banana's call is over and its turn saved
            assert any(turn[0] == "banana" for turn in chain_memory.turns())
        return {"output": f"{state['input']} (history: {state['history']!r})"}

    chain = Chain([slow_apple], name="concurrent-memory", memory=chain_memory)

    async def banana():
        try:
            return await chain.ainvoke({"input": "banana"})
        finally:
            banana_saved.set()

    apple, banana_result = await asyncio.gather(chain.ainvoke({"input": "apple"}), banana())
    assert apple["history"] == "" and banana_result["history"] == ""
    assert sorted(turn[0] for turn in chain_memory.turns()) == ["apple", "banana"]


def test_batch_items_with_their_own_session_ids_keep_their_sessions():
    chain = Chain([echo_with_history], name="batch-sessions", memory=memory.new_memory(memory.MemoryType.BUFFER))
    chain.invoke({"input": "hi alice", "session_id": "alice"})

    alice, bob = chain.batch(
        [{"input": "again", "session_id": "alice"}, {"input": "hello", "session_id": "bob"}]
    )
    assert "hi alice" in alice["history"]
    assert bob["history"] == ""
    assert chain.memory.turns("bob") == [("hello", "hello (history: '')")]


# --- inside a user's flow -----------------------------------------------------------------------


async def test_chain_inside_a_flow_is_a_subflow_of_that_run(run_name):
    chain = Chain(steps("retrieve", "generate"), name="rag")
    chain_run_name = f"{run_name}-chain"

    @flow(flow_run_name=run_name)
    async def nightly() -> dict:
        return await chain.ainvoke("news", RunConfig(run_name=chain_run_name))

    assert (await nightly())["trail"] == ["retrieve", "generate"]

    user_run = await read_flow_run(run_name)
    chain_run = await read_flow_run(chain_run_name)
    [parent_task] = await read_task_runs(user_run.id, expected=1)
    assert chain_run.parent_task_run_id == parent_task.id
    assert [r.id for r in await read_subflow_runs(user_run.id)] == [chain_run.id]
    assert [t.name for t in await read_task_runs(chain_run.id, expected=2)] == [
        "retrieve",
        "generate",
    ]


async def test_chain_inside_a_flow_with_subflow_false_adds_tasks_to_that_run(run_name):
    chain = Chain(steps("retrieve", "generate"), name="rag", subflow=False)

    @flow(flow_run_name=run_name)
    async def nightly() -> dict:
        return await chain.ainvoke("news")

    assert (await nightly())["trail"] == ["retrieve", "generate"]

    user_run = await read_flow_run(run_name)
    task_runs = await read_task_runs(user_run.id, expected=2)
    assert [t.name for t in task_runs] == ["retrieve", "generate"]
    assert await read_subflow_runs(user_run.id) == []


# --- every way of calling it --------------------------------------------------------------------


def test_invoke_from_sync_code():
    chain = Orchestrator().create_chain(steps("a", "b"), name="sync")
    assert chain.invoke({"input": "x"}) == {
        "input": "x",
        "output": "Result from b",
        "trail": ["a", "b"],
    }


async def test_sync_invoke_inside_a_running_event_loop():
    asyncio.get_running_loop()  # this test body runs on the session's loop
    chain = Chain(steps("a", "b"), name="nested-loop")
    assert chain.invoke("x")["trail"] == ["a", "b"]


def test_batch_returns_results_in_input_order():
    def tag(state):
        return {"output": f"<{state['input']}>"}

    chain = Chain([tag], name="batched")
    results = chain.batch(["one", "two", "three"], RunConfig(max_concurrency=2))
    assert [r["output"] for r in results] == ["<one>", "<two>", "<three>"]


def test_stream_yields_each_step_then_the_result():
    updates = list(Chain(steps("a", "b"), name="streamed").stream("x"))
    assert updates == [
        {"a": {"output": "Result from a", "trail": ["a"]}},
        {"b": {"output": "Result from b", "trail": ["a", "b"]}},
        {"__end__": {"input": "x", "output": "Result from b", "trail": ["a", "b"]}},
    ]


def test_sync_stream_of_a_chain_inside_a_sync_step_of_another():
    # The inner stream runs where Prefect gives each sync call a fresh event loop; driving it
    # chunk by chunk there failed with "Queue ... is bound to a different event loop".
    inner = Chain(steps("a", "b"), name="inner")

    def relay(state):
        return {"updates": [next(iter(update)) for update in inner.stream(state["input"])]}

    assert Chain([relay], name="outer").invoke("x")["updates"] == ["a", "b", "__end__"]


async def test_astream_yields_each_step_then_the_result():
    updates = [u async for u in Chain(steps("a", "b"), name="astreamed").astream("x")]
    assert [next(iter(u)) for u in updates] == ["a", "b", "__end__"]
    assert updates[-1]["__end__"]["trail"] == ["a", "b"]


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [42, ["input"], None], ids=["int", "list", "none"])
async def test_non_dict_input_is_rejected_before_any_run(bad):
    chain = Chain(steps("a"), name="typed")
    with pytest.raises(ValidationError, match=rf"chain 'typed' expects a dict.*got {type(bad).__name__}"):
        await chain.ainvoke(bad)


async def test_step_returning_a_non_dict_names_the_step_and_position():
    calls = []

    def summarize(state):
        calls.append(1)
        return "just a string"

    chain = Chain([SimpleStep("fetch"), summarize, SimpleStep("publish")], name="news", retries=2)

    with pytest.raises(StepOutputError) as raised:
        await chain.ainvoke("x")
    assert str(raised.value) == (
        "step 'summarize' (2 of 3) of chain 'news' returned str, expected a dict of state updates"
    )
    assert len(calls) == 1  # a validation error: permanent, not retried


def test_empty_chain_is_rejected():
    with pytest.raises(ValidationError, match="chain 'empty' has no steps"):
        Chain([], name="empty")


@pytest.mark.parametrize("bad", ["step", None, 42], ids=["str", "none", "int"])
def test_steps_must_be_a_list(bad):
    with pytest.raises(ValidationError, match="chain 'c': steps must be a list"):
        Chain(bad, name="c")


def test_non_runnable_step_is_rejected_with_its_position():
    with pytest.raises(ValidationError, match=r"step \(2 of 3\) of chain 'c' must be a Runnable.*got int"):
        Chain([SimpleStep("a"), 42, SimpleStep("b")], name="c")


def test_a_class_is_not_a_step():
    with pytest.raises(ValidationError, match=r"step \(1 of 1\) of chain 'c' must be a Runnable.*got type"):
        Chain([SimpleStep], name="c")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"retries": -1}, "retries must be an int >= 0, got -1"),
        ({"retries": "3"}, "retries must be an int >= 0, got '3'"),
        ({"retries": True}, "retries must be an int >= 0, got True"),
        ({"retries": 1.5}, "retries must be an int >= 0, got 1.5"),
        ({"timeout": 0}, "timeout must be > 0 seconds, got 0"),
        ({"timeout": -5}, "timeout must be > 0 seconds, got -5"),
        ({"step_timeout": 0}, "timeout must be > 0 seconds, got 0"),
        ({"retry_delay": -1}, "retry_delay must be seconds >= 0"),
        ({"retry_delay": []}, "retry_delay must be seconds >= 0 or a non-empty list"),
        ({"retry_delay": [1, "2"]}, "retry_delay must be seconds >= 0"),
        ({"retry_jitter": -0.5}, "retry_jitter must be a number >= 0"),
        ({"retry_on": "ConnectionError"}, "retry_on must be an exception type"),
        ({"error_handler": "log"}, "error_handler must be callable"),
        ({"memory": {}}, "memory must come from memory.new_memory"),
    ],
    ids=lambda value: str(value) if isinstance(value, dict) else "",
)
def test_bad_options_are_rejected_naming_the_option(option, message):
    with pytest.raises(ValidationError) as raised:
        Chain(steps("a"), name="c", **option)
    assert message in str(raised.value)


async def test_unknown_run_config_option_is_rejected_before_any_run():
    chain = Chain(steps("a"), name="c")
    with pytest.raises(ValidationError, match=r"unknown RunConfig option\(s\) \['run_nam'\]"):
        await chain.ainvoke("x", {"run_nam": "typo"})


def test_steps_are_coerced_and_named():
    async def retrieve(state):
        return {}

    def generate(state):
        return {}

    chain = Chain([retrieve, generate, SimpleStep("publish")], name="c")
    assert [s.name for s in chain.steps] == ["retrieve", "generate", "publish"]
    assert repr(chain) == "Chain(name='c', steps=['retrieve', 'generate', 'publish'])"


async def test_memory_in_a_file_store_carries_a_conversation_across_runs_and_sessions(tmp_path):
    def reply(state):
        return {"output": f"seen {state['history'].count('Human:')} earlier turn(s)"}

    def chat():  # a fresh chain and memory each time, as in a new flow-run process
        store = memory.FileMemoryStore(tmp_path)
        return Chain([reply], name="persistent-chat", memory=memory.new_memory("buffer", store=store))

    assert (await chat().ainvoke({"input": "one", "session_id": "alice"}))["output"] == "seen 0 earlier turn(s)"
    assert (await chat().ainvoke({"input": "two", "session_id": "alice"}))["output"] == "seen 1 earlier turn(s)"
    assert (await chat().ainvoke({"input": "one", "session_id": "bob"}))["output"] == "seen 0 earlier turn(s)"
