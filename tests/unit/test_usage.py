"""The budget of `prefect_beluga.usage`, without Prefect: limits checked, requests admitted or
refused, concurrent requests (tasks and threads) sharing one budget, nested budgets."""

from __future__ import annotations

import asyncio
import contextvars
import pickle
import threading

import pytest

from prefect_beluga import UsageLimitExceeded, UsageLimits, ValidationError, usage
from prefect_beluga.core.retry import is_permanent
from prefect_beluga.llms.offline import OfflineChatModel
from prefect_beluga.schema import AIMessage, ChatResult, HumanMessage, Usage
from prefect_beluga.tokens import count_message_tokens
from prefect_beluga.usage._budget import before_request, count_replayed, tallied, usage_in
from prefect_beluga.usage._limits import check_limits, check_prices, estimate_input_tokens


@pytest.mark.parametrize(
    ("field", "value"),
    [("requests", -1), ("requests", True), ("input_tokens", 1.5), ("output_tokens", "10"),
     ("total_tokens", False), ("cost_usd", -0.01), ("cost_usd", float("inf")), ("cost_usd", True),
     ("cost_usd", "1")],
)
def test_bad_limits_are_clear_errors(field, value):
    with pytest.raises(ValidationError, match=f"UsageLimits: {field} must be"):
        UsageLimits(**{field: value})


def test_limits_from_a_dict_and_bad_types():
    assert check_limits({"requests": 3}, "chain 'x'") == UsageLimits(requests=3)
    assert check_limits(None, "x") is None
    with pytest.raises(ValidationError, match=r"chain 'x': unknown usage limit\(s\) \['tokens'\]"):
        check_limits({"tokens": 3}, "chain 'x'")
    with pytest.raises(ValidationError, match="usage_limits must be a prefect_beluga.UsageLimits"):
        check_limits(5, "chain 'x'")
    assert UsageLimits(cost_usd=0).is_set() and not UsageLimits().is_set()


def test_no_budget_is_the_fast_path():
    assert before_request("gpt-4o-mini", "openai", [HumanMessage("hi")]) is None
    assert usage.current_usage() is None


def test_requests_are_refused_past_the_limit_and_not_sent():
    llm = OfflineChatModel()
    with usage.scope(UsageLimits(requests=2), name="run 'r'") as budget:
        llm.generate("What is Prefect? Prefect runs flows.")
        llm.generate("What is Prefect? Prefect runs flows.")
        with pytest.raises(UsageLimitExceeded) as caught:
            llm.generate("What is Prefect? Prefect runs flows.")
    exc = caught.value
    assert (exc.limit, exc.value, exc.run, exc.step) == ("requests", 2, "run 'r'", "offline:offline-extractive")
    assert exc.usage == budget.usage() and exc.usage.requests == 2 and exc.usage.total_tokens > 0
    assert is_permanent(exc)  # never retried
    again = pickle.loads(pickle.dumps(exc))
    assert (again.limit, again.usage, str(again)) == (exc.limit, exc.usage, str(exc))


def test_input_tokens_are_estimated_before_sending():
    messages = [HumanMessage("word " * 50)]
    estimate = estimate_input_tokens("gpt-4o-mini", messages)
    assert estimate == count_message_tokens(messages, "gpt-4o-mini")
    tools = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]
    assert estimate_input_tokens("gpt-4o-mini", messages, tools) > estimate
    with usage.scope(UsageLimits(input_tokens=estimate - 1)) as budget:
        with pytest.raises(UsageLimitExceeded, match=r"input_tokens=.*not sent \(it would need ~\d+ input tokens\)"):
            OfflineChatModel().generate(messages)
    assert budget.usage().requests == 0


def test_a_reply_past_the_limit_raises_after_counting():
    llm = OfflineChatModel()
    with usage.scope(UsageLimits(output_tokens=1)) as budget, pytest.raises(UsageLimitExceeded) as caught:
        llm.generate("What is Prefect? Prefect runs flows on schedules.")
    assert "the reply put the run over it" in str(caught.value)
    assert budget.usage().output_tokens > 1 and budget.usage().requests == 1


def test_a_failed_request_stays_counted_and_gives_its_tokens_back():
    with usage.scope(UsageLimits(requests=5, total_tokens=1000)) as budget:
        ticket = before_request("gpt-4o-mini", "openai", [HumanMessage("hello")])
        assert budget.in_flight == 1
        ticket.failed()
        assert budget.in_flight == 0 and budget._reserved_input == 0
        assert budget.usage().requests == 1 and budget.usage().total_tokens == 0


async def test_concurrent_requests_share_one_budget_without_overshoot():
    llm = OfflineChatModel()
    with usage.scope(UsageLimits(requests=7)) as budget:
        results = await asyncio.gather(
            *(llm.agenerate("What is Prefect? Prefect runs flows.") for _ in range(20)), return_exceptions=True
        )
    assert sum(isinstance(r, ChatResult) for r in results) == 7
    assert all(isinstance(r, UsageLimitExceeded) for r in results if not isinstance(r, ChatResult))
    assert budget.usage().requests == 7


