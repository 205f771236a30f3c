"""What a chat model returns."""

from __future__ import annotations

from pydantic import BaseModel

from prefect_beluga.schema.messages import AIMessage


class Usage(BaseModel):
    """Token counts of one model call.

    `estimated` is True when the server did not report usage (a stream without usage, a
    server that never counts) and the counts are a local tiktoken estimate.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = False

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            estimated=self.estimated or other.estimated,
        )


class ChatResult(BaseModel):
    """A model's reply: `content` (str), the full `message`, token `usage`, and the model."""

    message: AIMessage
    usage: Usage = Usage()
    model: str = ""
    finish_reason: str | None = None

    @property
    def content(self) -> str:
        return self.message.content


__all__ = ["ChatResult", "Usage"]
