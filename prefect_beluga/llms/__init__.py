"""Chat models: configuration, the provider factory, OpenAI and an offline model.

    >>> import os
    >>> from prefect_beluga import llms, schema
    >>> config = llms.Config(provider="openai", model_name="gpt-4o-mini",
    ...                      api_key=os.environ.get("OPENAI_API_KEY"))
    >>> llm = llms.Factory().create_provider("openai", config)
    >>> reply = llm.generate([schema.SystemMessage("Be brief."), schema.HumanMessage("What is AI?")])
    >>> reply.content, reply.usage.total_tokens

Without a key, `llms.Factory().create_provider("offline")` answers from the context it is given.
"""

from prefect_beluga._openai_client import OPENAI_API_KEY_ENV
from prefect_beluga.core.errors import ProviderResponseError
from prefect_beluga.llms.base import ChatModel
from prefect_beluga.llms.config import Config
from prefect_beluga.llms.factory import Factory, create_provider
from prefect_beluga.llms.offline import OFFLINE_PREFIX, OfflineChatModel
from prefect_beluga.llms.openai import OpenAIChatModel
from prefect_beluga.llms.pricing import estimate_cost

__all__ = [
    "OFFLINE_PREFIX",
    "OPENAI_API_KEY_ENV",
    "ChatModel",
    "Config",
    "Factory",
    "OfflineChatModel",
    "OpenAIChatModel",
    "ProviderResponseError",
    "create_provider",
    "estimate_cost",
]
