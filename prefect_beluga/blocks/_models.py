"""The chat model and embedder blocks: a provider's settings saved in Prefect, `get_chat_model()` / `get_embedder()`."""

from __future__ import annotations

from typing import Any, Literal

from prefect.blocks.core import Block
from pydantic import Field

from prefect_beluga import llms
from prefect_beluga.blocks._credentials import OPENAI_LOGO, AzureOpenAICredentials, OpenAICredentials
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.embeddings import AzureOpenAIEmbedder, Embedder, HashingEmbedder, OpenAIEmbedder


class ChatModelBlock(Block):
    """A chat model's configuration: provider, model and sampling options, and its credentials.

    `get_chat_model()` builds the model through `llms.Factory`, so providers registered with
    `llms.Factory.register` work too. Provider "offline" needs no key and no network; provider
    "openai" without `credentials` reads `OPENAI_API_KEY` where the flow runs.

    Examples:
        Load a stored chat model and ask it something:
        ```python
        from prefect_beluga.blocks import ChatModelBlock

        chat_model_block = ChatModelBlock.load("BLOCK_NAME")
        llm = chat_model_block.get_chat_model()
        print(llm.generate("What is Prefect?").content)
        ```
    """

    _block_type_name = "Beluga Chat Model"
    _block_type_slug = "beluga-chat-model"
    _logo_url = OPENAI_LOGO
    _documentation_url = "https://platform.openai.com/docs/api-reference/chat"

    provider: str = Field(
        default="offline",
        description=(
            "Provider registered with prefect_beluga.llms.Factory: 'openai', 'azure_openai', 'offline', or your own."
        ),
    )
    model_name: str = Field(
        default="gpt-4o-mini", min_length=1, description="Model name, e.g. gpt-4o-mini; for Azure, the deployment."
    )
    server: str | None = Field(
        default=None,
        description=(
            "OpenAI-compatible server preset (ollama, vllm, groq, gemini, anthropic, compatible); empty for OpenAI."
        ),
    )
    capabilities: dict[str, bool] = Field(
        default_factory=dict, description='Overrides of the preset\'s capabilities, e.g. {"json_schema": false}.'
    )
    temperature: float | None = Field(
        default=None, ge=0.0, le=2.0, description="Sampling temperature from 0 to 2; empty for the provider's default."
    )
    max_tokens: int | None = Field(
        default=None, gt=0, description="Most tokens in a reply; empty for the provider's default."
    )
    timeout: float = Field(default=60.0, gt=0, description="Seconds one request may take.")
    options: dict[str, Any] = Field(
        default_factory=dict, description='Further request parameters sent as they are, e.g. {"top_p": 0.9, "seed": 1}.'
    )
    rate_limit: str | None = Field(
        default=None,
        min_length=1,
        description="Prefect rate limit (prefect_beluga.limits.ensure_rate_limit) each request takes a slot of.",
    )
    credentials: AzureOpenAICredentials | OpenAICredentials | None = Field(
        default=None,
        description="Key and address for the provider; empty reads the provider's key variable where the flow runs.",
    )

    def get_chat_model(self) -> llms.ChatModel:
        """The chat model, built with `llms.Factory().create_provider(provider, llms.Config(...))`.

        Raises:
            ValidationError: unknown provider (the message lists the known ones), or the provider
                rejects the configuration (e.g. "openai" without any key).
        """
        options = dict(self.options)
        api_key = base_url = api_version = None
        if isinstance(self.credentials, AzureOpenAICredentials):
            if self.provider != "azure_openai":
                raise ValidationError(
                    f"ChatModelBlock: Azure OpenAI credentials go with provider 'azure_openai', not {self.provider!r}"
                )
            api_key, base_url = self.credentials.api_key, self.credentials.azure_endpoint
            api_version = self.credentials.api_version
        elif self.credentials is not None:
            api_key, base_url = self.credentials.api_key, self.credentials.base_url
            if self.credentials.organization:  # sent as the header the SDK would send
                headers = {**options.get("extra_headers", {}), "OpenAI-Organization": self.credentials.organization}
                options["extra_headers"] = headers
        config = llms.Config(
            provider=self.provider,
            model_name=self.model_name,
            api_key=api_key,
            base_url=base_url,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            timeout=self.timeout,
            options=options,
            rate_limit=self.rate_limit,
            server=self.server,
            capabilities=self.capabilities,
            api_version=api_version,
        )
        return llms.Factory().create_provider(self.provider, config)


