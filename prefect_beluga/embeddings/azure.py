"""Azure OpenAI embeddings, on the official SDK's Azure client (`openai.AsyncAzureOpenAI`).

```python
# example: not run (needs an Azure OpenAI deployment and its key)
from prefect_beluga.embeddings import AzureOpenAIEmbedder

embedder = AzureOpenAIEmbedder(
    "embed-prod",                          # the deployment name
    model="text-embedding-3-small",        # what it serves: vector size and tokenizer
    azure_endpoint="https://my-resource.openai.azure.com",   # or AZURE_OPENAI_ENDPOINT
    api_version="2024-10-21",              # or OPENAI_API_VERSION
)                                          # key: AZURE_OPENAI_API_KEY, or azure_ad_token_provider=
vectors = embedder.embed_documents(["Prefect runs flows."])
```

Requests go to `{endpoint}/openai/deployments/{deployment}/embeddings?api-version=...`;
batching, concurrency, the token budget, retries (Prefect's, not the SDK's) and errors are
`OpenAIEmbedder`'s.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from prefect_beluga._openai_client import ClientPerLoop, azure_settings
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.fingerprint import fingerprint, key_of, public_settings, secret_digest
from prefect_beluga.embeddings.openai import MAX_BATCH_TOKENS, MAX_INPUT_TOKENS, OpenAIEmbedder


class AzureOpenAIEmbedder(OpenAIEmbedder):
    """Embeddings from an Azure OpenAI deployment.

    Args:
        deployment: The deployment name (sent as the model; the SDK puts it in the path).
        model: The model the deployment serves (default: the deployment name), which decides
            the native vector size and the tokenizer; `dimension` is required when it is not
            one of `MODEL_DIMENSIONS`.
        azure_endpoint: The resource endpoint; `AZURE_OPENAI_ENDPOINT` when None.
        api_version: The API version; `OPENAI_API_VERSION` (or `AZURE_OPENAI_API_VERSION`) when None.
        api_key: The key; `AZURE_OPENAI_API_KEY` when None and no token provider is given.
        azure_ad_token_provider: A Microsoft Entra token provider, instead of a key.
        dimension, batch_size, max_batch_tokens, max_concurrency, max_input_tokens, timeout,
        rate_limit: As for `OpenAIEmbedder`.

    Examples:
        ```python
        from prefect_beluga.embeddings import AzureOpenAIEmbedder

        AzureOpenAIEmbedder("embed-prod", model="text-embedding-3-large", dimension=1024,
                            azure_endpoint="https://my-resource.openai.azure.com", api_version="2024-10-21",
                            api_key="...")  # or AZURE_OPENAI_ENDPOINT, OPENAI_API_VERSION, AZURE_OPENAI_API_KEY
        ```
    """

    def __init__(
        self,
        deployment: str,
        *,
        model: str | None = None,
        azure_endpoint: str | None = None,
        api_version: str | None = None,
        api_key: SecretStr | str | None = None,
        azure_ad_token_provider: Any = None,
        dimension: int | None = None,
        batch_size: int = 512,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        max_concurrency: int = 4,
        max_input_tokens: int = MAX_INPUT_TOKENS,
        timeout: float = 60.0,
        rate_limit: str | None = None,
    ) -> None:
        if not isinstance(deployment, str) or not deployment.strip():
            raise ValidationError(f"AzureOpenAIEmbedder: deployment must be a non-empty str, got {deployment!r}")
        self.deployment = deployment
        self._azure = {
            "endpoint": azure_endpoint, "api_version": api_version, "token_provider": azure_ad_token_provider,
        }
        super().__init__(
            model or deployment,
            api_key=api_key,
            dimension=dimension,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            max_concurrency=max_concurrency,
            max_input_tokens=max_input_tokens,
            timeout=timeout,
            rate_limit=rate_limit,
        )
        self._request_model = deployment
        self.name = f"embed:azure:{deployment}"

    def _make_clients(
        self, api_key: SecretStr | str | None, base_url: str | None, timeout: float, rate_limit: str | None, where: str
    ) -> ClientPerLoop:
        where = f"AzureOpenAIEmbedder({self.deployment!r})"
        token_provider = self._azure["token_provider"]
        endpoint, api_version, key = azure_settings(
            endpoint=self._azure["endpoint"], api_version=self._azure["api_version"], api_key=api_key,
            token_provider=token_provider, where=where, endpoint_argument="azure_endpoint",
        )
        self.azure_endpoint, self.api_version = endpoint, api_version
        self._api_key = key
        self._token_provider = token_provider if key is None else None
        options: dict[str, Any] = {"azure_endpoint": endpoint, "api_version": api_version, "timeout": timeout,
                                   "max_retries": 0}
        if key is not None:
            options["api_key"] = key.get_secret_value()
        else:
            options["azure_ad_token_provider"] = token_provider
        return ClientPerLoop(rate_limit=rate_limit, azure=True, **options)

    def cache_key(self) -> str:
        """Class, endpoint, deployment, API version, model, dimension and a one-way digest of
        the key (or the Entra token provider's fingerprint)."""
        return key_of(
            f"{type(self).__module__}.{type(self).__qualname__}",
            settings=public_settings(self, exclude=("name",)),
            api_key=secret_digest(self._api_key),
            entra=fingerprint(self._token_provider) if self._token_provider is not None else "",
        )

    def __repr__(self) -> str:
        return (
            f"AzureOpenAIEmbedder(deployment={self.deployment!r}, model={self.model!r}, "
            f"dimension={self.dimension}, endpoint={self.azure_endpoint!r})"
        )


__all__ = ["AzureOpenAIEmbedder"]
