"""OpenAI-compatible servers as named presets, each a small set of declared capabilities.

Many servers speak "the OpenAI API", each with differences: one rejects `json_schema`, one
ignores `response_format`, one cannot combine structured output with tools, one never reports
usage in a stream. A preset names the server and declares what it supports, taken from the
server's own documentation (docs/providers.md cites each source); the chat model, the
embedder and the agent's structured output follow the declared capabilities, never the model
name:

```python
from prefect_beluga import llms

llm = llms.Factory().create_provider("openai", llms.Config(
    provider="openai", server="groq", model_name="llama-3.3-70b-versatile", api_key="gsk-..."))  # or GROQ_API_KEY
llm.capabilities.json_schema_with_tools  # -> False: Groq's structured outputs exclude tool use
local = llms.Config(provider="openai", server="vllm", base_url="http://gpu-1:8000/v1",
                    model_name="Qwen/Qwen3-8B", capabilities={"parallel_tool_calls": True})
```

`capabilities={...}` overrides a preset's declaration per config (a server version that
learned something, a model that lacks it). Unknown preset names and unknown capability names
are `ValidationError`s that list the known ones. No Prefect import here.
"""

from prefect_beluga._openai_servers import (
    CAPABILITY_NAMES,
    PLACEHOLDER_KEY,
    SERVERS,
    Capabilities,
    Server,
    check_overrides,
    server_preset,
)

__all__ = [
    "CAPABILITY_NAMES", "PLACEHOLDER_KEY", "SERVERS", "Capabilities", "Server", "check_overrides", "server_preset",
]
