"""What a run may use and what it has used: the limits, their checks, prices and estimates."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from prefect_beluga.core._checks import check_int, check_number
from prefect_beluga.core.errors import TokenizerUnavailable, ValidationError

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
        from prefect_beluga import Chain, Orchestrator, UsageLimits
        from prefect_beluga.agents import Agent
        from prefect_beluga.llms import OfflineChatModel
        from prefect_beluga.tools import tool

        @tool
        def search(query: str) -> str:
            \"\"\"Search the docs.\"\"\"
            return "Failed task runs are retried."

        def report(state):
            return {"output": "nightly report"}

        llm = OfflineChatModel()
        chain = Chain([report], name="nightly")
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




def priced_as(config: Any) -> tuple[str, str | None]:
    """(model, price table) of a chat model's `llms.Config`: its server preset's table when it
    names one (Groq, Ollama, ...), else its provider's."""
    return config.model_name, config.server or config.provider


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

