"""The Runnable protocol and the coercion of plain callables into Runnables."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from prefect_beluga.core._sync import iterate_sync, run_sync
from prefect_beluga.core.config import ConfigLike, ensure_config
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.event_stream import stream_events


class Runnable:
    """A unit of work that maps an input dict to an output dict.

    Subclasses implement `invoke` (sync) or `ainvoke` (async), whichever is natural; the
    other one, `batch`/`abatch` and `stream`/`astream` come for free. A sync `invoke` is run
    in a worker thread when called from async code, so it never blocks the event loop.

    Examples:
        ```python
        from prefect_beluga import Runnable


        class SimpleStep(Runnable):
            def __init__(self, name):
                self.name = name

            def invoke(self, input, config=None):
                return {"output": f"Result from {self.name}"}


        SimpleStep("step1").invoke({"input": "test"})  # -> {'output': 'Result from step1'}
        ```
    """

    name: str

    def __getattr__(self, attribute: str) -> Any:
        # `name` defaults to the class name when a subclass does not set one.
        if attribute == "name":
            return type(self).__name__
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attribute!r}")

    def invoke(self, input: Any, config: ConfigLike = None) -> Any:
        """Run on one input and return the output."""
        if type(self).ainvoke is Runnable.ainvoke:
            raise NotImplementedError(f"{type(self).__name__} must implement invoke or ainvoke")
        return run_sync(self.ainvoke(input, config))

    async def ainvoke(self, input: Any, config: ConfigLike = None) -> Any:
        """Async `invoke`."""
        if type(self).invoke is Runnable.invoke:
            raise NotImplementedError(f"{type(self).__name__} must implement invoke or ainvoke")
        return await asyncio.to_thread(self.invoke, input, config)

    def batch(
        self, inputs: Sequence[Any], config: ConfigLike = None, *, return_exceptions: bool = False
    ) -> list[Any]:
        """Run on many inputs concurrently (at most `config.max_concurrency` at a time)."""
        return run_sync(self.abatch(inputs, config, return_exceptions=return_exceptions))

    async def abatch(
        self, inputs: Sequence[Any], config: ConfigLike = None, *, return_exceptions: bool = False
    ) -> list[Any]:
        """Async `batch`; results come back in input order."""
        run_config = ensure_config(config)
        limit = asyncio.Semaphore(run_config.max_concurrency or len(inputs) or 1)

        async def one(item: Any) -> Any:
            async with limit:
                return await self.ainvoke(item, run_config)

        return await asyncio.gather(
            *(one(item) for item in inputs), return_exceptions=return_exceptions
        )

    def stream(self, input: Any, config: ConfigLike = None, **options: Any) -> Iterator[Any]:
        """Yield output chunks as they are produced (by default: the one final output).

        `options` (e.g. `tokens=True`: see `astream`) are passed on to `astream`.

        `astream` runs to the end as one coroutine in a helper thread (`core._sync.iterate_sync`);
        chunks come back through a queue. Closing the iterator early (`break`, `close()`, garbage
        collection) stops the run and returns once it ended: a chain's or graph's run then ends
        Cancelled (docs/streaming.md, "Leaving a stream early").
        """
        return iterate_sync(lambda: self.astream(input, config, **options), name=f"stream-{self.name}")

    async def astream(self, input: Any, config: ConfigLike = None, *, tokens: bool = False) -> AsyncIterator[Any]:
        """Async `stream`: by default, the one final output.

        With `tokens=True`, the events this Runnable streams as the one step of a chain
        (docs/streaming.md): `{"__token__": {"node": name, "text": delta}}` for each text delta
        of a chat model inside it (an agent's `__tool_call__` / `__tool_result__` and
        `__retry__` too), tagged with its `name` (or that of a step inside it), then
        `{name: output}`, then `{"__end__": output}`. Leaving early stops the run.

        Examples:
            ```python
            from prefect_beluga.agents import Agent
            from prefect_beluga.llms import OfflineChatModel
            from prefect_beluga.tools import tool


            @tool(description="Search the Prefect docs.")
            def search_docs(query: str) -> str:
                return "Prefect retries a failed task up to its `retries` times."


            agent = Agent(OfflineChatModel(), tools=[search_docs])
            async for event in agent.astream({"input": "How does Prefect retry tasks?"}, tokens=True):
                if "__token__" in event:
                    print(event["__token__"]["text"], end="", flush=True)
            ```
        """
        if not tokens:
            yield await self.ainvoke(input, config)
            return
        events = stream_events(self, input, config, tokens=True, output_event=True)
        async with contextlib.aclosing(events):  # leaving early closes the run's stream at once
            async for event in events:
                yield event


class RunnableCallable(Runnable):
    """A sync or async function taking the input dict, as a Runnable named after it.

    The function may also accept a second argument, the `RunConfig` of the call.
    """

    def __init__(self, func: Callable[..., Any], name: str | None = None) -> None:
        if not callable(func):
            raise ValidationError(f"expected a callable, got {type(func).__name__}")
        self.func = func
        self.name = name or _callable_name(func)
        #: True for a lambda given no name: its name "lambda" says nothing of what it does.
        self.anonymous = name is None and self.name == "lambda"
        self._is_async = _is_async_callable(func)
        self._takes_config = _accepts_second_argument(func)

    def _arguments(self, input: Any, config: ConfigLike) -> tuple[Any, ...]:
        return (input, ensure_config(config)) if self._takes_config else (input,)

    def invoke(self, input: Any, config: ConfigLike = None) -> Any:
        if self._is_async:
            return run_sync(self.func(*self._arguments(input, config)))
        return self.func(*self._arguments(input, config))

    async def ainvoke(self, input: Any, config: ConfigLike = None) -> Any:
        if self._is_async:
            return await self.func(*self._arguments(input, config))
        return await asyncio.to_thread(self.func, *self._arguments(input, config))

    def __repr__(self) -> str:
        return f"RunnableCallable({self.name!r})"


def coerce_to_runnable(obj: Any, *, where: str) -> Runnable:
    """Return `obj` as a Runnable: Runnables as they are, callables wrapped.

    Raises:
        ValidationError: `obj` is neither (the message names `where`, e.g. "step 2 of chain 'x'").
    """
    if isinstance(obj, Runnable):
        return obj
    if callable(obj) and not isinstance(obj, type):
        return RunnableCallable(obj)
    raise ValidationError(
        f"{where} must be a Runnable or a callable taking a dict, got {type(obj).__name__}: {obj!r:.80}"
    )


def _callable_name(func: Callable[..., Any]) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__name__", None) or type(func).__name__
    return "lambda" if name == "<lambda>" else name


def _is_async_callable(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - the method itself (an async __call__), not a callable check
    )


def _accepts_second_argument(func: Callable[..., Any]) -> bool:
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


__all__ = ["Runnable", "RunnableCallable", "coerce_to_runnable"]
