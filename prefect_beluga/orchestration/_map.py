"""Map: run one Runnable per item of a list in the state, each item its own Prefect task run.

A chain step or graph node that is a `Map` does not become one task: it makes its own step
(`Map.step_task`: the `_tasks.MakesOwnTask` protocol), a `MapTask`, which reads the list at
`state[over]` when the step runs and starts one task run per item, named after the step and the
item's index (`summarize[3]`), with the step's retry policy (a failing item is retried alone).
Items are awaited on the flow's event loop, or submitted to the graph's task runner (Dask) when it
has one. Inside a workflow run each item is durable on its own (see `_tasks.py`): a retried
workflow run re-runs only the missing items.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Any

from prefect.utilities.annotations import quote

from prefect_beluga.core._checks import check_int
from prefect_beluga.core.config import ConfigLike, RunConfig, ensure_config
from prefect_beluga.core.errors import ValidationError, add_step_note
from prefect_beluga.core.runnable import Runnable, coerce_to_runnable
from prefect_beluga.core.state import check_output, coerce_input
from prefect_beluga.orchestration._cache import CacheSettings, unquoted
from prefect_beluga.orchestration._stream import raise_if_cancelled, stop_requested
from prefect_beluga.orchestration._tasks import RetryPolicy, StepTask, caching_options, invoke_item


class Map(Runnable):
    """Run `runnable` once per item of the list at `state[over]`; gather the outputs in order.

    Each item runs with the input `{**state, item_key: item, "index": i}`. The outputs (dicts)
    are gathered in item order into `{into: [output of item 0, ...]}`. As a chain step or a
    graph node, every item is its own Prefect task run named `<step>[<index>]` with the step's
    or node's retry policy; called directly (outside a chain or graph), items simply run
    concurrently.

    Args:
        runnable: The Runnable (or function) run per item.
        over: The state key holding the list of items.
        item_key: The input key each item is passed under (default "item").
        into: The output key of the gathered list (default: the step's or node's name). A Map
            of a lambda needs `into` or `name`: "lambda" names no result.
        max_concurrency: At most this many items in flight (default: no bound).
        name: The step's name in a chain (default: the runnable's name).

    Examples:
        ```python
        from prefect_beluga import Chain, Map

        def retrieve(state):
            return {"docs": ["Prefect runs flows.", "Each item: one task."]}

        def summarize(state):
            return {"summary": state["item"][:20]}

        def combine(state):
            return {"output": " | ".join(s["summary"] for s in state["summaries"])}

        chain = Chain([retrieve, Map(summarize, over="docs", into="summaries",
                                     max_concurrency=8), combine])
        chain.invoke({"input": "docs"})["output"]  # -> 'Prefect runs flows. | Each item: one task.'
        ```
    """

    def __init__(
        self,
        runnable: Runnable | Callable[..., Any],
        *,
        over: str,
        item_key: str = "item",
        into: str | None = None,
        max_concurrency: int | None = None,
        name: str | None = None,
    ) -> None:
        for label, value in (("over", over), ("item_key", item_key)):
            if not isinstance(value, str) or not value:
                raise ValidationError(f"Map: {label} must be a non-empty state key, got {value!r}")
        if into is not None and (not isinstance(into, str) or not into):
            raise ValidationError(f"Map: into must be a non-empty state key or None, got {into!r}")
        check_int(max_concurrency, "Map: max_concurrency", low=1, none=True)
        self.runnable = coerce_to_runnable(runnable, where=f"Map over {over!r}")
        if into is None and name is None and getattr(self.runnable, "anonymous", False):
            raise ValidationError(
                f"Map over {over!r}: a lambda has no name for the key its results go under (it would be "
                f"'lambda'); give the Map into='<key>' (or name='<step name>')"
            )
        self.over = over
        self.item_key = item_key
        self.into = into
        self.max_concurrency = max_concurrency
        self.name = name or self.runnable.name

    def items_of(self, state: dict[str, Any], where: str) -> list[Any]:
        """The list at `state[over]`, or a `ValidationError` naming the key and `where`."""
        if self.over not in state:
            raise ValidationError(
                f"{where}: Map needs a list at state key {self.over!r}, but the state has no "
                f"such key (keys: {sorted(state)})"
            )
        items = state[self.over]
        if not isinstance(items, (list, tuple)):
            raise ValidationError(
                f"{where}: Map needs a list at state key {self.over!r}, got {type(items).__name__}"
            )
        return list(items)

    def item_input(self, state: dict[str, Any], item: Any, index: int) -> dict[str, Any]:
        return {**state, self.item_key: item, "index": index}

    async def ainvoke(self, input: Any, config: ConfigLike = None) -> dict[str, Any]:
        where = f"Map {self.name!r}"
        state = coerce_input(input, where=where)
        run_config = ensure_config(config)
        items = self.items_of(state, where)

        async def one(index: int, item: Any) -> dict[str, Any]:
            output = await self.runnable.ainvoke(self.item_input(state, item, index), run_config)
            return check_output(output, where=f"item {index} of {where}")

        outputs = await gather_items(
            [lambda i=i, item=item: one(i, item) for i, item in enumerate(items)],
            self.max_concurrency, where,
        )
        return {self.into or self.name: outputs}

    def step_task(
        self, *, name: str, where: str, policy: RetryPolicy, tags: Sequence[str], cache: CacheSettings | None
    ) -> MapTask:
        """This Map as the step or node `name`: a `MapTask`, whose items are task runs
        `<name>[<index>]` with `policy`, each cached (with `cache`) by its whole input."""
        inner = self.runnable

        async def run_item(state: Any, config: RunConfig, upstream: Any = None, index: int = 0) -> dict[str, Any]:
            output = await invoke_item(inner, name, index, state, config, cache)
            return check_output(output, where=f"item {index} of {where}")

        run_item.__qualname__ = run_item.__name__ = name
        item_task = StepTask(
            run_item,
            name=name,
            task_run_name=f"{name}[{{index}}]",
            **policy.task_options(),
            tags=list(tags),
            **caching_options(inner, name, cache),
            durable_as_is=cache is not None,
        )
        return MapTask(self, item_task, name=name, where=where)

    def __repr__(self) -> str:
        return f"Map({self.runnable.name!r}, over={self.over!r}, into={self.into!r})"


async def gather_items(
    starters: Sequence[Callable[[], Any]], limit: int | None, where: str
) -> list[Any]:
    """Run the coroutines `starters` make, at most `limit` at once; results in order.

    The first item that fails cancels the ones still running and is raised with a note
    naming its index.
    """
    if not starters:
        return []
    gate = asyncio.Semaphore(limit) if limit else None

    async def one(start: Callable[[], Any]) -> Any:
        if gate is None:
            return await start()
        async with gate:
            return await start()

    tasks = [asyncio.ensure_future(one(start)) for start in starters]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        pending = [t for t in tasks if not t.done()]
        if stop_requested() is None:  # a caller that left the stream is stopping them already
            for task in pending:
                task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    # Every item's exception is read (none is left "never retrieved"); the first one is raised.
    failures = [(i, t.exception()) for i, t in enumerate(tasks) if not t.cancelled() and t.exception() is not None]
    if failures:
        index, exc = failures[0]
        add_step_note(exc, f"in item {index} of {where}")
        raise exc
    return [task.result() for task in tasks]


class MapTask:
    """What a `Map` step or node becomes: called (or submitted) like the step's Prefect task,
    it fans out one task run per item (see the module docstring)."""

    def __init__(self, map_: Map, item_task: Any, *, name: str, where: str) -> None:
        self.map = map_
        self.item_task = item_task  # a StepTask named "<name>[{index}]"
        self.name = name
        self.where = where

    def with_options(self, *, task_run_name: str | None = None, **_: Any) -> MapTask:
        """A graph loop's second run of the node (`node[2]`): items become `node[2][i]`."""
        name = task_run_name or self.name
        item_task = self.item_task.with_options(task_run_name=f"{name}[{{index}}]")
        return MapTask(self.map, item_task, name=name, where=self.where)

    def _prepare(self, state: Any) -> tuple[dict[str, Any], list[Any]]:
        state = unquoted(state)
        return state, self.map.items_of(state, self.where)

    def _output(self, outputs: list[Any]) -> dict[str, Any]:
        return {self.map.into or self.name: outputs}

    async def __call__(self, state: Any, config: Any, upstream: Any = None) -> dict[str, Any]:
        """Items awaited on this event loop, each one a task run (durable in a workflow)."""
        state, items = self._prepare(state)
        task = self.item_task

        def starter(index: int, item: Any) -> Callable[[], Any]:
            return lambda: task(quote(self.map.item_input(state, item, index)), config, upstream, index)

        outputs = await gather_items(
            [starter(i, item) for i, item in enumerate(items)], self.map.max_concurrency, self.where
        )
        return self._output(outputs)

    def submit(self, state: dict[str, Any], config: RunConfig, upstream: Any = None) -> MapFuture:
        """Items submitted to the flow's task runner (e.g. Dask); a future of the gathered list."""
        loop = asyncio.get_running_loop()
        result: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()

        async def fan_out() -> dict[str, Any]:
            state_, items = self._prepare(state)

            def starter(index: int, item: Any) -> Callable[[], Any]:
                async def run() -> Any:
                    future = self.item_task.submit(
                        self.map.item_input(state_, item, index), config, upstream, index
                    )
                    done = loop.create_future()
                    future.add_done_callback(
                        lambda _: loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))
                    )
                    try:
                        await done
                    except asyncio.CancelledError:
                        wrapped = getattr(future, "wrapped_future", None)
                        if wrapped is not None and hasattr(wrapped, "cancel"):
                            wrapped.cancel()
                        raise
                    return raise_if_cancelled(future.result())

                return run

            outputs = await gather_items(
                [starter(i, item) for i, item in enumerate(items)],
                self.map.max_concurrency, self.where,
            )
            return self._output(outputs)

        def settle(task: asyncio.Task[dict[str, Any]]) -> None:
            if task.cancelled():
                result.cancel()
            elif task.exception() is not None:
                result.set_exception(task.exception())
            else:
                result.set_result(task.result())

        running = loop.create_task(fan_out())
        running.add_done_callback(settle)
        return MapFuture(result, running)


class MapFuture:
    """The future `MapTask.submit` returns: what the graph executor needs of a Prefect future.

    Passed on as a child node's upstream value, it pickles as its result (the gathered dict).
    """

    def __init__(self, result: concurrent.futures.Future[Any], running: asyncio.Task[Any]) -> None:
        self._result = result
        self.wrapped_future = running  # cancelled when the node is cancelled

    def add_done_callback(self, fn: Callable[[Any], Any]) -> None:
        self._result.add_done_callback(lambda _: fn(self))

    def result(self, timeout: float | None = None) -> Any:
        return self._result.result(timeout)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_identity, (self._result.result(),))


def _identity(value: Any) -> Any:
    return value
