"""What of a GenAI call's content goes on its span: messages, system instructions, tool
definitions in the conventions' JSON form, and only when the standard capture setting asks for it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

#: The standard setting for recording content.
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CAPTURE_VALUES = frozenset({"true", "1", "yes", "span_only", "span_and_event"})


def capture_content() -> bool:
    """Whether the standard setting asks for message content on spans."""
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in _CAPTURE_VALUES


def to_json(value: Any) -> str:
    """`value` as the JSON text of a span attribute."""
    return json.dumps(value, ensure_ascii=False, default=str)


def _arguments(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return text


def message_json(message: Any) -> dict[str, Any]:
    """One message in the conventions' form: `{"role", "parts": [...]}`."""
    role = getattr(message, "role", "user")
    content = getattr(message, "content", "") or ""
    parts: list[dict[str, Any]] = []
    if role == "tool":
        parts.append({"type": "tool_call_response", "id": getattr(message, "tool_call_id", None),
                      "response": content})
    elif content:
        parts.append({"type": "text", "content": content})
    for call in getattr(message, "tool_calls", ()) or ():
        parts.append({"type": "tool_call", "id": call.id, "name": call.name, "arguments": _arguments(call.arguments)})
    return {"role": role, "parts": parts}


def content_attributes(messages: Iterable[Any], request: Mapping[str, Any]) -> dict[str, Any]:
    """A chat request's content attributes: input messages, system instructions, tool definitions."""
    system = [{"type": "text", "content": m.content} for m in messages if getattr(m, "role", None) == "system"]
    others = [message_json(m) for m in messages if getattr(m, "role", None) != "system"]
    attributes: dict[str, Any] = {"gen_ai.input.messages": to_json(others)}
    if system:
        attributes["gen_ai.system_instructions"] = to_json(system)
    if request.get("tools"):
        attributes["gen_ai.tool.definitions"] = to_json(request["tools"])
    return attributes
