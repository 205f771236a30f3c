"""The Runnable protocol (core/runnable.py), input/output state rules (core/state.py) and
RunConfig (core/config.py). Pure logic: no Prefect flow run is started here."""

from __future__ import annotations

import asyncio
import functools
import threading
from contextlib import closing
from itertools import islice

import pytest

from prefect_beluga import RunConfig, Runnable, StepOutputError, ValidationError
from prefect_beluga.core import RunnableCallable, coerce_to_runnable, ensure_config
from prefect_beluga.core.state import check_output, coerce_input, merge


class Upper(Runnable):
    """Sync only."""

    def invoke(self, input, config=None):
        return {"output": input["input"].upper(), "thread": threading.get_ident()}


class Lower(Runnable):
    """Async only."""

    name = "lower"

    async def ainvoke(self, input, config=None):
        return {"output": input["input"].lower()}


class Neither(Runnable):
    pass


# --- Runnable -----------------------------------------------------------------------------------


def test_sync_runnable_gets_ainvoke_batch_and_stream():
    upper = Upper()
    assert upper.name == "Upper"  # defaults to the class name
    assert asyncio.run(upper.ainvoke({"input": "a"}))["output"] == "A"
    assert [r["output"] for r in upper.batch([{"input": "a"}, {"input": "b"}])] == ["A", "B"]
    assert [c["output"] for c in upper.stream({"input": "c"})] == ["C"]


async def test_sync_invoke_runs_off_the_event_loop():
    result = await Upper().ainvoke({"input": "a"})
    assert result["thread"] != threading.get_ident()


def test_async_runnable_gets_invoke_from_sync_code():
    assert Lower().invoke({"input": "ABC"}) == {"output": "abc"}


async def test_async_runnable_invoke_inside_a_running_loop():
    assert Lower().invoke({"input": "ABC"}) == {"output": "abc"}


async def test_astream_and_abatch():
    assert [c async for c in Lower().astream({"input": "X"})] == [{"output": "x"}]
    assert await Lower().abatch([{"input": "A"}, {"input": "B"}]) == [
        {"output": "a"},
        {"output": "b"},
    ]


async def test_abatch_respects_max_concurrency_and_keeps_order():
    running = 0
    peak = 0

    async def work(state):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01 * (5 - state["i"]))  # later inputs finish first
        running -= 1
        return {"i": state["i"]}

    results = await RunnableCallable(work).abatch(
        [{"i": i} for i in range(5)], RunConfig(max_concurrency=2)
    )
    assert [r["i"] for r in results] == [0, 1, 2, 3, 4]
    assert peak == 2


async def test_abatch_return_exceptions():
    def maybe_fail(state):
        if state["fail"]:
            raise ValueError("nope")
        return {"ok": True}

    results = await RunnableCallable(maybe_fail).abatch(
        [{"fail": False}, {"fail": True}], return_exceptions=True
    )
    assert results[0] == {"ok": True}
    assert isinstance(results[1], ValueError)


class Ticker(Runnable):
    """Streams "tick 0", "tick 1", ...; then fails, or waits (for a consumer to stop it)."""

    def __init__(self, ticks: int, then: str) -> None:
        self.ticks, self.then, self.ending = ticks, then, None

    async def astream(self, input, config=None):
        try:
            for i in range(self.ticks):
                yield f"tick {i}"
            if self.then == "fail":
                raise ConnectionError("stream dropped")
            await asyncio.sleep(30)
            self.ending = "finished"
        except (asyncio.CancelledError, GeneratorExit):
            self.ending = "stopped"
            raise


def test_stream_raises_the_error_of_astream_after_the_chunks_before_it():
    received = []
    with pytest.raises(ConnectionError, match="stream dropped"):
        for chunk in Ticker(2, then="fail").stream({}):
            received.append(chunk)
    assert received == ["tick 0", "tick 1"]


def test_closing_a_stream_early_cancels_the_run():
    ticker = Ticker(1, then="wait")
    for chunk in ticker.stream({}):
        assert chunk == "tick 0"
        break
    assert ticker.ending == "stopped"  # not left running to "finished"


async def test_sync_stream_inside_a_running_loop():
    asyncio.get_running_loop()  # this test body runs on the session's loop
    assert list(Lower().stream({"input": "ABC"})) == [{"output": "abc"}]
    with closing(Ticker(3, then="wait").stream({})) as chunks:
        assert list(islice(chunks, 3)) == ["tick 0", "tick 1", "tick 2"]


def test_runnable_with_neither_invoke_nor_ainvoke():
    with pytest.raises(NotImplementedError, match="Neither must implement invoke or ainvoke"):
        Neither().invoke({})
    with pytest.raises(NotImplementedError, match="Neither must implement invoke or ainvoke"):
        asyncio.run(Neither().ainvoke({}))


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="'Upper' object has no attribute 'nmae'"):
        Upper().nmae  # noqa: B018


# --- callables coerced into Runnables -----------------------------------------------------------


