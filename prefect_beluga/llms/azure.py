"""Azure OpenAI chat models, on the official SDK's Azure client (`openai.AsyncAzureOpenAI`).

```python
# example: not run (needs an Azure OpenAI deployment and its key)
import os

from prefect_beluga import llms

config = llms.Config(
    provider="azure_openai",
    model_name="my-gpt-4o-mini",                      # the deployment name
    base_url="https://my-resource.openai.azure.com",  # or AZURE_OPENAI_ENDPOINT
    api_version="2024-10-21",                         # or OPENAI_API_VERSION
    api_key=os.environ.get("AZURE_OPENAI_API_KEY"),   # or a Microsoft Entra token provider:
)
llm = llms.Factory().create_provider("azure_openai", config)
llm.generate("What is Prefect?").content
```

With Microsoft Entra ID instead of a key (the `azure-identity` package):

```python
# example: not run (needs the azure-identity package and an Azure login)
from azure.identity import DefaultAzureCredential, get_bearer_token_provider

token_provider = get_bearer_token_provider(DefaultAzureCredential(), "https://cognitiveservices.azure.com/.default")
llms.Config(provider="azure_openai", model_name="my-gpt-4o-mini", base_url="https://my-resource.openai.azure.com",
            api_version="2024-10-21", azure_ad_token_provider=token_provider)
```

Requests go to `{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...`
with the key in the `api-key` header (or `Authorization: Bearer <Entra token>`). Everything
else is `OpenAIChatModel`'s: streaming with usage, tools, structured output (Azure supports
`json_schema` from API version 2024-08-01-preview on), the SDK's retries off (the Prefect retry
policy retries; `Retry-After` honoured), rate limits, keys scrubbed from errors (the `api-key`
header too). The endpoint, API version and key may also come from `AZURE_OPENAI_ENDPOINT`,
`OPENAI_API_VERSION` (or `AZURE_OPENAI_API_VERSION`) and `AZURE_OPENAI_API_KEY`; each one
missing is a `ValidationError` naming the option and the variable. `options` may carry
`api_version` / `azure_ad_token_provider` too (they are client settings, never sent as
request parameters).
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from prefect_beluga._openai_client import ClientPerLoop, azure_settings
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.fingerprint import fingerprint
from prefect_beluga.llms.openai import OpenAIChatModel
from prefect_beluga.llms.servers import SERVERS, Server

#: `options` keys that configure the Azure client instead of the request.
AZURE_CLIENT_OPTIONS = ("api_version", "azure_ad_token_provider", "azure_endpoint")


class AzureOpenAIChatModel(OpenAIChatModel):
    """A chat model deployed on Azure OpenAI.

    Args:
        config: `model_name` is the deployment name; `base_url` the resource endpoint
            (`https://NAME.openai.azure.com`); `api_version`; `api_key` or
            `azure_ad_token_provider`. Missing ones are read from `AZURE_OPENAI_ENDPOINT`,
            `OPENAI_API_VERSION` and `AZURE_OPENAI_API_KEY`.
        **overrides: Config fields to change.

    Examples:
        ```python
        # example: not run (needs an Azure OpenAI deployment and its key)
        import os

        from prefect_beluga.agents import Agent
        from prefect_beluga.llms import AzureOpenAIChatModel, Config

        llm = AzureOpenAIChatModel(Config(model_name="gpt-4o-mini-prod", base_url=os.environ["AZURE_OPENAI_ENDPOINT"],
                                          api_version="2024-10-21", api_key=os.environ["AZURE_OPENAI_API_KEY"]))
        Agent(llm, tools=[search], output_type=Answer).invoke("...")  # search: a tool; Answer: a pydantic model
        ```
    """

    provider_name = "azure_openai"

    def _server(self, where: str) -> Server:
        if self.config.server not in (None, "azure_openai"):
            raise ValidationError(
                f"{where}: provider 'azure_openai' talks to Azure OpenAI; server={self.config.server!r} "
                "belongs to provider 'openai' (or leave server out)"
            )
        return SERVERS["azure_openai"]

    def _make_clients(self, where: str) -> ClientPerLoop:
        options = self.config.options
        token_provider = self.config.azure_ad_token_provider or options.get("azure_ad_token_provider")
        endpoint, api_version, key = azure_settings(
            endpoint=self.config.base_url or options.get("azure_endpoint"),
            api_version=self.config.api_version or options.get("api_version"),
            api_key=self.config.api_key,
            token_provider=token_provider,
            where=where,
        )
        self._api_key: SecretStr | None = key  # type: ignore[assignment]
        self._endpoint = endpoint
        self._api_version = api_version
        self._base_url = endpoint
        self._token_provider = token_provider if key is None else None
        client_options: dict[str, Any] = {
            "azure_endpoint": endpoint,
            "api_version": api_version,
            "timeout": self.config.timeout,
            "max_retries": 0,  # retries belong to the Prefect retry policy of the step
        }
        if key is not None:
            client_options["api_key"] = key.get_secret_value()
        else:
            client_options["azure_ad_token_provider"] = token_provider
        return ClientPerLoop(rate_limit=self.config.rate_limit, azure=True, **client_options)

    def _extra_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.config.options.items() if k not in AZURE_CLIENT_OPTIONS}

    def _where(self) -> str:
        return (
            f"Azure OpenAI deployment {self.config.model_name!r} at {self._endpoint} "
            f"(api-version {self._api_version})"
        )

    def cache_key(self) -> str:
        """Provider, endpoint, deployment, API version, parameters and a one-way digest of the
        key (or the Entra token provider's fingerprint): results never cross deployments or keys."""
        return self._cache_key(
            options=self._extra_params(),
            endpoint=self._endpoint,
            api_version=self._api_version,
            entra=fingerprint(self._token_provider) if self._token_provider is not None else None,
        )

    def __repr__(self) -> str:
        return f"AzureOpenAIChatModel(deployment={self.config.model_name!r}, endpoint={self._endpoint!r})"


__all__ = ["AZURE_CLIENT_OPTIONS", "AzureOpenAIChatModel"]
