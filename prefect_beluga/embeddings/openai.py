"""OpenAI embeddings through the official SDK, batched by count and by token budget.

```python
# example: not run (needs a real OPENAI_API_KEY and the network)
from prefect_beluga.embeddings import OpenAIEmbedder

embedder = OpenAIEmbedder()                       # key: OPENAI_API_KEY
vectors = embedder.embed_documents(["Prefect runs flows.", "Pinecone stores vectors."])
len(vectors), len(vectors[0])  # -> (2, 1536)
```

Texts are grouped into requests of at most `batch_size` inputs and `max_batch_tokens` tokens
(counted with tiktoken, offline, wherever a text's length in bytes does not settle it); the
requests run concurrently, at most `max_concurrency` at a time, and the vectors come back in
input order. A text longer than the model's per-input limit (8191 tokens) is rejected with a
`ValidationError` naming its index — it is not split or cut, since one input must give one
vector (split long documents first, e.g. with `prefect_beluga.tokens.split_by_tokens`). As with
the chat model, the SDK's retries are off: the Prefect retry policy of the step retries failed
calls (429/5xx/connection errors).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import sys
from array import array
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import SecretStr

from prefect_beluga._openai_client import ClientPerLoop, check_rate_limit_name, resolve_api_key, scrub_key
from prefect_beluga._openai_servers import PLACEHOLDER_KEY, server_preset
from prefect_beluga.core import _telemetry
from prefect_beluga.core._checks import check_int, check_number
from prefect_beluga.core.errors import ProviderResponseError, ValidationError
from prefect_beluga.core.fingerprint import key_of, public_settings, secret_digest
from prefect_beluga.embeddings.base import Embedder, check_texts
from prefect_beluga.tokens import encoding_for

#: Native vector sizes of OpenAI's embedding models.
MODEL_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}

#: OpenAI's limits: tokens per input, inputs per request, tokens per request.
MAX_INPUT_TOKENS = 8191
MAX_BATCH_SIZE = 2048
MAX_BATCH_TOKENS = 300_000


class OpenAIEmbedder(Embedder):
    """Embeddings from OpenAI's API (or a compatible server, via `base_url`).

    Args:
        model: Embedding model name.
        api_key: API key; `OPENAI_API_KEY` is read when None. Missing both is a ValidationError.
        base_url: API root of an OpenAI-compatible server.
        dimension: Vector size. For text-embedding-3 models a size below the native one is
            requested from the API (`dimensions`); for other models it is only checked. Required
            for models not in `MODEL_DIMENSIONS`.
        batch_size: Most inputs per request (OpenAI allows 2048).
        max_batch_tokens: Most tokens per request (OpenAI allows 300,000).
        max_concurrency: Most requests in flight at once, per `embed_documents` call.
        max_input_tokens: Longest input accepted, in tokens (the model's limit: 8191).
        timeout: Seconds one HTTP request may take.
        rate_limit: Name of a rate limit (`prefect_beluga.limits.ensure_rate_limit`): every
            HTTP request, retries included, takes one of its slots first.
        server: An OpenAI-compatible server preset (`prefect_beluga.llms.servers`): its usual
            base URL and key variable; a preset without embeddings (Groq, Anthropic) is a
            `ValidationError` naming it.

    Examples:
        ```python
        from prefect_beluga.embeddings import OpenAIEmbedder
        from prefect_beluga.testing import OpenAIServer

        OpenAIEmbedder("text-embedding-3-small", dimension=256, max_concurrency=8,
                       api_key="sk-...")   # or OPENAI_API_KEY
        with OpenAIServer() as server:   # loopback tests
            OpenAIEmbedder(base_url=server.base_url, api_key="sk-test").embed_query("hi")
        OpenAIEmbedder("nomic-embed-text", server="ollama", dimension=768)
        ```
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        api_key: SecretStr | str | None = None,
        base_url: str | None = None,
        dimension: int | None = None,
        batch_size: int = 512,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        max_concurrency: int = 4,
        max_input_tokens: int = MAX_INPUT_TOKENS,
        timeout: float = 60.0,
        rate_limit: str | None = None,
        server: str | None = None,
    ) -> None:
        where = f"{type(self).__name__}({model!r})"
        self.rate_limit = check_rate_limit_name(rate_limit, where=where)
        if not isinstance(model, str) or not model:
            raise ValidationError(f"OpenAIEmbedder: model must be a non-empty str, got {model!r}")
        for option, value, low, high in (
            ("batch_size", batch_size, 1, MAX_BATCH_SIZE),
            ("max_batch_tokens", max_batch_tokens, 1, None),
            ("max_concurrency", max_concurrency, 1, None),
            ("max_input_tokens", max_input_tokens, 1, None),
        ):
            check_int(value, f"{where}: {option}", low=low, high=high)
        if max_input_tokens > max_batch_tokens:
            raise ValidationError(
                f"{where}: max_input_tokens ({max_input_tokens}) exceeds max_batch_tokens "
                f"({max_batch_tokens}): an input that long could never be sent"
            )
        native = MODEL_DIMENSIONS.get(model)
        if dimension is None:
            if native is None:
                raise ValidationError(
                    f"{where}: unknown model, so its vector size is unknown; pass dimension="
                )
            dimension = native
        check_int(dimension, f"{where}: dimension", low=1)
        check_number(timeout, f"{where}: timeout", seconds=True)
        self.model = model
        self.dimension = dimension
        self._server = server_preset(server, where=where).name if server is not None else None
        self.base_url = base_url
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_concurrency = max_concurrency
        self.max_input_tokens = max_input_tokens
        self.name = f"embed:{model}"
        # Ask the API for the size only where it can shorten vectors (text-embedding-3).
        self._send_dimensions = model.startswith("text-embedding-3") and dimension != native
        self._request_model = model  # the `model` sent (Azure: the deployment)
        self._clients = self._make_clients(api_key, base_url, timeout, rate_limit, where)

    def _make_clients(
        self, api_key: SecretStr | str | None, base_url: str | None, timeout: float, rate_limit: str | None, where: str
    ) -> ClientPerLoop:
        preset = server_preset(self._server, where=where)
        if not preset.capabilities.embeddings:
            raise ValidationError(
                f"{where}: server preset {preset.name!r} ({preset.title}) offers no embeddings endpoint "
                f"(see {preset.docs[0]}); use another embedder, e.g. the offline HashingEmbedder or a server "
                "that has one"
            )
        if self._server is not None:
            if base_url is None and preset.base_url is None:
                raise ValidationError(f"{where}: server preset {preset.name!r} has no usual address; pass base_url=...")
            base_url = base_url or preset.base_url
            self.base_url = base_url
        self._api_key: SecretStr | None = resolve_api_key(
            api_key, where=where, env=preset.api_key_env or "OPENAI_API_KEY",
            placeholder=None if preset.key_required else PLACEHOLDER_KEY,
            title=preset.title if preset.name != "openai" else "OpenAI",
        )
        return ClientPerLoop(
            rate_limit=rate_limit,
            api_key=self._api_key.get_secret_value(), base_url=base_url, timeout=timeout, max_retries=0
        )

    def cache_key(self) -> str:
        """`Embedder.cache_key`, and the server preset when one is named."""
        extra = {"server": self._server} if self._server is not None else {}
        return key_of(
            f"{type(self).__module__}.{type(self).__qualname__}",
            settings=public_settings(self, exclude=("name",)),
            api_key=secret_digest(self._api_key),
            **extra,
        )

    def __repr__(self) -> str:
        base = f", base_url={self.base_url!r}" if self.base_url else ""
        return f"OpenAIEmbedder(model={self.model!r}, dimension={self.dimension}{base})"

    def batches(self, texts: Sequence[str]) -> list[list[int]]:
        """The indexes of `texts` grouped into requests (by count and token budget).

        The same batches as counting every text with tiktoken, but a text is tokenized only
        when its UTF-8 length (an upper bound on its tokens) could break a limit.

        Raises:
            ValidationError: a text is empty or longer than `max_input_tokens` (named by index).
        """
        texts = check_texts(texts, where=f"{self!r}")
        encoding = encoding_for(self.model)
        batches: list[list[int]] = []
        current: list[int] = []
        budget = 0  # tokens in `current`: upper bounds for the members in `loose`, else exact
        loose: list[tuple[int, int]] = []  # (index, bound) of members not tokenized yet
        for index, text in enumerate(texts):
            if not text.strip():
                raise ValidationError(f"{self!r}: text {index} is empty; the API rejects empty inputs")
            # Every token is at least one byte, so the UTF-8 length bounds the token count;
            # tokenizing (slow) is needed only where that bound would break a limit.
            size, exact = len(text.encode("utf-8", "surrogatepass")), False
            if size > self.max_input_tokens:
                size, exact = len(encoding.encode_ordinary(text)), True
                if size > self.max_input_tokens:
                    raise ValidationError(
                        f"{self!r}: text {index} is {size} tokens, over the model's limit of "
                        f"{self.max_input_tokens}; split it first (e.g. prefect_beluga.tokens.split_by_tokens)"
                    )
            if current and len(current) < self.batch_size and budget + size > self.max_batch_tokens:
                budget -= sum(bound - len(encoding.encode_ordinary(texts[i])) for i, bound in loose)
                loose = []
                if not exact:
                    size, exact = len(encoding.encode_ordinary(text)), True
            if current and (len(current) >= self.batch_size or budget + size > self.max_batch_tokens):
                batches.append(current)
                current, budget, loose = [], 0, []
            current.append(index)
            budget += size
            if not exact:
                loose.append((index, size))
        if current:
            batches.append(current)
        return batches

    async def aembed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors for `texts`, in input order; `[]` for no texts."""
        texts = check_texts(texts, where=f"{self!r}")
        if not texts:
            return []
        batches = self.batches(texts)
        limit = asyncio.Semaphore(self.max_concurrency)
        results: list[list[float] | None] = [None] * len(texts)

        async def run(indexes: list[int]) -> None:
            async with limit:
                vectors = await self._request([texts[i] for i in indexes])
            for index, vector in zip(indexes, vectors, strict=True):
                results[index] = vector

        tasks = [asyncio.ensure_future(run(b)) for b in batches]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return results  # type: ignore[return-value]

    async def _request(self, batch: list[str]) -> list[list[float]]:
        # An `embeddings` span and metrics when an OpenTelemetry SDK is configured (core/_telemetry.py).
        provider = "azure_openai" if getattr(self, "azure_endpoint", None) else "openai"
        with _telemetry.embeddings_call(
            provider=provider, model=self._request_model, inputs=len(batch), dimension=self.dimension,
            base_url=getattr(self, "azure_endpoint", None) or self.base_url or "https://api.openai.com/v1",
            server=self._server, secret=getattr(self, "_api_key", None),
        ) as span:
            return await self._request_batch(batch, span)

    async def _request_batch(self, batch: list[str], span: Any) -> list[list[float]]:
        body: dict[str, Any] = {"model": self._request_model, "input": batch, "encoding_format": "base64"}
        if self._send_dimensions:
            body["dimensions"] = self.dimension
        client = self._clients.get()
        try:
            # The SDK's `post` (auth, timeouts, its error types) without `embeddings.create`'s
            # typed walk over every input and model object per vector: ~1 ms per input.
            response = await client.post("/embeddings", body=body, cast_to=httpx.Response)
            payload = response.json()
            usage = payload.get("usage") if isinstance(payload, dict) else None
            span.embeddings_result(usage.get("prompt_tokens") if isinstance(usage, dict) else None)
        except json.JSONDecodeError as exc:
            raise ProviderResponseError(
                f"{self!r}: the server's reply is not valid JSON ({exc.msg} at char {exc.pos})"
            ) from None
        except Exception as exc:
            scrub_key(exc, self._api_key)  # in place: the same exception, without the key
            raise
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list) or len(data) != len(batch):
            count = len(data) if isinstance(data, list) else "no"
            raise ProviderResponseError(f"{self!r}: the server returned {count} embeddings for {len(batch)} inputs")
        try:
            data.sort(key=lambda item: item["index"])
            vectors = [_decode(item["embedding"]) for item in data]
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ProviderResponseError(f"{self!r}: the server's reply has a malformed embedding ({exc!r})") from None
        for vector in vectors:
            if len(vector) != self.dimension:
                raise ValidationError(
                    f"{self!r}: the server returned vectors of dimension {len(vector)}, expected "
                    f"{self.dimension}; set dimension= to the model's vector size"
                )
        return vectors


def _decode(embedding: str | list[float]) -> list[float]:
    """One embedding as floats: base64 of little-endian float32 (as asked), or a JSON list."""
    if isinstance(embedding, list):
        return [float(v) for v in embedding]
    values = array("f", base64.b64decode(embedding, validate=True))
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


__all__ = ["MAX_BATCH_SIZE", "MAX_BATCH_TOKENS", "MAX_INPUT_TOKENS", "MODEL_DIMENSIONS", "OpenAIEmbedder"]
