"""An offline chat model: answers by quoting the context it is given. No key, no network.

```python
from prefect_beluga import llms, schema
llm = llms.Factory().create_provider("offline", llms.Config(provider="offline"))
llm.generate([
    schema.SystemMessage("Context: Prefect schedules flows. Pinecone stores vectors."),
    schema.HumanMessage("What does Pinecone store?"),
]).content  # -> '[offline model] Pinecone stores vectors.'
```

It is what the main job uses when no API key is set: a RAG pipeline still runs end to end and
its answers are real sentences from the retrieved documents, labelled as coming from an offline
model rather than a language model. Given tools, it makes one deterministic tool call (see
`tool_call`) and then quotes the tool's results, so an agent runs without a key too.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from prefect_beluga.core._checks import check_int
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.llms.base import ChatModel
from prefect_beluga.llms.config import Config
from prefect_beluga.llms.servers import Capabilities
from prefect_beluga.schema import (
    AIMessage,
    AnyMessage,
    ChatResult,
    HumanMessage,
    ToolCall,
    Usage,
)
from prefect_beluga.tokens import count_message_tokens, count_tokens, truncate

#: Every reply of the offline model starts with this.
OFFLINE_PREFIX = "[offline model] "
#: The model name the offline model's replies report.
OFFLINE_MODEL = "offline-extractive"

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n|\n(?=\s*(?:[-*•]|\d+[.)]|\[\d+\]))")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STOPWORDS = frozenset(
    """a about above after again all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has
    have having he her here hers him his how i if in into is it its itself just me more most my no
    nor not of off on once only or other our out over own same she should so some such than that
    the their them then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours tell explain describe
    please give know question answer context use using based following""".split()
)


class OfflineChatModel(ChatModel):
    """An extractive, offline stand-in for a chat model.

    The question is the last human message; the context is everything before it (system
    prompts, retrieved documents, earlier turns) — or, when there is nothing before it, the
    rest of that message. The reply quotes the (at most `max_sentences`) context sentences that
    share the most words with the question — leaving out any sharing less than half as many as
    the best one — in their original order, after `OFFLINE_PREFIX`. When no
    sentence shares a word with the question, it says that it cannot answer from the context.
    Usage is counted with tiktoken.

    Args:
        config: Only `model_name` (default "offline-extractive") and `max_tokens` are used.
        max_sentences: How many sentences to quote at most.

    Examples:
        ```python
        from prefect_beluga.llms import OfflineChatModel

        llm = OfflineChatModel()
        llm.invoke({"input": "What is Prefect?", "system": "Prefect is an orchestrator."})
        # -> {'output': '[offline model] Prefect is an orchestrator.', 'usage': {...}, 'model': 'offline-extractive'}
        ```
    """

    #: It takes tools and a response format (and ignores the format), never a forced tool choice.
    capabilities = Capabilities(tool_choice=False)

    def __init__(self, config: Config | None = None, *, max_sentences: int = 3) -> None:
        if config is None:
            config = Config(provider="offline", model_name=OFFLINE_MODEL)
        elif not isinstance(config, Config):
            raise ValidationError(f"OfflineChatModel expects an llms.Config, got {type(config).__name__}")
        check_int(max_sentences, "max_sentences", low=1)
        # Whatever model a config names, the replies come from this extractive model (and are
        # priced as such, at nothing).
        if config.model_name != OFFLINE_MODEL:
            config = config.with_options(model_name=OFFLINE_MODEL)
        self.config = config if config.provider else config.with_options(provider="offline")
        self.max_sentences = max_sentences

    async def _agenerate(
        self,
        messages: list[AnyMessage],
        tools: list[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> ChatResult:
        call = self.tool_call(messages, tools or [])
        content = "" if call is not None else self.answer(messages)
        prompt = count_message_tokens(messages)
        completion = count_tokens(content or (call.arguments if call else ""))
        return ChatResult(
            message=AIMessage(content, tool_calls=(call,) if call is not None else ()),
            usage=Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
            model=self.config.model_name,
            finish_reason="tool_calls" if call is not None else "stop",
        )

    async def _astream(
        self,
        messages: list[AnyMessage],
        tools: list[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> AsyncIterator[str | ChatResult]:
        result = await self._agenerate(messages, tools, response_format)
        for piece in re.findall(r"\s*\S+", result.content):
            yield piece
        yield result

    def tool_call(self, messages: list[AnyMessage], tools: list[dict[str, Any]]) -> ToolCall | None:
        """The one tool call the offline model makes, if any: deterministic, no key needed.

        When the last message is the user's question, of the tools whose required arguments
        are all strings, the one whose name and description share the most content words with
        it (the first on a tie; the only one, if just one qualifies) is called with the
        question as its first string argument.
        Once tool results follow the question, the model answers by quoting them.
        """
        if not tools or not messages or not isinstance(messages[-1], HumanMessage):
            return None
        question = messages[-1].content
        wanted = _content_words(question)
        best: tuple[int, str, str] | None = None
        eligible: list[tuple[int, str, str]] = []
        for spec in tools:
            function = spec.get("function") if isinstance(spec, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                continue
            parameters = function.get("parameters") or {}
            properties = parameters.get("properties") or {}
            required = list(parameters.get("required") or [])
            texts = [k for k, v in properties.items() if isinstance(v, dict) and v.get("type") == "string"]
            if not texts or any(name not in texts for name in required):
                continue
            about = re.sub(r"[_-]", " ", function["name"]) + " " + str(function.get("description") or "")
            score = len(wanted & _content_words(about))
            eligible.append((score, function["name"], (required or texts)[0]))
            if score and (best is None or score > best[0]):
                best = eligible[-1]
        if best is None and len(eligible) == 1:
            best = eligible[0]  # the only tool it could call: called even without a shared word
        if best is None:
            return None
        _, name, argument = best
        call_id = "call_" + hashlib.sha256(f"{name}\n{question}".encode()).hexdigest()[:16]
        return ToolCall(id=call_id, name=name, arguments=json.dumps({argument: question}))

    def answer(self, messages: list[AnyMessage]) -> str:
        """The reply text for `messages`."""
        question, context = _split_question(messages)
        wanted = _content_words(question)
        scored = []
        for position, sentence in enumerate(_sentences(context)):
            overlap = len(wanted & _content_words(sentence))
            if overlap:
                scored.append((overlap, -position, sentence))
        if not scored:
            reply = (
                OFFLINE_PREFIX + "I can't answer that from the given context. (No API key is set, "
                "so this offline model can only quote the context it is given.)"
            )
        else:
            # The best sentences, leaving out those sharing less than half as many words.
            top = max(score for score, _, _ in scored)
            best = sorted((s for s in scored if 2 * s[0] >= top), reverse=True)[: self.max_sentences]
            chosen = [s for _, _, s in sorted(best, key=lambda item: -item[1])]
            reply = OFFLINE_PREFIX + " ".join(chosen)
        if self.config.max_tokens is not None:
            reply = truncate(reply, self.config.max_tokens)
        return reply


def _split_question(messages: list[AnyMessage]) -> tuple[str, str]:
    last_human = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=None)
    if last_human is None:
        return "", "\n\n".join(m.content for m in messages)
    question = messages[last_human].content
    context = "\n\n".join(m.content for i, m in enumerate(messages) if i != last_human and m.content)
    if not context.strip():
        # Context and question in one message: the question is its last sentence.
        sentences = _sentences(question)
        if len(sentences) > 1:
            asked = [s for s in sentences if s.rstrip().endswith("?")]
            question = asked[-1] if asked else sentences[-1]
            context = "\n\n".join(s for s in sentences if s is not question)
    return question, context


def _sentences(text: str) -> list[str]:
    parts = (" ".join(p.split()) for p in _SENTENCE_END.split(text))
    return [p for p in parts if len(p) > 1]


def _stem(word: str) -> str:
    """A crude stemmer: enough to match "stores" / "store", "scheduled" / "scheduling"."""
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    else:
        for suffix in ("ing", "ed", "s"):
            if len(word) > len(suffix) + 2 and word.endswith(suffix) and not word.endswith("ss"):
                word = word[: -len(suffix)]
                break
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


def _content_words(text: str) -> set[str]:
    return {_stem(w) for w in (m.lower() for m in _WORD.findall(text)) if w not in _STOPWORDS and len(w) > 1}


__all__ = ["OFFLINE_PREFIX", "OfflineChatModel"]