def test_sync_function_is_coerced_and_named_after_it():
    def summarize(state):
        return {"summary": state["input"][:3]}

    step = coerce_to_runnable(summarize, where="step 1")
    assert isinstance(step, Runnable)
    assert step.name == "summarize"
    assert repr(step) == "RunnableCallable('summarize')"
    assert step.invoke({"input": "abcdef"}) == {"summary": "abc"}
    assert asyncio.run(step.ainvoke({"input": "abcdef"})) == {"summary": "abc"}


def test_async_function_is_coerced_and_named_after_it():
    async def retrieve(state):
        await asyncio.sleep(0)
        return {"docs": [state["input"]]}

    step = coerce_to_runnable(retrieve, where="step 1")
    assert step.name == "retrieve"
    assert step.invoke({"input": "q"}) == {"docs": ["q"]}
    assert asyncio.run(step.ainvoke({"input": "q"})) == {"docs": ["q"]}


def test_lambda_partial_and_callable_object_names():
    def scale(state, config=None, *, factor):
        return {"x": state["x"] * factor}

    class Doubler:
        async def __call__(self, state):
            return {"x": state["x"] * 2}

    assert RunnableCallable(lambda s: s).name == "lambda"
    assert RunnableCallable(functools.partial(scale, factor=3)).name == "scale"
    doubler = RunnableCallable(Doubler())
    assert doubler.name == "Doubler"
    assert asyncio.run(doubler.ainvoke({"x": 2})) == {"x": 4}  # async __call__ is awaited
    assert RunnableCallable(len, name="custom").name == "custom"


def test_function_taking_a_second_argument_receives_the_run_config():
    seen = []

    def step(state, config):
        seen.append(config)
        return {}

    RunnableCallable(step).invoke({}, {"tags": ["rag"]})
    assert seen == [RunConfig(tags=("rag",))]


def test_runnables_pass_through_coercion_unchanged():
    upper = Upper()
    assert coerce_to_runnable(upper, where="step 1") is upper


@pytest.mark.parametrize("bad", [42, "step", None, Upper], ids=["int", "str", "none", "class"])
def test_non_callables_and_classes_are_not_runnables(bad):
    with pytest.raises(ValidationError, match=r"^step 2 of chain 'c' must be a Runnable or a callable"):
        coerce_to_runnable(bad, where="step 2 of chain 'c'")


def test_runnable_callable_rejects_a_non_callable():
    with pytest.raises(ValidationError, match="expected a callable, got int"):
        RunnableCallable(42)


# --- state --------------------------------------------------------------------------------------


def test_str_input_becomes_input_key():
    assert coerce_input("hi", where="chain 'c'") == {"input": "hi"}


def test_dict_input_is_copied():
    original = {"input": "hi"}
    state = coerce_input(original, where="chain 'c'")
    state["extra"] = 1
    assert original == {"input": "hi"}


@pytest.mark.parametrize("bad", [42, ["a"], None, b"bytes"])
def test_non_dict_input_names_where_and_type(bad):
    with pytest.raises(ValidationError, match=rf"^chain 'c' expects a dict .* got {type(bad).__name__}$"):
        coerce_input(bad, where="chain 'c'")


def test_step_output_must_be_a_dict():
    assert check_output({"a": 1}, where="step 'x' (1 of 1)") == {"a": 1}
    with pytest.raises(StepOutputError, match=r"^step 'x' \(1 of 1\) returned list, expected a dict"):
        check_output([1], where="step 'x' (1 of 1)")
    assert issubclass(StepOutputError, ValidationError)


def test_merge_keeps_earlier_keys_and_lets_the_step_override():
    state = {"input": "q", "output": "old"}
    assert merge(state, {"output": "new", "docs": []}) == {"input": "q", "output": "new", "docs": []}
    assert state == {"input": "q", "output": "old"}  # not mutated


# --- RunConfig ----------------------------------------------------------------------------------


def test_run_config_defaults_and_normalisation():
    config = RunConfig(tags=["a", "b"], metadata={"k": 1})
    assert config.run_name is None and config.max_concurrency is None
    assert config.tags == ("a", "b")
    with pytest.raises(TypeError):
        config.metadata["k"] = 2  # read-only: shared by every step


def test_run_config_rejects_a_single_string_tag():
    with pytest.raises(ValidationError, match="RunConfig.tags must be a list of strings"):
        RunConfig(tags="rag")


@pytest.mark.parametrize("bad", [0, -1])
def test_run_config_rejects_max_concurrency_below_one(bad):
    with pytest.raises(ValidationError, match=rf"RunConfig.max_concurrency must be an int >= 1 or None, got {bad}"):
        RunConfig(max_concurrency=bad)


def test_ensure_config_accepts_none_dict_and_run_config():
    config = RunConfig(run_name="r")
    assert ensure_config(None) == RunConfig()
    assert ensure_config(config) is config
    assert ensure_config({"run_name": "r"}) == config


def test_ensure_config_rejects_unknown_options_naming_them():
    with pytest.raises(ValidationError) as raised:
        ensure_config({"run_name": "r", "retries": 3, "tag": "x"})
    message = str(raised.value)
    assert "unknown RunConfig option(s) ['retries', 'tag']" in message
    assert "'max_concurrency'" in message  # says what is allowed


def test_ensure_config_rejects_other_types():
    with pytest.raises(ValidationError, match="config must be a RunConfig, a dict or None, got list"):
        ensure_config(["run_name"])
