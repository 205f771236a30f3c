"""`core._checks`: the one set of argument checks, and the constructors that use them.

Python's ``True`` is an ``int`` (``isinstance(True, int)``, ``True >= 1``): every integer option of
the package refuses it, with a message naming the object, the argument and what came instead.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from prefect_beluga.core._checks import check_bool, check_int, check_json, check_name, check_number, is_int, is_number
from prefect_beluga.core.errors import ValidationError


@pytest.mark.parametrize("value", [0, 1, 10**20])
def test_is_int_accepts_ints(value):
    assert is_int(value)


@pytest.mark.parametrize("value", [True, False, 1.0, "1", None, Fraction(1)])
def test_is_int_refuses_bools_floats_and_strings(value):
    assert not is_int(value)


@pytest.mark.parametrize(
    ("value", "expected"), [(1, True), (0.5, True), (True, False), (math.nan, False), (math.inf, False), ("1", False)]
)
def test_is_number_means_finite_and_not_bool(value, expected):
    assert is_number(value) is expected


def test_check_int_returns_what_it_accepts():
    assert check_int(5, "k", low=1) == 5
    assert check_int(10, "k", low=1, high=10) == 10
    assert check_int(None, "k", low=1, none=True) is None


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (True, {"low": 1}, "WindowMemory: k must be an int >= 1, got True"),
        (False, {"low": 0}, "WindowMemory: k must be an int >= 0, got False"),
        (0, {"low": 1}, "WindowMemory: k must be an int >= 1, got 0"),
        (2.0, {"low": 1}, "WindowMemory: k must be an int >= 1, got 2.0"),
        (None, {"low": 1}, "WindowMemory: k must be an int >= 1, got None"),
        (11, {"low": 1, "high": 10}, "WindowMemory: k must be an int from 1 to 10, got 11"),
        ("3", {"low": 1, "none": True}, "WindowMemory: k must be an int >= 1 or None, got '3'"),
        (0, {"low": 1, "why": " (one per turn)"}, r"WindowMemory: k must be an int >= 1 \(one per turn\), got 0"),
    ],
)
def test_check_int_names_the_argument_and_what_came(value, kwargs, message):
    with pytest.raises(ValidationError, match=f"^{message}$"):
        check_int(value, "WindowMemory: k", **kwargs)


def test_check_number_returns_what_it_accepts():
    assert check_number(0.5, "timeout", seconds=True) == 0.5
    assert check_number(0, "retry_delay", strict=False, seconds=True) == 0
    assert check_number(None, "timeout", none=True) is None
    assert check_number(30, "lost_after", low=30, strict=False) == 30


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (0, {"seconds": True}, "timeout must be > 0 seconds, got 0"),
        (True, {"seconds": True}, "timeout must be > 0 seconds, got True"),
        (math.nan, {}, "timeout must be a number > 0, got nan"),
        (math.inf, {}, "timeout must be a number > 0, got inf"),
        ("5", {"none": True}, "timeout must be a number > 0 or None, got '5'"),
        (-1, {"strict": False, "seconds": True}, "timeout must be >= 0 seconds, got -1"),
        (29.5, {"low": 30, "strict": False}, "timeout must be a number >= 30, got 29.5"),
    ],
)
def test_check_number_names_the_argument_and_what_came(value, kwargs, message):
    with pytest.raises(ValidationError, match=f"^{message}$"):
        check_number(value, "timeout", **kwargs)


def test_check_bool_takes_only_true_or_false():
    assert check_bool(False, "durable") is False
    for value in (1, 0, "yes", None):
        with pytest.raises(ValidationError, match=f"^durable must be True or False, got {value!r}$"):
            check_bool(value, "durable")


def test_names_and_json_values():
    assert check_name("my flow", "name") == "my flow"
    with pytest.raises(ValidationError, match="workflow_id must be a non-empty string without spaces or /"):
        check_name("a b", "workflow_id", spaces=False)
    with pytest.raises(ValidationError, match="name must be a non-empty string without / % & < >, got 'a/b'"):
        check_name("a/b", "name")
    assert check_json({"a": [1, "x"]}, "input") == '{"a": [1, "x"]}'
    with pytest.raises(ValidationError, match="input must be JSON-serialisable.*key 'when' holds a object"):
        check_json({"when": object()}, "input")


# -- the constructors: True is never an int, and the messages name the object -------------------


def _step(state: dict) -> dict:
    return {"output": state}


def _constructors():
    from prefect_beluga import Chain, Graph, Map, RunConfig, UsageLimits, Workflow, llms
    from prefect_beluga.agents import Agent
    from prefect_beluga.memory import WindowMemory
    from prefect_beluga.rag.splitter import TokenTextSplitter
    from prefect_beluga.vectorstores import InMemoryVectorStore

    offline = llms.OfflineChatModel()
    return {
        # drifted before core/_checks: these accepted True (as 1) or False (as 0)
        "graph-recursion-limit": (
            lambda: Graph(name="g", recursion_limit=True), r"graph 'g': recursion_limit must be an int >= 1, got True"
        ),
        "graph-max-concurrency": (
            lambda: Graph(name="g", max_concurrency=True), r"graph 'g': max_concurrency must be an int >= 1 or None"
        ),
        "run-config-max-concurrency": (
            lambda: RunConfig(max_concurrency=True), r"RunConfig.max_concurrency must be an int >= 1 or None, got True"
        ),
        "offline-max-sentences": (
            lambda: llms.OfflineChatModel(max_sentences=True), r"max_sentences must be an int >= 1, got True"
        ),
        "splitter-overlap": (
            lambda: TokenTextSplitter(chunk_size=40, chunk_overlap=False), r"chunk_overlap must be an int with 0 <="
        ),
        "workflow-retry-delay": (
            lambda: Workflow(_step, workflow_id="w", retry_delay=True), r"retry_delay must be >= 0 seconds, got True"
        ),
        "workflow-timeout": (
            lambda: Workflow(_step, workflow_id="w", timeout=True), r"timeout must be > 0 seconds or None, got True"
        ),
        "chain-retry-delay": (
            lambda: Chain([_step], name="c", retry_delay=[1, True]), r"retry_delay must be seconds >= 0 or a non-empty"
        ),
        "chain-timeout": (lambda: Chain([_step], name="c", timeout=True), r"chain 'c': timeout must be > 0 seconds"),
        "chain-retry-jitter": (
            lambda: Chain([_step], name="c", retry_jitter=True), r"retry_jitter must be a number >= 0"
        ),
        # refused before, and still: the same words everywhere
        "map-max-concurrency": (
            lambda: Map(_step, over="items", max_concurrency=True), r"Map: max_concurrency must be an int >= 1 or None"
        ),
        "agent-max-iterations": (
            lambda: Agent(offline, name="a", max_iterations=True), r"Agent 'a': max_iterations must be an int >= 1"
        ),
        "agent-max-concurrency": (
            lambda: Agent(offline, name="a", max_concurrency=False), r"Agent 'a': max_concurrency must be an int >= 1"
        ),
        "agent-durable": (lambda: Agent(offline, name="a", durable=1), r"Agent 'a': durable must be True or False"),
        "window-memory-k": (lambda: WindowMemory(k=True), r"WindowMemory: k must be an int >= 1, got True"),
        "usage-limits": (lambda: UsageLimits(requests=True), r"UsageLimits: requests must be an int >= 0 or None"),
        "store-dimension": (
            lambda: InMemoryVectorStore(dimension=True), r"InMemoryVectorStore: dimension must be an int >= 1 or None"
        ),
    }


@pytest.mark.parametrize("case", sorted(_constructors()))
def test_constructors_refuse_bools_naming_the_object_and_the_argument(case):
    build, message = _constructors()[case]
    with pytest.raises(ValidationError, match=message):
        build()