class EmbedderBlock(Block):
    """An embedder's configuration: OpenAI's embeddings API, or the offline hashing embedder.

    Use the same embedder for ingesting and for querying a store: the vectors must have the
    store's `dimension`. Provider "hashing" needs no key and no network (it matches words, not
    meanings); its `model_name`, `batch_size` and `max_concurrency` are not used.

    Examples:
        Load a stored embedder and embed a question:
        ```python
        from prefect_beluga.blocks import EmbedderBlock

        embedder_block = EmbedderBlock.load("BLOCK_NAME")
        embedder = embedder_block.get_embedder()
        vector = embedder.embed_query("What is Prefect?")
        ```
    """

    _block_type_name = "Beluga Embedder"
    _block_type_slug = "beluga-embedder"
    _logo_url = OPENAI_LOGO
    _documentation_url = "https://platform.openai.com/docs/guides/embeddings"

    provider: Literal["hashing", "openai", "azure_openai"] = Field(
        default="hashing",
        description="'openai' for OpenAI's embeddings API, 'azure_openai' for Azure's, 'hashing' for the offline one.",
    )
    model_name: str = Field(
        default="text-embedding-3-small",
        min_length=1,
        description="Embedding model, e.g. text-embedding-3-small; for Azure, the deployment.",
    )
    azure_model: str | None = Field(
        default=None,
        description="Azure: the model the deployment serves (vector size, tokenizer); empty: the deployment name.",
    )
    server: str | None = Field(
        default=None,
        description="OpenAI-compatible server preset (ollama, vllm, gemini, compatible); empty for OpenAI.",
    )
    dimension: int | None = Field(
        default=None,
        ge=1,
        description="Vector length; empty for the model's own (hashing: 384). text-embedding-3 models shorten to it.",
    )
    batch_size: int = Field(default=512, ge=1, le=2048, description="Most texts per embeddings request.")
    max_concurrency: int = Field(default=4, ge=1, description="Most embeddings requests in flight at once.")
    timeout: float = Field(default=60.0, gt=0, description="Seconds one request may take.")
    rate_limit: str | None = Field(
        default=None,
        min_length=1,
        description="Prefect rate limit (prefect_beluga.limits.ensure_rate_limit) each request takes a slot of.",
    )
    credentials: AzureOpenAICredentials | OpenAICredentials | None = Field(
        default=None, description="Key and address; empty reads the provider's key variable where the flow runs."
    )

    def get_embedder(self) -> Embedder:
        """The embedder: `OpenAIEmbedder` or `HashingEmbedder`.

        Raises:
            ValidationError: no OpenAI key, an unknown model without `dimension`, or an
                organization on the credentials (the OpenAI embedder cannot send one yet).
        """
        if self.provider == "hashing":
            return HashingEmbedder() if self.dimension is None else HashingEmbedder(self.dimension)
        credentials = self.credentials
        if self.provider == "azure_openai" or isinstance(credentials, AzureOpenAICredentials):
            if self.provider != "azure_openai" or (credentials is not None
                                                   and not isinstance(credentials, AzureOpenAICredentials)):
                raise ValidationError(
                    "EmbedderBlock: provider 'azure_openai' and AzureOpenAICredentials go together"
                )
            return AzureOpenAIEmbedder(
                self.model_name,
                model=self.azure_model,
                azure_endpoint=credentials.azure_endpoint if credentials else None,
                api_version=credentials.api_version if credentials else None,
                api_key=credentials.api_key if credentials else None,
                dimension=self.dimension,
                batch_size=self.batch_size,
                max_concurrency=self.max_concurrency,
                timeout=self.timeout,
                rate_limit=self.rate_limit,
            )
        if credentials is not None and credentials.organization:
            raise ValidationError(
                "EmbedderBlock: OpenAIEmbedder cannot send an organization; clear `organization` on the "
                "credentials block (requests then use the key's default organization)"
            )
        return OpenAIEmbedder(
            self.model_name,
            api_key=credentials.api_key if credentials else None,
            base_url=credentials.base_url if credentials else None,
            server=self.server,
            dimension=self.dimension,
            batch_size=self.batch_size,
            max_concurrency=self.max_concurrency,
            timeout=self.timeout,
            rate_limit=self.rate_limit,
        )


__all__ = ["ChatModelBlock", "EmbedderBlock"]
