"""Run a coroutine to completion from synchronous code: the package's own sync bridge.

`core` imports nothing of the package and not Prefect, so the sync API of the AI parts
(`invoke`, `embed`, `search`, ...) does not run on Prefect's loop. It behaves as Prefect's
`run_coro_as_sync` does, which the rest of the package relied on before:

- Coroutines run on one long-lived event loop in a daemon thread, started on first use. Async
  clients (openai, httpx) cached by a coroutine stay bound to that loop and usable by the next
  sync call.
- It works from plain code, from inside a running event loop (a notebook, async code) and from
  inside Prefect flows and tasks: the caller's context variables (Prefect's run context among
  them) are copied into the coroutine.
- A sync call made from a coroutine that already runs on that loop (or a descendant of one)
  cannot wait on the loop it blocks, so it runs on a fresh loop in a new thread instead.

`iterate_sync` does the same for an async iterator (`Runnable.stream`, `workflow.stream`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_IN_BRIDGE: contextvars.ContextVar[bool] = contextvars.ContextVar("prefect_beluga_in_sync_bridge", default=False)

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _bridge_loop() -> asyncio.AbstractEventLoop:
    """The long-lived loop of the bridge, started in a daemon thread on first use."""
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=run, name="prefect-beluga-sync-bridge", daemon=True)
            thread.start()
            ready.wait()
            _loop, _thread = loop, thread
        return _loop


async def _flagged(coroutine: Coroutine[Any, Any, T]) -> T:
    _IN_BRIDGE.set(True)  # this task's own context (a copy of the caller's)
    return await coroutine


def _in_new_thread(coroutine: Coroutine[Any, Any, T], context: contextvars.Context) -> T:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefect-beluga-sync") as pool:
        return pool.submit(context.run, asyncio.run, _flagged(coroutine)).result()


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` and return its result, from sync code or from inside a running loop."""
    context = contextvars.copy_context()
    loop = _bridge_loop()
    if _IN_BRIDGE.get() or threading.current_thread() is _thread:
        return _in_new_thread(coroutine, context)
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def start() -> None:
        task = loop.create_task(_flagged(coroutine), context=context)

        def done(finished: asyncio.Task[T]) -> None:
            if future.done():
                return
            if finished.cancelled():
                future.cancel()
            elif (error := finished.exception()) is not None:
                future.set_exception(error)
            else:
                future.set_result(finished.result())

        task.add_done_callback(done)
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(task.cancel) if f.cancelled() else None)

    loop.call_soon_threadsafe(start)
    try:
        return future.result()
    except KeyboardInterrupt:
        future.cancel()
        raise


def iterate_sync(make: Callable[[], AsyncIterator[T]], *, name: str = "stream") -> Iterator[T]:
    """Iterate the async iterator `make()` from sync code, item by item.

    The iterator runs to its end as one coroutine on one event loop (see `run_sync`), in a
    helper thread with the caller's context; items come back through a queue. (Driving it item
    by item with `run_sync` breaks where each call gets a fresh loop, e.g. in a sync step of a
    chain.) Closing this iterator early (`break`, `close()`, garbage collection) cancels the
    coroutine and returns once it ended.
    """
    items: queue.Queue[tuple[bool, Any]] = queue.Queue()
    stop = threading.Event()
    running: dict[str, Any] = {}

    async def pump() -> None:
        running["loop"], running["task"] = asyncio.get_running_loop(), asyncio.current_task()
        if stop.is_set():
            return
        iterator = make()
        try:
            async for item in iterator:
                items.put((True, item))
            items.put((False, None))
        except BaseException as exc:  # handed to the caller, cancellation included
            items.put((False, exc))
        finally:
            await iterator.aclose()  # type: ignore[attr-defined]

    context = contextvars.copy_context()  # the caller's flow run, tags, ...
    helper = threading.Thread(target=context.run, args=(run_sync, pump()), name=name, daemon=True)
    helper.start()
    try:
        while True:
            more, item = items.get()
            if more:
                yield item
            elif item is None:
                return
            else:
                raise item
    finally:
        stop.set()
        task = running.get("task")
        if task is not None and not task.done():
            running["loop"].call_soon_threadsafe(task.cancel)
        helper.join()


__all__ = ["iterate_sync", "run_sync"]
