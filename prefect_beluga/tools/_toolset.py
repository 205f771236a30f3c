"""`Toolset`: tools known only once a run starts (an MCP server's), opened once per agent run."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

from prefect_beluga.tools._tool import Tool


class Toolset(ABC):
    """Tools listed at run time by something outside the process (an MCP server).

    An agent opens each of its toolsets once per run, when the run starts (`open()`, an async
    context manager yielding the `ToolsetSession`), asks it for its tools before each model turn
    and closes it when the run ends, whether it returns, fails or is cancelled. Its tools are
    `Tool`s: their calls run as sub-steps (Prefect task runs) like any tool's.

    Attributes:
        name: What the toolset is called in messages (e.g. the server's command or URL host).
    """

    name: str

    @abstractmethod
    def open(self) -> AbstractAsyncContextManager[ToolsetSession]:
        """A session for one run: entered when the run starts, exited when it ends."""

    @abstractmethod
    def cache_key(self) -> str:
        """What the toolset is, for the agent's cross-run cache key (never a secret)."""


class ToolsetSession(ABC):
    """An open toolset: the tools it offers now."""

    @abstractmethod
    async def tools(self) -> Sequence[Tool]:
        """The tools, listed once per session (and again after the server says they changed)."""
