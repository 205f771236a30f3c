"""Usage limits: one budget of requests, tokens and dollars per run, shared by all of it.

```python
from prefect_beluga import Chain, UsageLimits, UsageLimitExceeded

chain = Chain([draft, review], usage_limits=UsageLimits(requests=20, total_tokens=50_000, cost_usd=0.50))
try:
    chain.invoke({"input": "..."})
except UsageLimitExceeded as exc:
    exc.limit, exc.usage.total_tokens, exc.step    # which limit, the usage so far, where
```

A `Budget` is opened when a run of a Chain, Graph, Agent or Workflow with `usage_limits`
starts, and put in a context variable; everything the run does in this process sees it: its
steps, parallel graph nodes, Map items, agent turns and their retries (Prefect runs a task in
a copy of its caller's context, and a sync step's worker thread gets one too, so they all hold
the same `Budget` object; its counters are guarded by one lock). A run nested inside another
one that has limits of its own is held to both.

Every chat-model request asks the budgets first (`before_request`): the request is counted
and its input tokens (estimated with tiktoken, tools included) and input cost are reserved; if
that would pass a limit, `UsageLimitExceeded` is raised and the request is not sent. The reply
replaces the reservation with the reported usage (`Ticket.settle`); a reply that puts the run
over a limit raises `UsageLimitExceeded` too. A failed request stays counted as a request (it
was sent: retries count), its reserved tokens are given back.

Overshoot: `requests` is never exceeded (a request is counted before it is sent). Input tokens
and input cost are reserved before sending, so they overshoot only by the gap between the
tiktoken estimate and the server's own count. Output tokens are only known from the reply: a
request is refused once `output_tokens` (or `total_tokens`) is used up, so the overshoot is at
most the output of the requests already in flight when the limit was reached (with
`max_tokens` set on the model: `in flight x max_tokens`).

`cost_usd` needs prices: a model without a known price (`llms.pricing`) is a `ValidationError`
when the limit is set up (for the models a Chain, Graph or Agent names), and before the first
request of any other model, never a silent pass.

Nothing here imports Prefect; `prefect_beluga.orchestration` opens the budgets of chains,
graphs and workflows (and shows their usage on the run's artifact).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any

from prefect_beluga.core._checks import check_int, check_number
from prefect_beluga.core.errors import TokenizerUnavailable, UsageLimitExceeded, ValidationError
from prefect_beluga.schema import Usage

LIMITS = ("requests", "input_tokens", "output_tokens", "total_tokens", "cost_usd")


@dataclass(frozen=True)
class UsageLimits:
    """Hard limits on what one run may use; None: no limit on that.

    Args:
        requests: Model requests (each attempt of a retried request counts).
        input_tokens: Prompt tokens, as the replies report them (estimated before sending).
        output_tokens: Completion tokens.
        total_tokens: Prompt plus completion tokens.
        cost_usd: Estimated cost in USD, from `llms.pricing`'s list prices; every model the run
            calls must have a known price.

    Examples:
        ```python
        Agent(llm, tools=[search], usage_limits=UsageLimits(requests=8, total_tokens=20_000))
        Orchestrator().create_workflow(chain, workflow_id="nightly", usage_limits=UsageLimits(cost_usd=2.0))
        ```
    """

    requests: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: float | None = None

    def __post_init__(self) -> None:
        for name in LIMITS[:4]:
            value = getattr(self, name)
            check_int(value, f"UsageLimits: {name}", none=True)
        check_number(self.cost_usd, "UsageLimits: cost_usd", strict=False, none=True, why=" (USD)")

    def is_set(self) -> bool:
        """Whether any limit is set."""
        return any(getattr(self, name) is not None for name in LIMITS)


def check_limits(value: Any, where: str) -> UsageLimits | None:
    """`value` (a `UsageLimits`, a dict of its fields, or None) as `UsageLimits`, checked."""
    if value is None or isinstance(value, UsageLimits):
        return value
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(LIMITS))
        if unknown:
            raise ValidationError(f"{where}: unknown usage limit(s) {unknown}; expected some of {list(LIMITS)}")
        try:
            return UsageLimits(**value)
        except ValidationError as exc:
            raise ValidationError(f"{where}: {exc}") from None
    raise ValidationError(
        f"{where}: usage_limits must be a prefect_beluga.UsageLimits (or a dict of its fields), "
        f"got {type(value).__name__}"
    )


@dataclass(frozen=True)
class RunUsage:
    """What a run has used so far. `cost_usd` is None when a reply could not be priced (only
    possible without a `cost_usd` limit)."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float | None = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        cost = "cost unknown" if self.cost_usd is None else f"${self.cost_usd:.6f}"
        return (f"{self.requests} request(s), {self.input_tokens} input + {self.output_tokens} output = "
                f"{self.total_tokens} tokens, {cost}")


