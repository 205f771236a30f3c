"""The OpenAI-compatible server presets and their capabilities (public as `prefect_beluga.llms.servers`).

Shared by the chat models and the embedders, so neither AI part imports the other; see
`prefect_beluga.llms.servers` for the reference. No Prefect import here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from prefect_beluga.core._checks import check_bool
from prefect_beluga.core.errors import ValidationError

__all__ = [
    "CAPABILITY_NAMES", "PLACEHOLDER_KEY", "SERVERS", "Capabilities", "Server", "check_overrides", "server_preset",
]


@dataclass(frozen=True)
class Capabilities:
    """What an OpenAI-compatible server accepts and honours in a chat completions request.

    Args:
        json_schema: `response_format={"type": "json_schema", ...}` is honoured.
        json_object: `response_format={"type": "json_object"}` (JSON mode) is honoured.
        json_schema_with_tools: `json_schema` may be combined with `tools` in one request.
        tools: Function tools (`tools=[...]`) are supported.
        tool_choice: `tool_choice` ("required" or a named function) is honoured, so a tool
            call can be forced.
        parallel_tool_calls: The `parallel_tool_calls` parameter is accepted and honoured.
        stream_usage: `stream_options={"include_usage": true}` gives usage in streams.
        seed: The `seed` parameter is honoured.
        embeddings: The server offers `/embeddings`.
        message_names: Messages may carry a `name` (a tool result names its tool); where not,
            names are left out of the request.

    Examples:
        ```python
        from prefect_beluga.llms import SERVERS, Capabilities

        Capabilities().json_schema                              # -> True: OpenAI proper
        SERVERS["anthropic"].capabilities.json_schema          # -> False: response_format ignored
        Capabilities().with_overrides({"seed": False}).seed    # -> False
        ```
    """

    json_schema: bool = True
    json_object: bool = True
    json_schema_with_tools: bool = True
    tools: bool = True
    tool_choice: bool = True
    parallel_tool_calls: bool = True
    stream_usage: bool = True
    seed: bool = True
    embeddings: bool = True
    message_names: bool = True

    def with_overrides(self, overrides: Mapping[str, Any] | None, *, where: str = "capabilities") -> Capabilities:
        """A copy with `overrides` (capability name -> bool) applied, checked."""
        if not overrides:
            return self
        check_overrides(overrides, where=where)
        return replace(self, **dict(overrides))

    def as_dict(self) -> dict[str, bool]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: The capability names `capabilities={...}` may override.
CAPABILITY_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Capabilities))


def check_overrides(overrides: Any, *, where: str) -> dict[str, bool]:
    """`overrides` as a dict of known capability names to bools; else a ValidationError naming the bad entry."""
    if not isinstance(overrides, Mapping):
        raise ValidationError(f"{where} must be a dict of capability name -> bool, got {type(overrides).__name__}")
    for name, value in overrides.items():
        if name not in CAPABILITY_NAMES:
            raise ValidationError(
                f"{where}: unknown capability {name!r}; known capabilities: {', '.join(CAPABILITY_NAMES)}"
            )
        check_bool(value, f"{where}: capability {name!r}")
    return dict(overrides)


@dataclass(frozen=True)
class Server:
    """A named OpenAI-compatible server: where it usually is, its key, and what it supports.

    Args:
        name: The preset's name (`llms.Config(server=name)`).
        title: Human name of the server.
        base_url: Its usual API root; None when there is no usual one (give `base_url`).
        api_key_env: Environment variable read for the key when `api_key` is not given.
        key_required: Whether a request needs a real key (a local server ignores it).
        capabilities: What the server supports.
        docs: The documentation the capabilities were taken from.
    """

    name: str
    title: str
    base_url: str | None
    api_key_env: str | None
    key_required: bool
    capabilities: Capabilities
    docs: tuple[str, ...] = field(default=())


#: Sent as the key to servers that ignore it (the SDK refuses an empty one).
PLACEHOLDER_KEY = "not-needed"

SERVERS: dict[str, Server] = {
    server.name: server
    for server in (
        Server(
            "openai", "OpenAI", "https://api.openai.com/v1", "OPENAI_API_KEY", True, Capabilities(),
            ("https://platform.openai.com/docs/api-reference/chat/create",),
        ),
        Server(
            "azure_openai", "Azure OpenAI", None, "AZURE_OPENAI_API_KEY", True, Capabilities(),
            (
                "https://learn.microsoft.com/en-us/azure/ai-foundry/openai/reference",
                "https://learn.microsoft.com/en-us/azure/ai-foundry/openai/how-to/structured-outputs",
            ),
        ),
        Server(
            "ollama", "Ollama", "http://localhost:11434/v1", "OLLAMA_API_KEY", False,
            # Supported request fields list response_format, seed, stream_options.include_usage,
            # tools and tool_choice, not parallel_tool_calls; /v1/embeddings exists. Structured
            # outputs (a JSON schema) arrived in 0.5 and work through the OpenAI endpoint.
            Capabilities(parallel_tool_calls=False),
            ("https://docs.ollama.com/api/openai-compatibility", "https://ollama.com/blog/structured-outputs"),
        ),
        Server(
            "vllm", "vLLM", None, "VLLM_API_KEY", False,
            # Structured outputs through response_format (json_schema, json_object); tool_choice
            # auto/required/none and named functions; parallel_tool_calls is not documented as
            # honoured; embeddings only for pooling (embedding) models.
            Capabilities(parallel_tool_calls=False),
            (
                "https://docs.vllm.ai/en/latest/serving/openai_compatible_server/",
                "https://docs.vllm.ai/en/latest/features/structured_outputs/",
                "https://docs.vllm.ai/en/latest/features/tool_calling/",
            ),
        ),
        Server(
            "groq", "Groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY", True,
            # Structured outputs exclude streaming and tool use; logprobs, logit_bias,
            # top_logprobs and messages[].name are 400s; no embeddings endpoint; stream usage is
            # reported in Groq's own x_groq field, not through stream_options.
            Capabilities(json_schema_with_tools=False, stream_usage=False, embeddings=False, message_names=False),
            (
                "https://console.groq.com/docs/openai",
                "https://console.groq.com/docs/structured-outputs",
                "https://console.groq.com/docs/tool-use",
            ),
        ),
        Server(
            "gemini", "Gemini (OpenAI compatibility)", "https://generativelanguage.googleapis.com/v1beta/openai/",
            "GEMINI_API_KEY", True,
            # The compatibility reference lists response_format (json_schema), stream_options,
            # tools and tool_choice, but neither parallel_tool_calls nor seed; structured output
            # together with function calling is refused by the models of this generation.
            Capabilities(json_schema_with_tools=False, parallel_tool_calls=False, seed=False),
            ("https://ai.google.dev/gemini-api/docs/openai", "https://ai.google.dev/api/compatibility"),
        ),
        Server(
            "anthropic", "Anthropic (OpenAI SDK compatibility)", "https://api.anthropic.com/v1/",
            "ANTHROPIC_API_KEY", True,
            # response_format and seed are ignored; parallel_tool_calls, tool_choice and
            # stream_options are fully supported; no embeddings.
            Capabilities(json_schema=False, json_object=False, json_schema_with_tools=False, seed=False,
                         embeddings=False),
            ("https://docs.anthropic.com/en/api/openai-sdk",),
        ),
        Server(
            "compatible", "Any OpenAI-compatible server", None, "OPENAI_API_KEY", False,
            # What nearly every compatible server (LM Studio, llama.cpp's server, Together,
            # Fireworks, DeepSeek, Mistral, ...) does: chat, streaming, tools. Everything else is
            # off until a config says otherwise.
            Capabilities(json_schema=False, json_object=False, json_schema_with_tools=False, tool_choice=False,
                         parallel_tool_calls=False, stream_usage=False, seed=False, embeddings=True),
            ("https://platform.openai.com/docs/api-reference/chat/create",),
        ),
    )
}


def server_preset(name: str | None, *, where: str = "llms.Config") -> Server:
    """The preset called `name` ("openai" when None); a ValidationError listing the known ones."""
    key = "openai" if name is None else name
    if not isinstance(key, str) or key.strip().lower() not in SERVERS:
        raise ValidationError(
            f"{where}: unknown server preset {name!r}; known presets: {', '.join(sorted(SERVERS))} "
            "(use 'compatible' for any other OpenAI-compatible server, with capabilities={...})"
        )
    return SERVERS[key.strip().lower()]
