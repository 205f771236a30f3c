"""Usage limits: one budget of requests, tokens and dollars per run, shared by all of it.

```python
from prefect_beluga import Chain, UsageLimits, UsageLimitExceeded
from prefect_beluga.llms import OfflineChatModel

draft, review = OfflineChatModel(), OfflineChatModel()   # one model request each
# cost_usd=0.50 too, with models that have a price (llms.pricing)
chain = Chain([draft, review], usage_limits=UsageLimits(requests=1, total_tokens=50_000))
try:
    chain.invoke({"input": "Draft a reply about Prefect retries."})
except UsageLimitExceeded as exc:
    exc.limit, exc.usage.total_tokens, exc.step    # which limit, the usage so far, where
    # -> ('requests', 48, 'offline:offline-extractive_2')
```

A `Budget` is opened when a run of a Chain, Graph, Agent or Workflow with `usage_limits`
starts, and put in a context variable; everything the run does in this process sees it: its
steps, parallel graph nodes, Map items, agent turns and their retries (Prefect runs a task in
a copy of its caller's context, and a sync step's worker thread gets one too, so they all hold
the same `Budget` object; its counters are guarded by one lock). A run nested inside another
one that has limits of its own is held to both.

Every chat-model request asks the budgets first (`_budget.before_request`): the request is counted
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

from prefect_beluga.core.errors import UsageLimitExceeded
from prefect_beluga.usage._budget import Budget, current_usage, scope
from prefect_beluga.usage._limits import LIMITS, RunUsage, UsageLimits

__all__ = ["LIMITS", "Budget", "RunUsage", "UsageLimitExceeded", "UsageLimits", "current_usage", "scope"]
