"""Structured output: how an agent asks for its `output_type`, and how it reads the answer.

The three output modes (`prefect_beluga.agents` says which server uses which), chosen from
the chat model's declared capabilities, never from its model name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import pydantic
from pydantic import BaseModel

from prefect_beluga.core.errors import ValidationError
from prefect_beluga.llms.base import ChatModel

#: The tool an `output_type` answer is given through in the "tool" output mode.
OUTPUT_TOOL = "final_result"

OutputMode = Literal["json_schema", "tool", "prompted"]
OUTPUT_MODES: tuple[str, ...] = ("json_schema", "tool", "prompted")

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
_FENCED_BLOCK = re.compile(r"```(?:json)?\s*(\{.*\})\s*```", re.DOTALL)


@dataclass(frozen=True)
class OutputRequest:
    """What each model turn of an agent with an `output_type` carries to ask for it."""

    mode: OutputMode
    #: The request's `response_format` (json_schema; json_object when prompted on a JSON-mode server).
    response_format: dict[str, Any] | None = None
    #: The output tool's entry of the `tools` parameter ("tool" mode).
    tool_spec: dict[str, Any] | None = None
    #: The request's `tool_choice` ("tool" mode).
    tool_choice: str | dict[str, Any] | None = None
    #: Added to the system prompt ("prompted" mode).
    instructions: str | None = None


def output_request(
    llm: ChatModel,
    output_type: type[BaseModel],
    output_mode: str | None,
    *,
    has_tools: bool,
    tool_names: set[str],
    where: str,
) -> OutputRequest:
    """How `output_type` is asked for of `llm`: `output_mode`, or the first mode its declared
    capabilities support (a mode they do not support is a `ValidationError` naming the capability)."""
    caps = llm.capabilities
    server = getattr(getattr(llm, "server", None), "name", None)
    at = f" (server preset {server!r})" if server else ""
    supported = {
        "json_schema": caps.json_schema and (caps.json_schema_with_tools or not has_tools),
        "tool": caps.tools and caps.tool_choice,
        "prompted": True,
    }
    if output_mode is None:
        output_mode = next(mode for mode in OUTPUT_MODES if supported[mode])
    elif output_mode not in OUTPUT_MODES:
        raise ValidationError(f"{where}: output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
    elif not supported[output_mode]:
        if output_mode == "json_schema":
            needed = "json_schema" if not caps.json_schema else "json_schema_with_tools"
        else:
            needed = "tools" if not caps.tools else "tool_choice"
        raise ValidationError(
            f"{where}: output_mode={output_mode!r} needs capability {needed}, which {llm.name!r}{at} "
            f"does not declare; leave output_mode out to choose a supported one"
        )
    if OUTPUT_TOOL in tool_names and output_mode == "tool":
        raise ValidationError(
            f"{where}: a tool is named {OUTPUT_TOOL!r}, the name of the output tool of output_mode='tool'; "
            "rename it with tool(name=...)"
        )
    schema = output_type.model_json_schema()
    if output_mode == "json_schema":
        return OutputRequest("json_schema", response_format=_response_format(output_type))
    if output_mode == "tool":
        return OutputRequest(
            "tool",
            tool_spec={
                "type": "function",
                "function": {
                    "name": OUTPUT_TOOL,
                    "description": f"Give the final answer as {output_type.__name__}; call it once you have it.",
                    "parameters": schema,
                },
            },
            tool_choice="required" if has_tools else {"type": "function", "function": {"name": OUTPUT_TOOL}},
        )
    return OutputRequest(
        "prompted",
        response_format={"type": "json_object"} if caps.json_object else None,
        instructions=(
            f"When you give your final answer, reply with only a JSON object that matches this JSON schema "
            f"of {output_type.__name__}, and nothing else:\n{json.dumps(schema)}"
        ),
    )


def parse_output(output_type: type[BaseModel], content: str) -> tuple[BaseModel | None, list[str]]:
    """The answer parsed into `output_type` (a fenced JSON block too), or None and what is wrong, by field."""
    fenced = _FENCE.match(content or "") or _FENCED_BLOCK.search(content or "")
    text = fenced.group(1) if fenced else (content or "")
    try:
        data = json.loads(text)
    except ValueError as exc:
        return None, [f"the answer is not valid JSON ({exc})"]
    try:
        return output_type.model_validate(data), []
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            location = ".".join(str(part) for part in error.get("loc", ())) or "(root)"
            problems.append(f"field {location!r}: {error.get('msg', 'invalid')}")
        return None, problems


def _response_format(output_type: type[BaseModel]) -> dict[str, Any]:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", output_type.__name__)[:64] or "output"
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": output_type.model_json_schema(), "strict": False},
    }
