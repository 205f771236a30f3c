"""Chat messages: system, human, AI and tool turns."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class BaseMessage(BaseModel):
    """One turn of a conversation. Positional content works: `HumanMessage("hi")`."""

    model_config = ConfigDict(frozen=True)

    role: ClassVar[str]
    content: str
    name: str | None = None

    def __init__(self, content: str | None = None, /, **data: Any) -> None:
        if content is not None:
            data["content"] = content
        super().__init__(**data)

    def to_openai(self) -> dict[str, Any]:
        """The message in the shape of OpenAI's chat completions API."""
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name:
            message["name"] = self.name
        return message


class SystemMessage(BaseMessage):
    """Instructions for the model."""

    role: ClassVar[str] = "system"
    type: Literal["system"] = "system"


class HumanMessage(BaseMessage):
    """What the user said."""

    role: ClassVar[str] = "user"
    type: Literal["human"] = "human"


class ToolCall(BaseModel):
    """A tool the model asked to call."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: str = Field(description="JSON-encoded arguments, as the model produced them.")


class AIMessage(BaseMessage):
    """What the model answered (possibly tool calls)."""

    role: ClassVar[str] = "assistant"
    type: Literal["ai"] = "ai"
    tool_calls: tuple[ToolCall, ...] = ()

    def to_openai(self) -> dict[str, Any]:
        message = super().to_openai()
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return message


class ToolMessage(BaseMessage):
    """The result of a tool call, sent back to the model."""

    role: ClassVar[str] = "tool"
    type: Literal["tool"] = "tool"
    tool_call_id: str

    def to_openai(self) -> dict[str, Any]:
        return {**super().to_openai(), "tool_call_id": self.tool_call_id}


AnyMessage = SystemMessage | HumanMessage | AIMessage | ToolMessage


__all__ = ["AIMessage", "AnyMessage", "BaseMessage", "HumanMessage", "SystemMessage", "ToolCall", "ToolMessage"]
