"""Chat models: configuration, the provider factory, OpenAI (and OpenAI-compatible server
presets), Azure OpenAI and an offline model.

```python
import os

from prefect_beluga import llms, schema

provider = "openai" if os.environ.get("OPENAI_API_KEY") else "offline"  # offline: no key, no network
llm = llms.Factory().create_provider(provider, llms.Config(provider=provider, model_name="gpt-4o-mini"))
reply = llm.generate([schema.SystemMessage("Be brief."), schema.HumanMessage("What is AI?")])
print(reply.content, reply.usage.total_tokens)
```

The offline model answers from the context it is given and says so (`[offline model] ...`).
Providers and server presets, with their capabilities and sources: docs/providers.md.
"""

from prefect_beluga.core.errors import ProviderResponseError
from prefect_beluga.llms.azure import AzureOpenAIChatModel
from prefect_beluga.llms.base import ChatModel
from prefect_beluga.llms.config import Config
from prefect_beluga.llms.factory import Factory, create_provider
from prefect_beluga.llms.offline import OFFLINE_PREFIX, OfflineChatModel
from prefect_beluga.llms.openai import OpenAIChatModel
from prefect_beluga.llms.pricing import estimate_cost
from prefect_beluga.llms.servers import SERVERS, Capabilities, Server

__all__ = [
    "OFFLINE_PREFIX",
    "SERVERS",
    "AzureOpenAIChatModel",
    "Capabilities",
    "ChatModel",
    "Config",
    "Factory",
    "OfflineChatModel",
    "OpenAIChatModel",
    "ProviderResponseError",
    "Server",
    "create_provider",
    "estimate_cost",
]
