"""Credentials blocks: OpenAI, Azure OpenAI and Pinecone keys as `SecretStr`, each with `get_client()`."""

from __future__ import annotations

from typing import Any

from prefect.blocks.abstract import CredentialsBlock
from pydantic import Field, SecretStr, field_validator

from prefect_beluga._openai_client import DEFAULT_BASE_URL
from prefect_beluga.llms.config import http_url

OPENAI_LOGO = (
    "https://images.ctfassets.net/gm98wzqotmnx/QE8JwcbZBmIfiognXDLcY/"
    "2bcd4c759f877d37159f576101218b49/open-ai-logo-8B9BFEDC26-seeklogo.com.png?h=250"
)


class OpenAICredentials(CredentialsBlock):
    """An OpenAI API key, and where to send requests (api.openai.com or a compatible server).

    Referenced by `ChatModelBlock` and `EmbedderBlock`, so one key serves both and is changed in
    one place.

    Examples:
        Load stored OpenAI credentials:
        ```python
        from prefect_beluga.blocks import OpenAICredentials

        openai_credentials = OpenAICredentials.load("BLOCK_NAME")
        client = openai_credentials.get_client()
        ```
    """

    _block_type_name = "Beluga OpenAI Credentials"
    _block_type_slug = "beluga-openai-credentials"
    _logo_url = OPENAI_LOGO
    _documentation_url = "https://platform.openai.com/docs/api-reference/authentication"

    api_key: SecretStr = Field(default=..., title="API Key", description="The OpenAI API key.")
    base_url: str | None = Field(
        default=None,
        title="Base URL",
        description="API root of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1; empty for api.openai.com.",
    )
    organization: str | None = Field(
        default=None, description="OpenAI organization the requests are billed to; empty for the key's default."
    )

    @field_validator("base_url")
    @classmethod
    def _base_url_http(cls, value: str | None) -> str | None:
        return http_url(value)

    def get_client(self) -> Any:
        """An `openai.OpenAI` client with this key, base URL and organization."""
        import openai

        return openai.OpenAI(
            api_key=self.api_key.get_secret_value(),
            base_url=self.base_url or DEFAULT_BASE_URL,
            organization=self.organization,
        )


class AzureOpenAICredentials(CredentialsBlock):
    """An Azure OpenAI resource: its endpoint, API version and key.

    Referenced by `ChatModelBlock` and `EmbedderBlock` (provider "azure_openai"), whose
    `model_name` is then the deployment name. Without a key, the flow reads
    `AZURE_OPENAI_API_KEY` where it runs (a Microsoft Entra token provider is a callable, which
    a block cannot store: pass it to `llms.Config(azure_ad_token_provider=...)` in code).

    Examples:
        Load stored Azure OpenAI credentials:
        ```python
        from prefect_beluga.blocks import AzureOpenAICredentials

        azure_open_ai_credentials = AzureOpenAICredentials.load("BLOCK_NAME")
        client = azure_open_ai_credentials.get_client()
        ```
    """

    _block_type_name = "Beluga Azure OpenAI Credentials"
    _block_type_slug = "beluga-azure-openai-credentials"
    _logo_url = OPENAI_LOGO
    _documentation_url = "https://learn.microsoft.com/en-us/azure/ai-foundry/openai/reference"

    azure_endpoint: str = Field(
        default=...,
        title="Endpoint",
        description="The resource endpoint, e.g. https://NAME.openai.azure.com.",
    )
    api_version: str = Field(
        default="2024-10-21", min_length=1, title="API Version", description="The Azure OpenAI API version."
    )
    api_key: SecretStr | None = Field(
        default=None,
        title="API Key",
        description="The resource key; empty reads AZURE_OPENAI_API_KEY where the flow runs.",
    )

    @field_validator("azure_endpoint")
    @classmethod
    def _endpoint_http(cls, value: str) -> str:
        return http_url(value) or value

    def get_client(self) -> Any:
        """An `openai.AzureOpenAI` client for this resource (the SDK's retries are its own here)."""
        import openai

        from prefect_beluga._openai_client import azure_settings

        endpoint, api_version, key = azure_settings(
            endpoint=self.azure_endpoint, api_version=self.api_version, api_key=self.api_key, token_provider=None,
            where="AzureOpenAICredentials", endpoint_argument="azure_endpoint",
        )
        return openai.AzureOpenAI(azure_endpoint=endpoint, api_version=api_version, api_key=key.get_secret_value())


class PineconeCredentials(CredentialsBlock):
    """A Pinecone API key.

    Examples:
        Load stored Pinecone credentials:
        ```python
        from prefect_beluga.blocks import PineconeCredentials

        pinecone_credentials = PineconeCredentials.load("BLOCK_NAME")
        pc = pinecone_credentials.get_client()
        ```
    """

    _block_type_name = "Beluga Pinecone Credentials"
    _block_type_slug = "beluga-pinecone-credentials"
    _documentation_url = "https://docs.pinecone.io/guides/projects/manage-api-keys"

    api_key: SecretStr = Field(default=..., title="API Key", description="The Pinecone API key.")

    def get_client(self) -> Any:
        """A `pinecone.Pinecone` client with this key."""
        from pinecone import Pinecone

        return Pinecone(api_key=self.api_key.get_secret_value())


__all__ = ["OPENAI_LOGO", "AzureOpenAICredentials", "OpenAICredentials", "PineconeCredentials"]
