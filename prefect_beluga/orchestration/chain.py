"""Chain: steps run in order, each one a Prefect task run.

Examples:
    Three steps, retried by Prefect, inside one flow run named "tutorial":

    ```python
    from prefect_beluga import Chain


    def fetch(state):
        return {"text": f"News about {state['input']}. More later."}


    def summarize(state):
        return {"summary": state["text"].split(".")[0]}


    def publish(state):
        return {"output": state["summary"].upper()}


    chain = Chain([fetch, summarize, publish], name="tutorial", retries=3, retry_delay=2.0)
    chain.invoke({"input": "test"})["output"]  # -> 'NEWS ABOUT TEST'
    ```

    Called inside your own flow, the chain becomes a subflow of your flow run (it costs what a
    top-level call costs: see docs/performance.md, "Composing inside a flow"):

    ```python
    from prefect import flow


    @flow
    def nightly():
        return chain.invoke("today's news")


    nightly()["output"]  # -> "NEWS ABOUT TODAY'S NEWS"
    ```
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

import anyio
from prefect.utilities.annotations import quote

from prefect_beluga.core._checks import check_number
from prefect_beluga.core.config import ConfigLike, RunConfig, ensure_config
from prefect_beluga.core.errors import ChainTimeoutError, ValidationError, add_step_note
from prefect_beluga.core.event_stream import StreamSink, stream_events
from prefect_beluga.core.retry import RetryOn
from prefect_beluga.core.runnable import Runnable, coerce_to_runnable
from prefect_beluga.core.state import coerce_input, merge
from prefect_beluga.memory.base import BaseMemory
from prefect_beluga.orchestration._cache import CacheSettings, cache_steps
from prefect_beluga.orchestration._durable import check_durable, entered
from prefect_beluga.orchestration._runtime import body_flow, in_flow_run, run_body
from prefect_beluga.orchestration._stream import raise_if_stopped, stop_requested, stopped_body
from prefect_beluga.orchestration._tasks import RetryPolicy, call_args, runnable_task
from prefect_beluga.orchestration._usage import budgeted
from prefect_beluga.orchestration._usage import setup as usage_setup
from prefect_beluga.usage import UsageLimits

# (chain, memory variables) read when the running call was made; see Chain._invoke.
_loaded_memory: ContextVar[tuple[Any, dict[str, Any] | None]] = ContextVar("prefect_beluga_loaded_memory")

ErrorHandler = Callable[[BaseException], BaseException | dict[str, Any] | None]


class Chain(Runnable):
    """Runs steps in order; each step sees the previous state updated with its output.

    Every step runs as a Prefect task named after it, with the chain's retry policy as the
    task's retry policy. Outside a flow run, `invoke` starts one flow run named after the
    chain; inside a flow run it nests as a subflow (or, with `subflow=False`, as tasks of the
    caller's flow run).

    Args:
        steps: Runnables, or functions / coroutine functions taking the state dict and
            returning a dict of updates. Each is named by its `name`; a name two steps share
            is numbered for the later ones (`lambda`, `lambda_2`: see `step_names`).
        name: Name of the chain's flow (default "chain").
        timeout: Seconds the whole chain may take; past it, `ChainTimeoutError`.
        retries: Extra attempts per step after the first (Prefect's count; Beluga's
            `WithChainRetries(n)` counts total attempts, so it maps to `retries=n - 1`).
        retry_delay: Seconds between attempts, or a list of them for backoff.
        retry_jitter: Prefect's retry jitter factor.
        retry_on: What to retry: exception type(s) or a predicate. Default: every error but
            permanent ones (validation, authentication/permission, 4xx other than 408/409/429).
        step_timeout: Seconds one attempt of one step may take (Prefect task timeout).
        error_handler: `handler(exc) -> Exception | dict | None`, called with the exception
            of a step that finally failed: returns the exception to raise, or a dict to use as
            the chain's result (None re-raises), e.g. ``lambda exc: {"output": "unavailable"}``.
        memory: Conversation memory: its variables are loaded into the input when the call
            is made; the input/output pair is saved after the last step. Sequential calls
            see every earlier turn (of their session: the input's `session_id`, else the
            memory's). Calls that overlap - the items of one `batch`, concurrent `ainvoke`s -
            never see one another's turns: each sees the memory as it was when it (for a
            batch: the batch) started, and its own turn is saved when it finishes.
        subflow: Inside a flow run, run as a subflow (default) or as the caller's tasks.
        cache: Cross-run cache: True caches every step, a list of step names those steps. A
            cached step whose input was seen before (in any process sharing Prefect's result
            storage) returns the stored output without running; its task run shows as Cached.
            Keys are made of values only (see docs/cache.md).
        cache_expiration: How long a cached output is reused (a `timedelta`; None: forever).
        cache_storage: Where cached outputs are kept: a Prefect filesystem block (or its
            slug, e.g. "s3-bucket/results"); default: Prefect's result storage.
        durable: Inside a flow run (yours, or a workflow's), persist each finished step's
            output under the run and the step's place in it, so a retried or re-run flow run
            reads it back instead of running the step again (docs/durability.md). False: steps
            (and everything inside them) run again. Outside a flow run nothing is persisted.
        usage_limits: A `UsageLimits` budget for each run of the chain, shared by its steps,
            Map items, agents and retries: a model request past it is not sent and
            `UsageLimitExceeded` is raised (docs/budgets.md). The usage goes on the run's artifact.

    Examples:
        ```python
        from prefect_beluga import Chain, memory


        def retrieve(state):
            return {"context": "Prefect is a workflow orchestrator."}


        def generate(state):
            return {"output": f"From the docs: {state['context']}"}


        chain = Chain([retrieve, generate], name="rag", timeout=60, retries=2,
                      retry_delay=[1, 2], memory=memory.new_memory("buffer"))
        chain.invoke("What is Prefect?")["output"]  # -> 'From the docs: Prefect is a workflow orchestrator.'
        ```

        Memory and concurrency: the two items of this batch both see "earlier" in their
        history, neither sees the other; a later `invoke` sees all three turns. To keep
        conversations apart for good, give each its own `session_id` in the input.

        ```python
        def reply(state):
            return {"output": f"noted {state['input']}", "seen": state["history"].count("Human:")}


        chat = Chain([reply], memory=memory.new_memory(memory.MemoryType.BUFFER))
        chat.invoke({"input": "earlier"})
        [r["seen"] for r in chat.batch([{"input": "apple"}, {"input": "banana"}])]  # -> [1, 1]
        chat.invoke({"input": "what did I say?"})["seen"]  # -> 3 (earlier, apple, banana)
        ```
    """

    def __init__(
        self,
        steps: Sequence[Runnable | Callable[..., Any]],
        *,
        name: str | None = None,
        timeout: float | None = None,
        retries: int = 0,
        retry_delay: float | Sequence[float] = 0.0,
        retry_jitter: float | None = None,
        retry_on: RetryOn | None = None,
        step_timeout: float | None = None,
        error_handler: ErrorHandler | None = None,
        memory: BaseMemory | None = None,
        subflow: bool = True,
        cache: bool | Collection[str] = False,
        cache_expiration: timedelta | None = None,
        cache_storage: Any = None,
        durable: bool = True,
        usage_limits: UsageLimits | None = None,
    ) -> None:
        self.name = name or "chain"
        self.durable = check_durable(durable, f"chain {self.name!r}")
        if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
            raise ValidationError(
                f"chain {self.name!r}: steps must be a list of Runnables or callables, "
                f"got {type(steps).__name__}"
            )
        if not steps:
            raise ValidationError(f"chain {self.name!r} has no steps; give it at least one")
        if timeout is not None:
            check_number(timeout, f"chain {self.name!r}: timeout", seconds=True)
        if error_handler is not None:
            _check_error_handler(self.name, error_handler)
        if memory is not None and not isinstance(memory, BaseMemory):
            raise ValidationError(
                f"chain {self.name!r}: memory must come from memory.new_memory(...), "
                f"got {type(memory).__name__}"
            )
        self.steps: tuple[Runnable, ...] = tuple(
            coerce_to_runnable(step, where=self._where(i, len(steps)))
            for i, step in enumerate(steps)
        )
        #: The steps' names in this chain: their own, a repeated one numbered (`name_2`, ...).
        self.step_names: tuple[str, ...] = distinct_names([step.name for step in self.steps])
        self.timeout = timeout
        try:
            self.retry_policy = RetryPolicy(
                retries=retries,
                retry_delay=retry_delay,
                retry_jitter=retry_jitter,
                retry_on=retry_on,
                timeout=step_timeout,
            )
        except ValidationError as exc:
            raise ValidationError(f"chain {self.name!r}: {exc}") from None
        self.error_handler = error_handler
        self.memory = memory
        self.subflow = subflow
        self.cached_steps = cache_steps(cache, list(self.step_names), where=f"chain {self.name!r}")
        settings = (
            CacheSettings(f"chain {self.name!r}", cache_expiration, cache_storage) if self.cached_steps else None
        )
        self._tasks = [
            runnable_task(
                step,
                name=name,
                where=self._where(i, len(self.steps), name),
                policy=self.retry_policy,
                cache=settings if name in self.cached_steps else None,
            )
            for i, (step, name) in enumerate(zip(self.steps, self.step_names, strict=True))
        ]
        self.usage_limits = usage_setup(usage_limits, self, f"chain {self.name!r}")
        self._flow = body_flow(self.name, self._flow_body, description=f"Chain of {len(self.steps)} steps")

    def _where(self, index: int, count: int, name: str | None = None) -> str:
        named = f" {name!r}" if name is not None else ""
        return f"step{named} ({index + 1} of {count}) of chain {self.name!r}"

    async def ainvoke(self, input: Any, config: ConfigLike = None) -> dict[str, Any]:
        state = coerce_input(input, where=f"chain {self.name!r}")
        return await self._invoke(state, ensure_config(config), self._load_memory(state))

    async def abatch(
        self, inputs: Sequence[Any], config: ConfigLike = None, *, return_exceptions: bool = False
    ) -> list[Any]:
        """Run on many inputs concurrently (at most `config.max_concurrency` at a time).

        With memory, every item sees the memory as it was when the batch started (items
        without a `session_id` share the memory's default session, but never see one
        another's turns); each item's turn is saved when it finishes.
        """
        run_config = ensure_config(config)
        prepared: list[tuple[dict[str, Any], dict[str, Any] | None] | BaseException] = []
        for item in inputs:
            try:
                state = coerce_input(item, where=f"chain {self.name!r}")
                prepared.append((state, self._load_memory(state)))
            except Exception as exc:
                if not return_exceptions:
                    raise
                prepared.append(exc)
        limit = asyncio.Semaphore(run_config.max_concurrency or len(prepared) or 1)

        async def one(item: tuple[dict[str, Any], dict[str, Any] | None] | BaseException) -> Any:
            if isinstance(item, BaseException):
                raise item
            async with limit:
                return await self._invoke(item[0], run_config, item[1])

        return await asyncio.gather(*(one(item) for item in prepared), return_exceptions=return_exceptions)

    def _load_memory(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """The memory's variables for `state`, read when the call is made (see `_invoke`)."""
        if self.memory is None:
            return None
        return dict(self.memory.load_memory_variables(state))

    async def _invoke(
        self, state: dict[str, Any], config: RunConfig, memory_vars: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Run with memory variables read at call time: a concurrent call that finishes first
        cannot slip its turn into this one's history (the flow run starts later)."""
        token = _loaded_memory.set((self, memory_vars))
        try:
            async with entered(self.name, self.durable, top_level=not in_flow_run()):
                return await run_body(self._flow, self._run, state, config, subflow=self.subflow)
        finally:
            _loaded_memory.reset(token)

    async def astream(
        self, input: Any, config: ConfigLike = None, *, tokens: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield `{step_name: output}` as each step finishes, then `{"__end__": result}`.

        With `tokens=True`, the chat models called inside the steps stream: each text delta
        comes as `{"__token__": {"node": step_name, "text": delta}}` as the model emits it
        (the innermost step names it), and a step's retry as
        `{"__retry__": {"node": step_name, "attempt": n}}` before its fresh stream (see
        docs/streaming.md).

        Examples:
            ```python
            from prefect_beluga import Chain
            from prefect_beluga.llms import OfflineChatModel

            chain = Chain([OfflineChatModel()], name="answer")
            async for event in chain.astream({"input": "What is Prefect?"}, tokens=True):
                if "__token__" in event:
                    print(event["__token__"]["text"], end="", flush=True)
            ```
        """
        # aclosing: leaving this generator early closes the run's stream at once (it stops the run).
        async with contextlib.aclosing(stream_events(self, input, config, tokens=tokens)) as updates:
            async for update in updates:
                yield update

    def stream(
        self, input: Any, config: ConfigLike = None, *, tokens: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Sync `astream` (with `tokens=True`, the model's text deltas too)."""
        return super().stream(input, config, tokens=tokens)

    async def _flow_body(self, state: dict[str, Any], config: RunConfig) -> Any:
        """The chain's flow function: `_run`, ending Cancelled when a streaming caller left."""
        return await stopped_body(self._run, state, config)

    async def _run(self, state: dict[str, Any], config: RunConfig) -> dict[str, Any]:
        """The chain's body: runs inside its flow run (or inline in the caller's)."""
        if self.usage_limits is None:
            return await self._run_body(state, config)
        async with budgeted(self.usage_limits, f"chain {self.name!r}", self._flow):
            return await self._run_body(state, config)

    async def _run_body(self, state: dict[str, Any], config: RunConfig) -> dict[str, Any]:
        initial = dict(state)
        if self.memory is not None:
            owner, loaded = _loaded_memory.get((None, None))
            if owner is not self or loaded is None:
                loaded = self.memory.load_memory_variables(state)
            state = merge(state, loaded)
        current: list[int] = [0]
        deadline = None
        try:
            with anyio.fail_after(self.timeout) as deadline:
                result = await self._run_steps(state, config, current)
        except TimeoutError as exc:
            if deadline is None or not deadline.cancel_called:
                return self._handle_failure(exc)  # a step's own timeout, not the chain's
            raise ChainTimeoutError(
                f"chain {self.name!r} exceeded its timeout of {self.timeout}s while running "
                f"{self._where(current[0], len(self.steps), self.step_names[current[0]])}"
            ) from None
        except Exception as exc:
            if stop_requested() is not None:
                raise  # the caller left the stream: the run is cancelled, not failed
            # A recovery is the handler's answer, not a conversation turn: memory is not saved.
            return self._handle_failure(exc)
        if self.memory is not None:
            self.memory.save_context(initial, result)
        return result

    async def _run_steps(
        self, state: dict[str, Any], config: RunConfig, current: list[int]
    ) -> dict[str, Any]:
        sink = StreamSink.current(self)
        previous: dict[str, Any] | None = None
        quoted_config = quote(config)  # Prefect need not walk it on every call
        for index, (name, step_task) in enumerate(zip(self.step_names, self._tasks, strict=True)):
            current[0] = index
            raise_if_stopped()
            try:
                previous = await step_task(call_args(state), quoted_config, previous)
            except Exception as exc:
                add_step_note(exc, f"in {self._where(index, len(self.steps), name)}")
                raise
            state = merge(state, previous)
            if sink is not None:
                sink.put({name: previous})
        return state

    def _handle_failure(self, exc: Exception) -> dict[str, Any]:
        if self.error_handler is None:
            raise exc
        handled = self.error_handler(exc)
        if handled is None or handled is exc:
            raise exc
        if isinstance(handled, BaseException):
            raise handled from exc
        if isinstance(handled, dict):
            return handled
        raise ValidationError(
            f"chain {self.name!r}: error_handler must return an exception, a dict or None, "
            f"got {type(handled).__name__}"
        ) from exc

    def __repr__(self) -> str:
        return f"Chain(name={self.name!r}, steps={list(self.step_names)})"


def distinct_names(names: list[str]) -> tuple[str, ...]:
    """`names`, each repeat of a name numbered from 2 (`name_2`, `name_3`, ...), skipping any
    name another step already has, so every step of a chain has a name of its own.

    Examples:
        ```python
        from prefect_beluga.orchestration.chain import distinct_names

        distinct_names(["lambda", "lambda", "fetch"])  # -> ('lambda', 'lambda_2', 'fetch')
        ```
    """
    taken = set(names)
    seen: set[str] = set()
    result = []
    for name in names:
        if name in seen:
            number = 2
            while f"{name}_{number}" in taken:
                number += 1
            name = f"{name}_{number}"
            taken.add(name)
        seen.add(name)
        result.append(name)
    return tuple(result)


def _check_error_handler(chain: str, handler: Any) -> None:
    """`handler` must be callable with the one exception argument the chain passes."""
    if not callable(handler):
        raise ValidationError(f"chain {chain!r}: error_handler must be callable, got {type(handler).__name__}")
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # a builtin without a signature: called as documented
        return
    try:
        signature.bind(Exception())
    except TypeError:
        name = getattr(handler, "__name__", None) or repr(handler)
        raise ValidationError(
            f"chain {chain!r}: error_handler {name}{signature} must take exactly one argument, the "
            f"exception of the step that failed (e.g. `def handler(exc): return {{'output': 'unavailable'}}`)"
        ) from None
