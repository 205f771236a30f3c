"""Provider rate limits that hold across every flow run, worker and machine on one Prefect API.

A rate limit is a Prefect global concurrency limit with slot decay: `ensure_rate_limit("openai",
per_second=5)` creates it (or updates it); a chat model or embedder given `rate_limit="openai"`
then takes one slot through Prefect's `rate_limit` before every HTTP request, retries included.
The Prefect server hands out the slots, so ten flow runs on three workers share one budget.

Examples:
    ```python
    from prefect_beluga import llms
    from prefect_beluga.limits import ensure_rate_limit

    ensure_rate_limit("openai", per_second=5)            # once, e.g. at deployment time
    llm = llms.OpenAIChatModel(llms.Config(model_name="gpt-4o-mini", api_key="sk-...", rate_limit="openai"))
    ```

In any one-second window at most about `per_second + burst` requests start: `burst` slots
(default: `per_second` rounded up) may be taken at once, and slots come back at `per_second`.

The public names of `orchestration/_limits.py`, where the Prefect code lives.
"""

from prefect_beluga.orchestration._limits import PrefectLimiter, aensure_rate_limit, ensure_rate_limit

__all__ = ["PrefectLimiter", "aensure_rate_limit", "ensure_rate_limit"]