def price_of(model: str, provider: str | None = None) -> tuple[float, float] | None:
    """`llms.pricing.price_of`, imported when a budget first needs it: this module sits below
    the AI parts (chat models import it), so it imports none of them at load time."""
    from prefect_beluga.llms.pricing import price_of as lookup

    return lookup(model, provider)


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


class Ticket:
    """One request admitted by the budgets: `settle(result)` after the reply, else `failed()`."""

    __slots__ = ("budgets", "estimate", "cost", "price", "step", "done")

    def __init__(self, budgets: list[Budget], estimate: int, cost: float,
                 price: tuple[float, float] | None, step: str | None) -> None:
        self.budgets, self.estimate, self.cost, self.price, self.step = budgets, estimate, cost, price, step
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
        cost = None if self.price is None else (
            usage.prompt_tokens * self.price[0] + usage.completion_tokens * self.price[1]) / 1_000_000
        error = None
        with _lock:
            if self.done:
                return
            self.done = True
            self._release()
            for budget in self.budgets:
                budget._input += usage.prompt_tokens
                budget._output += usage.completion_tokens
                budget._total += usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
                budget._cost = None if cost is None or budget._cost is None else budget._cost + cost
                passed = budget._passed()
                if passed is not None and error is None:
                    error = budget._error(passed, self.step, sent=True)
        if error is not None:
            raise error


_current: ContextVar[Budget | None] = ContextVar("prefect_beluga_budget", default=None)


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


def priced_as(config: Any) -> tuple[str, str | None]:
    """(model, price table) of a chat model's `llms.Config`: its server preset's table when it
    names one (Groq, Ollama, ...), else its provider's."""
    return config.model_name, config.server or config.provider


def count_replayed(result: Any) -> None:
    """Count the model usage a finished step's persisted `result` holds (a chat model's
    `{"output", "usage", "model"}` or an agent turn's `ChatResult`) against the open budgets,
    as one request: a resumed run's budget includes what its finished steps used."""
    budget = _current.get()
    if budget is None:
        return
    if isinstance(result, dict) and isinstance(result.get("usage"), dict) and "model" in result:
        try:
            used = Usage(**result["usage"])
        except Exception:
            return
        model = str(result["model"])
    elif isinstance(getattr(result, "usage", None), Usage) and hasattr(result, "message"):
        used, model = result.usage, str(getattr(result, "model", "") or "")
    else:
        return
    price = price_of(model)
    cost = None if price is None else (used.prompt_tokens * price[0] + used.completion_tokens * price[1]) / 1e6
    with _lock:
        for each in budget._budgets():
            each._requests += 1
            each._input += used.prompt_tokens
            each._output += used.completion_tokens
            each._total += used.total_tokens or used.prompt_tokens + used.completion_tokens
            each._cost = None if cost is None or each._cost is None else each._cost + cost
            each.replayed += 1


def check_prices(limits: UsageLimits | None, models: Sequence[tuple[str, str | None]], where: str) -> None:
    """With a `cost_usd` limit: raise a `ValidationError` for the first of `models`
    ((model, provider) pairs) that has no known price."""
    if limits is None or limits.cost_usd is None:
        return
    for model, provider in models:
        if price_of(model, provider) is None:
            raise ValidationError(
                f"{where}: UsageLimits(cost_usd={limits.cost_usd}) is set, but model {model!r}"
                f"{f' (provider {provider!r})' if provider else ''} has no known price, so its cost could not "
                "be counted; set a token limit instead (total_tokens=...), or add its price to "
                "prefect_beluga.llms.pricing.PRICES_BY_PROVIDER"
            )


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
    return Ticket(budgets, estimate, cost, price, step)


def estimate_input_tokens(model: str, messages: Sequence[Any], tools: Sequence[Any] | None = None) -> int:
    """The prompt tokens of a request, counted with tiktoken (tool definitions included)."""
    from prefect_beluga.tokens import count_message_tokens, count_tokens

    try:
        total = count_message_tokens(list(messages), model)
        if tools:
            total += count_tokens(json.dumps(list(tools), default=str), model)
    except TokenizerUnavailable:  # no BPE file: about four characters a token
        text = "".join(str(getattr(m, "content", m)) for m in messages) + json.dumps(list(tools or []), default=str)
        total = len(text) // 4 + 3 * len(messages) + 3
    return total


__all__ = [
    "Budget",
    "RunUsage",
    "Ticket",
    "UsageLimitExceeded",
    "UsageLimits",
    "before_request",
    "check_limits",
    "check_prices",
    "count_replayed",
    "priced_as",
    "current_budget",
    "current_usage",
    "estimate_input_tokens",
    "scope",
]
