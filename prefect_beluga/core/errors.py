"""The exceptions and warnings of prefect-beluga.

Every exception of ours derives from `BelugaError`:

    BelugaError
    ├── ValidationError (ValueError)       bad input or misuse; never retried
    │   ├── StepOutputError                a step returned something other than a dict
    │   ├── GraphValidationError           a graph failed `compile()` validation
    │   └── ToolArgumentsError             a model's arguments for a tool do not fit its schema
    ├── ChainTimeoutError (TimeoutError)   a chain ran past its `timeout`
    ├── ProviderResponseError              a provider's reply was malformed; retried
    ├── TokenizerUnavailable               no local copy of an encoding's BPE file
    ├── UsageLimitExceeded                 a run's `UsageLimits` would be (or were) exceeded
    ├── MCPToolError                       an MCP server answered a tool call with an error
    ├── GraphError                         a graph failed while running
    │   ├── GraphRecursionError            a loop exceeded `recursion_limit`
    │   ├── StateConflictError             concurrent nodes wrote one key differently
    │   └── GraphNodesFailed               with fail_fast=False: every node failure
    ├── AgentError                         an agent could not give a final answer
    │   ├── AgentIterationLimit            `max_iterations` model turns without an answer
    │   └── AgentOutputError (ValueError)  the answer does not fit `output_type`, even corrected
    └── WorkflowError                      a workflow run could not give a result
        ├── UnknownWorkflowRun (LookupError)  no such run (or not of this workflow)
        ├── WorkflowNotDeployed (ValidationError)  distributed execute without a deployment
        ├── WorkflowFailed                 the run failed or crashed; `cause` is why
        ├── WorkflowCancelled              the run was cancelled or terminated
        └── WorkflowTimeout (TimeoutError)  `get_result`'s wait ran out; the run goes on

Every warning of ours has a standard category, so `warnings.filterwarnings` selects it by class:

    UserWarning
    ├── EmptyStoreWarning                  retrieval found nothing: an empty store, or a filter
    ├── TokenizerFallbackWarning           an encoding is not available offline: cl100k_base counts
    └── UncacheableInputWarning            a cached step's input has no canonical form: it ran uncached
    RuntimeWarning
    └── PrefectInternalsWarning            a private Prefect attribute is missing: Prefect's public way is used

One exception is Prefect's, not ours: `prefect_beluga.orchestration.signals.WaitCancelled`, a
`prefect.exceptions.Abort` (a `BaseException`, so a step's `except Exception` cannot swallow it)
raised when a run is cancelled while it waits for a signal. It lives with the signals: this
module imports nothing, Prefect included.

A step that raises keeps its own exception type: the chain re-raises it unchanged, with a note
naming the step and its position (see `add_step_note`).
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "AgentIterationLimit",
    "AgentOutputError",
    "BelugaError",
    "ChainTimeoutError",
    "EmptyStoreWarning",
    "GraphError",
    "GraphNodesFailed",
    "GraphRecursionError",
    "GraphValidationError",
    "MCPToolError",
    "PrefectInternalsWarning",
    "ProviderResponseError",
    "StateConflictError",
    "StepOutputError",
    "TokenizerFallbackWarning",
    "TokenizerUnavailable",
    "ToolArgumentsError",
    "UncacheableInputWarning",
    "UnknownWorkflowRun",
    "UsageLimitExceeded",
    "ValidationError",
    "WorkflowCancelled",
    "WorkflowError",
    "WorkflowFailed",
    "WorkflowNotDeployed",
    "WorkflowTimeout",
    "add_step_note",
]


class BelugaError(Exception):
    """Base class of every error raised by prefect-beluga."""


class ValidationError(BelugaError, ValueError):
    """Bad input or misuse of the API. Permanent: never retried."""


class StepOutputError(ValidationError):
    """A step returned something other than a dict."""


class GraphValidationError(ValidationError):
    """A graph is malformed: unknown node, missing entry point, unconditional cycle, ..."""


class ToolArgumentsError(ValidationError):
    """The arguments a model gave a tool are not valid JSON or do not fit its schema."""


class ChainTimeoutError(BelugaError, TimeoutError):
    """A chain did not finish within its `timeout`."""


class ProviderResponseError(BelugaError):
    """A provider answered with something that is not a valid reply (malformed JSON, no
    choices, wrong number or size of embeddings). Not permanent: a retry may get a good reply."""


class TokenizerUnavailable(BelugaError):
    """No local copy of an encoding's BPE file was found (and nothing is ever downloaded)."""


