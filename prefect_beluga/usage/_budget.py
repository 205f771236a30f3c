"""The budget of a run: admitting requests, settling replies, counting read-back records."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from prefect_beluga.core.errors import UsageLimitExceeded
from prefect_beluga.schema import Usage
from prefect_beluga.usage._limits import RunUsage, UsageLimits, check_prices, estimate_input_tokens, price_of

_lock = threading.Lock()  # guards every budget's counters (held for microseconds, never across I/O)


class Budget:
    """The usage and limits of one run. Made by `scope`; read with `usage()`.

    Args:
        limits: The run's limits (may be all None: then it only counts).
        name: The run, for messages ("chain 'rag'").
        step_name: Returns the step running (e.g. the Prefect task run's name), for messages.
    """

    def __init__(
        self,
        limits: UsageLimits,
        *,
        name: str,
        step_name: Callable[[], str | None] | None = None,
        parent: Budget | None = None,
    ) -> None:
        self.limits = limits
        self.name = name
        self.parent = parent
        self._step_name = step_name or (parent._step_name if parent is not None else None)
        self._requests = self._input = self._output = self._total = 0
        self._cost: float | None = 0.0
        self._reserved_input = 0
        self._reserved_cost = 0.0
        self.in_flight = 0
        self.replayed = 0  # finished calls read back from a resumed run's records

    def usage(self) -> RunUsage:
        """The usage so far (requests in flight counted as requests, their tokens not yet)."""
        with _lock:
            return self._snapshot()

    def _snapshot(self) -> RunUsage:
        return RunUsage(self._requests, self._input, self._output, self._total, self._cost)

    def step(self) -> str | None:
        if self._step_name is None:
            return None
        try:
            return self._step_name()
        except Exception:  # pragma: no cover - a namer must never break a request
            return None

    def check_model(self, model: str, provider: str | None) -> None:
        """With a `cost_usd` limit: raise unless `model` has a known price."""
        check_prices(self.limits, [(model, provider)], self.name)

    # -- called under _lock --------------------------------------------------------------------

    def _refusal(self, estimate: int, cost: float) -> tuple[str, float] | None:
        limits = self.limits
        if limits.requests is not None and self._requests + 1 > limits.requests:
            return "requests", limits.requests
        if limits.input_tokens is not None and self._input + self._reserved_input + estimate > limits.input_tokens:
            return "input_tokens", limits.input_tokens
        if limits.output_tokens is not None and self._output >= limits.output_tokens:
            return "output_tokens", limits.output_tokens
        if limits.total_tokens is not None and self._total + self._reserved_input + estimate > limits.total_tokens:
            return "total_tokens", limits.total_tokens
        if limits.cost_usd is not None and (self._cost or 0.0) + self._reserved_cost + cost > limits.cost_usd:
            return "cost_usd", limits.cost_usd
        return None

    def _passed(self) -> tuple[str, float] | None:
        limits = self.limits
        for name, used in (("input_tokens", self._input), ("output_tokens", self._output),
                           ("total_tokens", self._total), ("cost_usd", self._cost)):
            limit = getattr(limits, name)
            if limit is not None and used is not None and used > limit:
                return name, limit
        return None

    def _error(self, limit: tuple[str, float], step: str | None, sent: bool, extra: str = "") -> UsageLimitExceeded:
        name, value = limit
        usage = self._snapshot()
        where = f" at step {step!r}" if step else ""
        what = ("the reply put the run over it" if sent else "the request was not sent")
        return UsageLimitExceeded(
            f"{self.name} exceeded its usage limit {name}={value}{where}: {what}{extra}; usage so far: {usage}",
            limit=name, value=value, usage=usage, step=step, run=self.name,
        )

    def _budgets(self) -> Iterator[Budget]:
        budget: Budget | None = self
        while budget is not None:
            yield budget
            budget = budget.parent


class Tally:
    """The usage of one durable step, its sub-steps included (`tallied`), so that the step's
    record can carry it: a resumed run counts a finished step's model calls from it. Its
    counters have a budget's names, so `_add` counts into both alike."""

    __slots__ = ("_requests", "_input", "_output", "_total", "_cost")

    def __init__(self) -> None:
        self._requests = self._input = self._output = self._total = 0
        self._cost: float | None = 0.0

    def usage(self) -> RunUsage:
        with _lock:
            return RunUsage(self._requests, self._input, self._output, self._total, self._cost)


def _add(counters: Iterable[Budget | Tally], used: RunUsage, *, requests: bool) -> None:
    """Add `used` to budgets and tallies (under `_lock`); `requests`: its requests too."""
    for each in counters:
        if requests:
            each._requests += used.requests
        each._input += used.input_tokens
        each._output += used.output_tokens
        each._total += used.total_tokens
        each._cost = None if used.cost_usd is None or each._cost is None else each._cost + used.cost_usd


def _priced(usage: Usage, price: tuple[float, float] | None) -> RunUsage:
    cost = None if price is None else (
        usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1_000_000
    total = usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
    return RunUsage(1, usage.prompt_tokens, usage.completion_tokens, total, cost)


class Ticket:
    """One request admitted by the budgets: `settle(result)` after the reply, else `failed()`."""

    __slots__ = ("budgets", "tallies", "estimate", "cost", "price", "step", "done")

    def __init__(self, budgets: list[Budget], estimate: int, cost: float,
                 price: tuple[float, float] | None, step: str | None, tallies: tuple[Tally, ...] = ()) -> None:
        self.budgets, self.estimate, self.cost, self.price, self.step = budgets, estimate, cost, price, step
        self.tallies = tallies
        self.done = False

    def _release(self) -> None:
        for budget in self.budgets:
            budget._reserved_input -= self.estimate
            budget._reserved_cost -= self.cost
            budget.in_flight -= 1

    def failed(self) -> None:
        """The request failed: it stays counted, its reserved tokens are given back."""
        with _lock:
            if not self.done:
                self.done = True
                self._release()

    def settle(self, usage: Usage) -> None:
        """Count the reply's `usage`; raise `UsageLimitExceeded` if that passes a limit."""
        used = _priced(usage, self.price)
        error = None
        with _lock:
            if self.done:
                return
            self.done = True
            self._release()
            _add((*self.budgets, *self.tallies), used, requests=False)
            for budget in self.budgets:
                passed = budget._passed()
                if passed is not None and error is None:
                    error = budget._error(passed, self.step, sent=True)
        if error is not None:
            raise error


_current: ContextVar[Budget | None] = ContextVar("prefect_beluga_budget", default=None)
_tallies: ContextVar[tuple[Tally, ...]] = ContextVar("prefect_beluga_tallies", default=())


def current_budget() -> Budget | None:
    """The innermost budget of the code running here (None outside any)."""
    return _current.get()


def current_usage() -> RunUsage | None:
    """What the innermost run with a budget has used so far (None outside any), e.g. in a step.

    Examples:
        ```python
        def summarise(state):
            used = usage.current_usage()
            return {"short": used is not None and used.total_tokens > 10_000}
        ```
    """
    budget = _current.get()
    return None if budget is None else budget.usage()


@contextlib.contextmanager
def scope(
    limits: UsageLimits | None = None,
    *,
    name: str = "run",
    step_name: Callable[[], str | None] | None = None,
    models: Sequence[tuple[str, str | None]] = (),
) -> Iterator[Budget]:
    """Open a budget for the code run in this block (and the tasks and threads it starts).

    With `limits` None it only counts: `with usage.scope() as budget: chain.invoke(...)`, then
    `budget.usage()`. `models` ((model, provider) pairs) are checked for prices up front when
    `cost_usd` is set.
    """
    budget = Budget(limits or UsageLimits(), name=name, step_name=step_name, parent=_current.get())
    for model, provider in models:
        budget.check_model(model, provider)
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)


@contextlib.contextmanager
def tallied() -> Iterator[Tally]:
    """Tally the usage of the code run in this block (and of the tasks it starts)."""
    tally = Tally()
    token = _tallies.set((*_tallies.get(), tally))
    try:
        yield tally
    finally:
        _tallies.reset(token)


def usage_in(result: Any) -> RunUsage | None:
    """The model usage a finished step's `result` holds, as one request: a chat model's
    `{"output", "usage", "model"}` or an agent turn's `ChatResult`; else None."""
    if isinstance(result, dict) and isinstance(result.get("usage"), dict) and "model" in result:
        try:
            used = Usage(**result["usage"])
        except Exception:
            return None
        model = str(result["model"])
    elif isinstance(getattr(result, "usage", None), Usage) and hasattr(result, "message"):
        used, model = result.usage, str(getattr(result, "model", "") or "")
    else:
        return None
    return _priced(used, price_of(model))


def count_replayed(used: RunUsage | None) -> None:
    """Count `used`, what a finished step read back from its record had used, against the open
    budgets (and the tallies of the steps around it): a resumed run's budget includes it."""
    budget = _current.get()
    if budget is None or used is None or not used.requests:
        return
    with _lock:
        budgets = list(budget._budgets())
        _add((*budgets, *_tallies.get()), used, requests=True)
        for each in budgets:
            each.replayed += used.requests


def before_request(
    model: str,
    provider: str | None,
    messages: Sequence[Any],
    tools: Sequence[Any] | None = None,
    *,
    default_step: str | None = None,
) -> Ticket | None:
    """Admit one request of `model` against every open budget, or raise `UsageLimitExceeded`
    (then it must not be sent). None when no budget is open (the fast path: one lookup)."""
    budget = _current.get()
    if budget is None:
        return None
    budgets = list(budget._budgets())
    price = price_of(model, provider)
    for each in budgets:
        each.check_model(model, provider)
    needs_estimate = any(
        b.limits.input_tokens is not None or b.limits.total_tokens is not None or b.limits.cost_usd is not None
        for b in budgets
    )
    estimate = estimate_input_tokens(model, messages, tools) if needs_estimate else 0
    cost = 0.0 if price is None else estimate * price[0] / 1_000_000
    step = budget.step() or default_step
    with _lock:
        for each in budgets:
            refused = each._refusal(estimate, cost)
            if refused is not None:
                raise each._error(refused, step, sent=False, extra=f" (it would need ~{estimate} input tokens)"
                                  if refused[0] in ("input_tokens", "total_tokens", "cost_usd") else "")
        for each in budgets:
            each._requests += 1
            each._reserved_input += estimate
            each._reserved_cost += cost
            each.in_flight += 1
        tallies = _tallies.get()
        for tally in tallies:
            tally._requests += 1
    return Ticket(budgets, estimate, cost, price, step, tallies)


