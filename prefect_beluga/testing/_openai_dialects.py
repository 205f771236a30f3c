"""The OpenAI-compatible servers the loopback server can act: one `Dialect` per server preset.

A dialect says how a server differs from OpenAI's own API (Azure's paths and headers, request
fields it ignores or refuses, how it streams tool calls and spells finish reasons);
`_openai_protocol.py` acts it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

#: How a dialect treats a request field: honour it, accept and ignore it, or answer 400 naming it.
Treatment = Literal["honour", "ignore", "reject"]


@dataclass(frozen=True)
class Dialect:
    """How one OpenAI-compatible server differs from OpenAI's own API, as the loopback server acts it.

    Args:
        name: The dialect's name (the server preset it mirrors).
        azure: Azure OpenAI's shape: `/openai/deployments/{deployment}/chat/completions` (and
            `/embeddings`) with a required `api-version` query, the key in the `api-key` header
            (or an Entra bearer token), Azure's error bodies, and a first stream chunk that
            carries only `prompt_filter_results`.
        json_schema: `response_format` of type `json_schema`.
        json_object: `response_format` of type `json_object`.
        json_schema_with_tools: False: a request with both `json_schema` and `tools` is a 400.
        parallel_tool_calls: The `parallel_tool_calls` field (honoured: `false` keeps one call).
        tool_choice: The `tool_choice` field (honoured: a forced function is what gets called).
        stream_options: `stream_options.include_usage` (ignored: no usage chunk in streams).
        seed: The `seed` field.
        rejected_fields: Other request fields answered with a 400 naming them.
        message_names: False: a message with a `name` is a 400 naming `messages[i].name`.
        tool_call_chunks: "many": a streamed tool call's arguments in several chunks (OpenAI);
            "one": the whole call in one chunk.
        finish_reasons: This server's spelling of OpenAI's finish reasons.
        embeddings: Whether `/embeddings` exists (else 404).
        usage_extension: Where else a stream's usage goes (Groq: "x_groq" on the last chunk).
    """

    name: str = "openai"
    azure: bool = False
    json_schema: Treatment = "honour"
    json_object: Treatment = "honour"
    json_schema_with_tools: bool = True
    parallel_tool_calls: Treatment = "honour"
    tool_choice: Treatment = "honour"
    stream_options: Treatment = "honour"
    seed: Treatment = "honour"
    rejected_fields: tuple[str, ...] = ()
    message_names: bool = True
    tool_call_chunks: Literal["many", "one"] = "many"
    finish_reasons: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    embeddings: bool = True
    usage_extension: str | None = None


#: One dialect per server preset of `prefect_beluga.llms.servers`, acting out what each
#: server's documentation says (docs/providers.md).
DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (
        Dialect("openai"),
        Dialect("azure_openai", azure=True),
        Dialect("ollama", parallel_tool_calls="ignore", tool_call_chunks="one",
                finish_reasons=MappingProxyType({"tool_calls": "stop"})),
        Dialect("vllm", parallel_tool_calls="ignore"),
        Dialect("groq", json_schema_with_tools=False, stream_options="ignore", tool_call_chunks="one",
                rejected_fields=("logprobs", "logit_bias", "top_logprobs"), message_names=False, embeddings=False,
                usage_extension="x_groq"),
        Dialect("gemini", json_schema_with_tools=False, parallel_tool_calls="reject", seed="reject",
                tool_call_chunks="one", finish_reasons=MappingProxyType({"tool_calls": "stop"})),
        Dialect("anthropic", json_schema="ignore", json_object="ignore", seed="ignore", embeddings=False,
                finish_reasons=MappingProxyType(
                    {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"})),
        Dialect("compatible", json_schema="reject", json_object="reject", parallel_tool_calls="reject",
                tool_choice="reject", stream_options="reject", seed="reject", tool_call_chunks="one",
                finish_reasons=MappingProxyType({"stop": "eos"})),
    )
}


def dialect_of(dialect: Dialect | str | None) -> Dialect:
    """`dialect` as a Dialect: one itself, a name in `DIALECTS`, or None for OpenAI's."""
    if dialect is None:
        return DIALECTS["openai"]
    if isinstance(dialect, Dialect):
        return dialect
    if isinstance(dialect, str) and dialect in DIALECTS:
        return DIALECTS[dialect]
    raise ValueError(f"unknown dialect {dialect!r}; known dialects: {', '.join(DIALECTS)} (or pass a Dialect)")


__all__ = ["DIALECTS", "Dialect", "Treatment", "dialect_of"]