def test_threads_with_a_copied_context_share_the_budget():
    llm = OfflineChatModel()
    outcomes: list[object] = []

    def worker() -> None:
        try:
            outcomes.append(llm.generate("What is Prefect? Prefect runs flows."))
        except UsageLimitExceeded as exc:
            outcomes.append(exc)

    with usage.scope(UsageLimits(requests=5)) as budget:
        threads = [threading.Thread(target=contextvars.copy_context().run, args=(worker,)) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sum(isinstance(o, ChatResult) for o in outcomes) == 5
    assert budget.usage().requests == 5


def test_nested_budgets_both_hold():
    llm = OfflineChatModel()
    with usage.scope(UsageLimits(requests=3), name="outer") as outer:
        llm.generate("What is Prefect? Prefect runs flows.")
        with usage.scope(UsageLimits(requests=5), name="inner") as inner:
            llm.generate("What is Prefect? Prefect runs flows.")
            llm.generate("What is Prefect? Prefect runs flows.")
            with pytest.raises(UsageLimitExceeded) as caught:
                llm.generate("What is Prefect? Prefect runs flows.")
    assert caught.value.run == "outer"
    assert (outer.usage().requests, inner.usage().requests) == (3, 2)


def test_cost_needs_a_price():
    limits = UsageLimits(cost_usd=1.0)
    check_prices(limits, [("gpt-4o-mini", "openai"), ("offline-extractive", "offline")], "x")
    check_prices(UsageLimits(requests=1), [("llama3.2", "ollama")], "x")  # no cost limit: fine
    with pytest.raises(ValidationError, match=r"x: UsageLimits\(cost_usd=1.0\) is set, but model 'llama3.2'"):
        check_prices(limits, [("llama3.2", "ollama")], "x")
    with usage.scope(limits), pytest.raises(ValidationError, match="has no known price"):
        before_request("my-model", "compatible", [HumanMessage("hi")])
    with pytest.raises(ValidationError, match="has no known price"), usage.scope(limits, models=[("m", "vllm")]):
        pass


def test_unpriced_replies_make_the_cost_unknown_without_a_cost_limit():
    with usage.scope() as budget:
        before_request("my-model", "compatible", [HumanMessage("hi")]).settle(
            Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7))
    assert budget.usage().cost_usd is None and budget.usage().total_tokens == 7
    assert "cost unknown" in str(budget.usage())


def test_replayed_records_count():
    replay = lambda result: count_replayed(usage_in(result))  # noqa: E731
    with usage.scope(UsageLimits(requests=2)) as budget:
        replay({"output": "x", "usage": {"prompt_tokens": 3, "completion_tokens": 4,
                                         "total_tokens": 7}, "model": "gpt-4o-mini"})
        replay(ChatResult(message=AIMessage("hi"), usage=Usage(prompt_tokens=1, completion_tokens=1,
                                                               total_tokens=2), model="gpt-4o-mini"))
        replay({"output": "no usage here"})
    used = budget.usage()
    assert (used.requests, used.total_tokens, budget.replayed) == (2, 9, 2) and used.cost_usd > 0
    with usage.scope(UsageLimits(requests=2)), pytest.raises(UsageLimitExceeded):
        replay({"usage": {"prompt_tokens": 1}, "model": "gpt-4o-mini"})
        replay({"usage": {"prompt_tokens": 1}, "model": "gpt-4o-mini"})
        OfflineChatModel().generate("hi there")


def test_a_tally_holds_what_its_block_used_and_nested_tallies_share_it():
    llm = OfflineChatModel()
    with usage.scope() as budget, tallied() as outer:
        llm.generate("one")
        with tallied() as inner:
            llm.generate("two")
            count_replayed(usage.RunUsage(requests=3, input_tokens=1, output_tokens=2, total_tokens=3,
                                                cost_usd=0.0))
    assert budget.usage() == outer.usage()
    assert (outer.usage().requests, inner.usage().requests) == (5, 4)
    assert inner.usage().total_tokens < outer.usage().total_tokens
    with tallied() as alone:  # no budget open: nothing is counted
        llm.generate("three")
    assert alone.usage().requests == 0


async def test_streams_are_held_to_the_budget():
    llm = OfflineChatModel()
    with usage.scope(UsageLimits(requests=1)) as budget:
        text = "".join([d async for d in llm.astream("What is Prefect? Prefect runs flows.")])
        with pytest.raises(UsageLimitExceeded):
            async for _ in llm.astream("What is Prefect? Prefect runs flows."):
                pass
    assert text.startswith("[offline model]")
    assert budget.usage().requests == 1 and budget.usage().output_tokens > 0
