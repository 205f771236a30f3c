"""`Tool`: a function or Runnable an agent can call, with its schema; the `tool` decorator."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import sys
from collections.abc import Callable
from typing import Any, overload

import pydantic
from pydantic import BaseModel, ConfigDict, Field, create_model

from prefect_beluga.core import _telemetry
from prefect_beluga.core.errors import ToolArgumentsError, ValidationError
from prefect_beluga.core.runnable import Runnable, _is_async_callable
from prefect_beluga.tools._schema import check_name, json_schema, model_from_signature, model_name, parse_docstring


class Tool:
    """A function (sync or async) or Runnable an agent can call, with its JSON schema.

    Build it with the `tool` decorator. Calling the tool calls the function.

    Attributes:
        name: The name the model calls it by (also its Prefect task runs' name).
        description: What the model reads about it (the docstring's text).
        parameters: The JSON schema of its arguments.
        args_model: The pydantic model arguments are validated with.
        retries: Extra attempts after an error (the Prefect task's `retries`).
        retry_delay: Seconds between attempts.
        timeout: Seconds one attempt may take (the Prefect task's `timeout_seconds`).
        requires_approval: Inside a workflow run, wait for the signal `approve:<name>` first.
    """

    def __init__(
        self,
        fn: Callable[..., Any] | Runnable,
        *,
        name: str | None = None,
        description: str | None = None,
        args_schema: type[BaseModel] | None = None,
        retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        requires_approval: bool = False,
        _namespace: dict[str, Any] | None = None,
    ) -> None:
        self._runnable = fn if isinstance(fn, Runnable) else None
        if self._runnable is None and (not callable(fn) or isinstance(fn, type)):
            raise ValidationError(f"tool() expects a function or a Runnable, got {type(fn).__name__}: {fn!r:.80}")
        self.fn = fn
        default_name = fn.name if isinstance(fn, Runnable) else getattr(fn, "__name__", type(fn).__name__)
        name = name if name is not None else default_name
        check_name(name)
        doc_text, arg_docs = parse_docstring(inspect.getdoc(fn) or "")
        if args_schema is not None:
            if not (isinstance(args_schema, type) and issubclass(args_schema, BaseModel)):
                raise ValidationError(
                    f"tool {name!r}: args_schema must be a pydantic model class, got {args_schema!r}"
                )
            self.args_model = args_schema
        elif self._runnable is not None:
            self.args_model = create_model(
                model_name(name),
                __config__=ConfigDict(extra="forbid"),
                input=(str, Field(description="The input text.")),
            )
        else:
            self.args_model = model_from_signature(fn, name, arg_docs, _namespace)
        self._is_async = self._runnable is None and _is_async_callable(fn)
        self._describe(
            name, description if description is not None else doc_text, json_schema(self.args_model),
            retries=retries, retry_delay=retry_delay, timeout=timeout, requires_approval=requires_approval,
        )
        if self._runnable is None:
            functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def _describe(
        self,
        name: str,
        description: Any,
        parameters: dict[str, Any],
        *,
        retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        requires_approval: bool = False,
    ) -> None:
        """Set what the model sees and how a call runs, checked (also for tools without a
        Python function: an MCP server's, `prefect_beluga.mcp.MCPTool`)."""
        from prefect_beluga.core._substeps import Substep

        check_name(name)
        if not isinstance(description, str):
            raise ValidationError(f"tool {name!r}: description must be a str, got {type(description).__name__}")
        try:  # checks retries, retry_delay and timeout, naming the tool
            self.substep = Substep(name, retries=retries, retry_delay=retry_delay, timeout=timeout)
        except ValidationError as exc:
            raise ValidationError(str(exc).replace("sub-step", "tool", 1)) from None
        self.name, self.description, self.parameters = name, description, parameters
        self.retries, self.retry_delay, self.timeout = retries, retry_delay, timeout
        self.requires_approval = bool(requires_approval)

    # -- what the model sees -----------------------------------------------------------------

    def to_openai(self) -> dict[str, Any]:
        """The tool as an entry of OpenAI's `tools` request parameter."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}

    # -- calling -----------------------------------------------------------------------------

    def parse_arguments(self, arguments: str | dict[str, Any] | None) -> dict[str, Any]:
        """Validate the model's arguments (a JSON object, as text or parsed).

        Returns the keyword arguments to call the function with.

        Raises:
            ToolArgumentsError: not JSON, not an object, or a field that does not fit, named.
        """
        return self._validate(self._decode(arguments))

    def _decode(self, arguments: str | dict[str, Any] | None) -> dict[str, Any]:
        """The model's arguments as a dict: JSON text parsed, nothing or blank as `{}`."""
        if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
            arguments = {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError as exc:
                raise ToolArgumentsError(
                    f"arguments for tool {self.name!r} are not valid JSON ({exc}); send a JSON object"
                ) from None
        if not isinstance(arguments, dict):
            raise ToolArgumentsError(
                f"arguments for tool {self.name!r} must be a JSON object, got {type(arguments).__name__}"
            )
        return arguments

    def _validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments for the function: `arguments` validated by `args_model`."""
        try:
            model = self.args_model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            problems = "; ".join(_describe(error) for error in exc.errors(include_url=False))
            raise ToolArgumentsError(f"invalid arguments for tool {self.name!r}: {problems}") from None
        return {field: getattr(model, field) for field in type(model).model_fields}

    async def acall(self, arguments: dict[str, Any]) -> Any:
        """Run the tool on validated keyword `arguments` (see `parse_arguments`)."""
        if self._runnable is not None:
            return await self._runnable.ainvoke(_plain(arguments))
        if self._is_async:
            return await self.fn(**arguments)
        return await asyncio.to_thread(self.fn, **arguments)

    async def run_call(self, arguments: dict[str, Any], call_id: str) -> Any:
        """`acall` for the model's call `call_id`: the body of an agent's tool-call task run
        (the id goes into the run's durable key inside a workflow, not to the function).
        Each attempt is an `execute_tool` span when an OpenTelemetry SDK is configured."""
        with _telemetry.tool_call(self.name, call_id, arguments, description=self.description) as span:
            value = await self.acall(arguments)
            span.tool_result(value)
        return value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._runnable is not None:
            return self._runnable.invoke(*args, **kwargs)
        return self.fn(*args, **kwargs)

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        # A tool defined on a class: the bound method is still a tool (self is not an argument).
        if instance is None or self._runnable is not None:
            return self
        return Tool(
            self.fn.__get__(instance, owner),
            name=self.name,
            description=self.description,
            args_schema=self.args_model,
            retries=self.retries,
            retry_delay=self.retry_delay,
            timeout=self.timeout,
            requires_approval=self.requires_approval,
        )

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"


def render_result(value: Any) -> str:
    """A tool's return value as the text of the tool message the model reads."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


@overload
def tool(fn: Callable[..., Any] | Runnable, /) -> Tool: ...


@overload
def tool(
    fn: Callable[..., Any] | Runnable,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    args_schema: type[BaseModel] | None = None,
    retries: int = 0,
    retry_delay: float = 0.0,
    timeout: float | None = None,
    requires_approval: bool = False,
) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    args_schema: type[BaseModel] | None = None,
    retries: int = 0,
    retry_delay: float = 0.0,
    timeout: float | None = None,
    requires_approval: bool = False,
) -> Callable[[Callable[..., Any] | Runnable], Tool]: ...


def tool(fn: Any = None, /, **options: Any) -> Any:
    """Make a function (sync or async) or a Runnable a tool an agent can call.

    Args:
        fn: The function or Runnable (when used as `@tool` without parentheses).
        name: The name the model calls it by (default: the function's name).
        description: What the model reads (default: the docstring's text before `Args:`).
        args_schema: A pydantic model for the arguments, instead of the signature's.
        retries: Extra attempts when it raises (Prefect task retries; default 0).
        retry_delay: Seconds between attempts.
        timeout: Seconds one attempt may take (Prefect task timeout).
        requires_approval: Inside a workflow run, wait for the signal `approve:<name>`
            (`workflow.signal(run_id, "approve:<name>", {"approved": True})`) before running.

    Examples:
        ```python
        from prefect_beluga import Chain
        from prefect_beluga.tools import tool

        @tool
        async def search_docs(query: str, k: int = 3) -> list[str]:
            \"\"\"Search the product docs.\"\"\"
            return [f"passage {i} on {query}" for i in range(k)]
        @tool(retries=2, timeout=10)
        def fetch_page(url: str) -> str: ...
        @tool(requires_approval=True)
        def refund(order_id: str, amount: float) -> str: ...
        research_chain = Chain([lambda state: {"output": f"notes on {state['input']}"}], name="research")
        research = tool(research_chain, name="research", description="Research a topic.")
        research.to_openai()["function"]["parameters"]["required"]  # -> ['input']
        ```
    """
    unknown = set(options) - {
        "name",
        "description",
        "args_schema",
        "retries",
        "retry_delay",
        "timeout",
        "requires_approval",
    }
    if unknown:
        raise ValidationError(f"tool() got unknown option(s) {sorted(unknown)}")
    # Hints naming classes local to the caller (e.g. a model defined in a function, with
    # `from __future__ import annotations`) resolve in the caller's namespace, as in pydantic.
    namespace = dict(sys._getframe(1).f_locals)
    if fn is None:
        return lambda target: Tool(target, **options, _namespace=namespace)
    if isinstance(fn, Tool):
        return fn if not options else Tool(fn.fn, **{**_options_of(fn), **options}, _namespace=namespace)
    return Tool(fn, **options, _namespace=namespace)


def as_tool(value: Any, *, where: str) -> Tool:
    """`value` as a Tool: tools as they are; functions and Runnables wrapped by `tool`."""
    if isinstance(value, Tool):
        return value
    if isinstance(value, Runnable) or (callable(value) and not isinstance(value, type)):
        return Tool(value)
    raise ValidationError(
        f"{where} must be a tool, a function or a Runnable, got {type(value).__name__}: {value!r:.80}"
    )


# -- helpers -----------------------------------------------------------------------------------


def _options_of(t: Tool) -> dict[str, Any]:
    return {
        "name": t.name,
        "description": t.description,
        "retries": t.retries,
        "retry_delay": t.retry_delay,
        "timeout": t.timeout,
        "requires_approval": t.requires_approval,
    }


def _describe(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error.get("loc", ())) or "arguments"
    message = error.get("msg", "invalid")
    if error.get("type") == "missing":
        return f"field {location!r} is required but missing"
    given = error.get("input")
    shown = f" (got {given!r:.60})" if "input" in error and error.get("type") != "extra_forbidden" else ""
    if error.get("type") == "extra_forbidden":
        return f"field {location!r} is not an argument of this tool"
    return f"field {location!r}: {message}{shown}"


def _plain(arguments: dict[str, Any]) -> dict[str, Any]:
    return {key: value.model_dump() if isinstance(value, BaseModel) else value for key, value in arguments.items()}


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


__all__ = ["Tool", "as_tool", "render_result", "tool"]
