"""Value-based fingerprints of steps and canonical JSON of their inputs (the cross-run cache's keys).

A cache key must depend on values only, never on object identity or pickles, and must never
let two API keys share a result. This module computes the pieces (no Prefect import):

- `canonical_json(value)`: JSON with sorted keys; pydantic models (documents, messages) by
  value (`model_dump(mode="json")`); `NoCanonicalForm` for anything else.
- `fingerprint(obj)`: what a step *is*. A Runnable that defines `cache_key() -> str` gives it
  (the library's chat models, embedders and RAG steps do, from provider, model, parameters, base
  URL and `secret_digest` of the API key); any other object falls back to its class qualname,
  a hash of its class's source and the fingerprints of the values it holds (through `vars()`):
  objects with `cache_key()` contribute it, JSON-able values their JSON, secrets their digest,
  functions their qualified name, source hash and captured values (a captured list, dict or
  set counts by its type only: it is working state), Runnables recurse, the rest their type.
- `secret_digest(secret)`: a one-way sha256 of an API key. The key itself never enters a
  fingerprint, and a fingerprint is itself hashed again before it is used as a key.

Examples:
    ```python
    from prefect_beluga.core.fingerprint import canonical_json, fingerprint
    from prefect_beluga.llms import OpenAIChatModel
    from prefect_beluga.schema import Document

    fingerprint(OpenAIChatModel(model_name="gpt-4o-mini", temperature=0.2, api_key="sk-..."))
    canonical_json({"input": "What is Prefect?", "documents": [Document(page_content="...")]})
    ```
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

# Bump when the fingerprint or key layout changes: old entries then simply miss.
FORMAT_VERSION = "1"
_MAX_DEPTH = 8


class NoCanonicalForm(TypeError):
    """A value has no canonical JSON form (so a step's input cannot be keyed by value)."""


def sha256(text: str | bytes) -> str:
    """The hex sha256 of `text` (UTF-8 for a str)."""
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def secret_digest(secret: SecretStr | SecretBytes | str | bytes | None) -> str:
    """A one-way digest of a secret (an API key), or "" for none. The secret is not kept."""
    if secret is None:
        return ""
    if isinstance(secret, (SecretStr, SecretBytes)):
        secret = secret.get_secret_value()
    if not secret:
        return ""
    return "sha256:" + sha256(secret)


def to_canonical(value: Any) -> Any:
    """`value` as plain JSON data with a stable form, or `NoCanonicalForm`.

    Dicts need str keys; tuples become lists; floats must be finite; pydantic models are dumped
    by value (a `SecretStr` field becomes its digest, never its value).
    """
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NoCanonicalForm(f"a non-finite float ({value!r})")
        return value
    if isinstance(value, (SecretStr, SecretBytes)):
        return {"__secret__": secret_digest(value)}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NoCanonicalForm(f"a dict key of type {type(key).__name__} ({key!r:.40})")
            out[key] = to_canonical(item)
        return out
    if isinstance(value, (list, tuple)):
        return [to_canonical(item) for item in value]
    if isinstance(value, BaseModel):
        fields = {name: to_canonical(getattr(value, name)) for name in type(value).model_fields}
        return {"__model__": _qualname(type(value)), **fields}
    raise NoCanonicalForm(f"a value of type {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """The canonical JSON text of `value` (sorted keys, no spaces); `NoCanonicalForm` if none."""
    return json.dumps(to_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(obj: Any) -> str:
    """A digest of what `obj` is, made from values only (see the module docstring)."""
    return sha256(json.dumps(_describe(obj, 0, set()), sort_keys=True, separators=(",", ":")))


def own_cache_key(obj: Any) -> str | None:
    """`obj.cache_key()` when `obj` defines one (a str), else None."""
    method = getattr(type(obj), "cache_key", None)
    if method is None or isinstance(obj, type):
        return None
    key = obj.cache_key()
    if not isinstance(key, str):
        raise TypeError(f"{type(obj).__name__}.cache_key() must return a str, got {type(key).__name__}")
    return key


def key_of(kind: str, **values: Any) -> str:
    """A `cache_key()` made of `kind` and JSON values (for library classes' `cache_key`)."""
    return f"{kind}:" + sha256(canonical_json(values))


def public_settings(obj: Any, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """`obj`'s public attributes that have a canonical JSON form (secrets as digests)."""
    settings = {}
    for name, value in vars(obj).items():
        if name.startswith("_") or name in exclude:
            continue
        try:
            settings[name] = to_canonical(value)
        except NoCanonicalForm:
            continue
    return settings


def _describe(obj: Any, depth: int, seen: set[int]) -> Any:
    if depth > _MAX_DEPTH:
        return {"__type__": _qualname(type(obj))}
    key = own_cache_key(obj)
    if key is not None:
        return {"__key__": key}
    try:
        return {"__json__": to_canonical(obj)}
    except NoCanonicalForm:
        pass
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return _describe_function(obj, depth, seen)
    if isinstance(obj, functools.partial):
        return {
            "__partial__": _describe(obj.func, depth + 1, seen),
            "args": [_describe(a, depth + 1, seen) for a in obj.args],
            "kwargs": {k: _describe(v, depth + 1, seen) for k, v in sorted(obj.keywords.items())},
        }
    if isinstance(obj, Mapping):
        return {"__map__": {str(k): _describe(v, depth + 1, seen) for k, v in obj.items()}}
    if isinstance(obj, (list, tuple)):
        return [_describe(item, depth + 1, seen) for item in obj]
    if isinstance(obj, BaseModel):
        return {
            "__model__": _qualname(type(obj)),
            "fields": {n: _describe(getattr(obj, n), depth + 1, seen) for n in type(obj).model_fields},
        }
    attributes = getattr(obj, "__dict__", None)
    if attributes is None or id(obj) in seen or not _is_value_object(obj):
        return {"__type__": _qualname(type(obj))}
    seen = seen | {id(obj)}
    return {
        "__class__": _qualname(type(obj)),
        "source": _class_source_digest(type(obj)),
        "vars": {
            name: _describe(value, depth + 1, seen)
            for name, value in sorted(attributes.items())
            if not name.startswith("__")
        },
    }


def _is_value_object(obj: Any) -> bool:
    """Objects whose attributes describe them: Runnables and plain user classes, not modules,
    classes, locks, clients or other library internals."""
    if inspect.ismodule(obj) or isinstance(obj, type):
        return False
    module = type(obj).__module__ or ""
    if module.split(".")[0] in ("builtins", "threading", "asyncio", "httpx", "openai", "numpy", "prefect"):
        return False
    return True


def _describe_function(func: Any, depth: int, seen: set[int]) -> Any:
    target = getattr(func, "__func__", func)
    described: dict[str, Any] = {"__function__": _qualname(target), "source": _source_digest(target)}
    bound = getattr(func, "__self__", None)
    if bound is not None:
        described["self"] = _describe(bound, depth + 1, seen)
    closure = getattr(target, "__closure__", None) or ()
    names = getattr(getattr(target, "__code__", None), "co_freevars", ())
    cells = {}
    for name, cell in zip(names, closure, strict=False):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            cells[name] = None
            continue
        # A captured list/dict/set is working state (results collected, counters), not settings.
        mutable = isinstance(value, (list, dict, set)) and own_cache_key(value) is None
        cells[name] = {"__type__": _qualname(type(value))} if mutable else _describe(value, depth + 1, seen)
    if cells:
        described["closure"] = cells
    return described


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


@functools.lru_cache(maxsize=1024)
def _class_source_digest(cls: type) -> str:
    """A hash of the sources of `cls` and its bases up to (not including) the library's Runnable."""
    parts = []
    for klass in cls.__mro__:
        if klass.__module__.startswith("prefect_beluga.core") or klass is object:
            break
        parts.append(_source_digest(klass))
    return sha256("|".join(parts))


@functools.lru_cache(maxsize=4096)
def _source_digest(obj: Any) -> str:
    """A hash of `obj`'s source text and, for a function, of its compiled code (two lambdas on
    one line share a source line, not their code)."""
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        source = ""
    code = getattr(obj, "__code__", None)
    return sha256(source + "\x1f" + (_code_digest(code) if code is not None else ""))


def _code_digest(code: Any) -> str:
    """A stable hash of a code object: bytecode, names and constants (nested code recursively;
    never a repr, which holds memory addresses)."""
    consts = [
        _code_digest(c) if inspect.iscode(c) else repr(sorted(map(repr, c))) if isinstance(c, frozenset) else repr(c)
        for c in code.co_consts
    ]
    return sha256(code.co_code + repr((code.co_names, code.co_varnames, consts)).encode())


__all__ = [
    "FORMAT_VERSION",
    "NoCanonicalForm",
    "canonical_json",
    "fingerprint",
    "key_of",
    "own_cache_key",
    "public_settings",
    "secret_digest",
    "sha256",
]
