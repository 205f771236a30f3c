"""The current workflow run, and reading its flow run inputs (where signals and progress are kept)."""

from __future__ import annotations

from prefect.context import FlowRunContext
from prefect.exceptions import ObjectNotFound

from prefect_beluga.core.errors import ValidationError


def current_run_id(what: str) -> str:
    """The id of the flow run this is called in; `what` names the caller in the error outside one."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise ValidationError(f"{what} can only be called inside a workflow run")
    return str(context.flow_run.id)


def not_found(exc: Exception) -> bool:
    """Whether `exc` (from reading a flow run input) says there is no such input."""
    if isinstance(exc, ObjectNotFound):
        return True
    return getattr(getattr(exc, "response", None), "status_code", None) == 404
