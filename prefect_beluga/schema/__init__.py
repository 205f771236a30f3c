"""Messages, documents and chat results: the data the AI components exchange."""

from prefect_beluga.schema.documents import Document
from prefect_beluga.schema.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from prefect_beluga.schema.results import ChatResult, Usage

__all__ = [
    "AIMessage",
    "AnyMessage",
    "BaseMessage",
    "ChatResult",
    "Document",
    "HumanMessage",
    "SystemMessage",
    "ToolCall",
    "ToolMessage",
    "Usage",
]