class UsageLimitExceeded(BelugaError):
    """A run's `UsageLimits` would be exceeded by a request (which was then not sent), or were
    exceeded by a reply. Permanent: never retried. `limit` names the limit ("total_tokens"),
    `value` is its value, `usage` the run's usage so far (a `usage.RunUsage`), `step` the step
    that made the request, `run` the run whose budget it is."""

    def __init__(
        self,
        message: str,
        *,
        limit: str = "",
        value: float = 0,
        usage: object = None,
        step: str | None = None,
        run: str | None = None,
    ) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.usage = usage
        self.step = step
        self.run = run


class MCPToolError(BelugaError):
    """An MCP server answered a tool call with an error: a result with `isError`, or a JSON-RPC
    error response (`code` is its code; None for `isError`). The text is the server's.

    It is an answer, not a fault: it goes back to the model as the tool message, and is never
    retried (`retryable` is False), whatever the server's `retries`.
    """

    retryable = False

    def __init__(self, message: str, *, tool: str, code: int | None = None) -> None:
        super().__init__(message)
        self.tool = tool
        self.code = code


class GraphError(BelugaError):
    """A graph failed while running."""


class GraphRecursionError(GraphError):
    """A loop in a graph ran more times than the graph's `recursion_limit` allows."""


class StateConflictError(GraphError):
    """Two concurrent nodes wrote different values to one state key that has no reducer."""


def add_step_note(exc: BaseException, note: str) -> BaseException:
    """Attach `note` (e.g. "in step 'fetch' (2 of 3) of chain 'rag'") to `exc`, once."""
    notes = getattr(exc, "__notes__", None) or []
    if note not in notes:
        if hasattr(exc, "add_note"):
            exc.add_note(note)
        else:  # Python 3.10
            exc.__notes__ = [*notes, note]
    return exc


class GraphNodesFailed(GraphError):
    """With `fail_fast=False`: one or more nodes failed; `failures` maps node name to error."""

    def __init__(self, message: str, failures: dict[str, BaseException]) -> None:
        super().__init__(message)
        self.failures = failures


class AgentError(BelugaError):
    """An agent could not give a final answer. `agent` names it."""

    def __init__(self, message: str, *, agent: str | None = None) -> None:
        super().__init__(message)
        self.agent = agent


class AgentIterationLimit(AgentError):
    """An agent made `max_iterations` model turns and the model still asked for tools."""

    def __init__(self, message: str, *, agent: str | None = None, max_iterations: int | None = None) -> None:
        super().__init__(message, agent=agent)
        self.max_iterations = max_iterations


class AgentOutputError(AgentError, ValueError):
    """An agent's final answer did not validate against its `output_type`, even after one
    corrective turn. `errors` lists what was wrong; `content` is the last answer."""

    def __init__(
        self, message: str, *, agent: str | None = None, content: str = "", errors: list[str] | None = None
    ) -> None:
        super().__init__(message, agent=agent)
        self.content = content
        self.errors = errors or []


class WorkflowError(BelugaError):
    """A workflow run could not give a result. `workflow_id` and `run_id` name the run."""

    def __init__(self, message: str, *, workflow_id: str | None = None, run_id: str | None = None) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.run_id = run_id


class UnknownWorkflowRun(WorkflowError, LookupError):
    """No run with this id on the Prefect API, or it is a run of another workflow."""


class WorkflowNotDeployed(WorkflowError, ValidationError):
    """A distributed workflow was executed before it was deployed (or served)."""


class WorkflowFailed(WorkflowError):
    """The workflow run failed or crashed; `cause` holds the exception that ended it."""

    def __init__(
        self,
        message: str,
        *,
        cause: BaseException | None = None,
        workflow_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(message, workflow_id=workflow_id, run_id=run_id)
        self.cause = cause
        self.__cause__ = cause


class WorkflowCancelled(WorkflowError):
    """The workflow run was cancelled (gracefully) or terminated (forcefully)."""


class WorkflowTimeout(WorkflowError, TimeoutError):
    """`get_result` waited `timeout` seconds and the run had not finished; it goes on."""


class EmptyStoreWarning(UserWarning):
    """Retrieval found nothing: the store is empty, or holds nothing the filter lets through."""


class TokenizerFallbackWarning(UserWarning):
    """An encoding was not available offline; token counts use cl100k_base instead."""


class UncacheableInputWarning(UserWarning):
    """A cached step got an input with no canonical JSON form: it ran without the cache."""


class PrefectInternalsWarning(RuntimeWarning):
    """A private Prefect attribute this package uses is missing; it falls back to Prefect's way."""
