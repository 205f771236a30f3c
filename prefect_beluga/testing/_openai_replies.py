"""What the loopback OpenAI server answers: scripted replies, structured output, token counts, vectors.

A scripted reply (`Reply`) is checked when it is queued (`check_reply`) and turned into the
wire's text and tool calls when it is sent (`split_reply`); a `{"output": ...}` reply becomes
structured output the way the request asked for it (`structured`).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import uuid
from collections.abc import Callable
from typing import Any

from prefect_beluga.testing._openai_dialects import Dialect

#: The tool an agent's structured output goes through when it is asked as a tool call.
OUTPUT_TOOL = "final_result"

#: A scripted chat reply: its text, or `{"content": str | None, "tool_calls": [{"name": str,
#: "arguments": dict | str, "id": str (optional)}, ...]}`.
Reply = str | dict[str, Any]
Responder = Callable[[list[dict[str, Any]]], Reply]


def check_reply(reply: Any) -> Reply:
    if isinstance(reply, str):
        return reply
    if isinstance(reply, dict) and set(reply) == {"output"}:
        return reply
    if not isinstance(reply, dict) or set(reply) - {"content", "tool_calls"}:
        raise ValueError(
            f"a scripted reply is a str, a dict with 'content' / 'tool_calls', or {{'output': ...}}, got {reply!r:.80}"
        )
    calls = reply.get("tool_calls") or []
    if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls):
        raise ValueError(f"'tool_calls' must be a list of {{'name': str, 'arguments': ...}}, got {calls!r:.80}")
    return reply


def structured(reply: dict[str, Any], body: dict[str, Any], dialect: Dialect) -> Reply:
    """A structured answer, given the way the request asked for it, as a model would give it: a
    call of the forced tool (or of the output tool offered), JSON text under a response format
    the server honours, else JSON in a fenced block (a model that was only prompted)."""
    value = reply["output"]
    names = [t.get("function", {}).get("name") for t in body.get("tools") or () if isinstance(t, dict)]
    choice = body.get("tool_choice") if dialect.tool_choice == "honour" else None
    forced = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    tool = forced if forced in names else (OUTPUT_TOOL if OUTPUT_TOOL in names else None)
    if tool is not None:
        return {"tool_calls": [{"name": tool, "arguments": value}]}
    kind = (body.get("response_format") or {}).get("type")
    if kind == "json_schema" and dialect.json_schema == "honour":
        return json.dumps(value)
    if kind == "json_object" and dialect.json_object == "honour":
        return json.dumps(value)
    return f"Here is the answer:\n```json\n{json.dumps(value, indent=2)}\n```"


def split_reply(reply: Reply) -> tuple[str, list[dict[str, Any]]]:
    """A scripted reply as its text and its tool calls in OpenAI's wire shape."""
    if isinstance(reply, str):
        return reply, []
    calls = []
    for call in reply.get("tool_calls") or ():
        arguments = call.get("arguments", {})
        calls.append(
            {
                "id": call.get("id") or f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                },
            }
        )
    return reply.get("content") or "", calls


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def token_count(text: str) -> int:
    from prefect_beluga.tokens import count_tokens

    return count_tokens(text)


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return 3 + sum(3 + token_count(text_of(m.get("content"))) for m in messages if isinstance(m, dict))


def embedding_vector(text: str, dimension: int) -> list[float]:
    """The deterministic unit vector the server returns for `text` (float32-exact)."""
    values: list[float] = []
    counter = 0
    while len(values) < dimension:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((b / 127.5) - 1.0 for b in digest)
        counter += 1
    values = values[:dimension]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    # Round-trip through float32 so "float" and "base64" replies carry identical numbers.
    packed = struct.pack(f"<{dimension}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimension}f", packed))


__all__ = [
    "OUTPUT_TOOL",
    "Reply",
    "Responder",
    "check_reply",
    "embedding_vector",
    "prompt_tokens",
    "split_reply",
    "structured",
    "text_of",
    "token_count",
]
