"""A tool's JSON schema, from its function's signature and type hints (through pydantic) and
its docstring (the description, and each argument's from the `Args:` section)."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, create_model

from prefect_beluga.core.errors import ValidationError

#: What OpenAI accepts as a function name.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters)\s*:\s*$")
_SECTION_HEADER = re.compile(r"^\s*[A-Z][A-Za-z ]*:\s*$")
_ARG_LINE = re.compile(r"^\s*\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def check_name(name: Any) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(
            f"tool name {name!r} is not valid: use 1-64 letters, digits, '_' or '-' "
            f"(what OpenAI accepts); pass tool(name=...) to choose one"
        )


def model_name(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[_-]", name) if part) + "Arguments"


def model_from_signature(
    fn: Callable[..., Any], name: str, arg_docs: dict[str, str], namespace: dict[str, Any] | None = None
) -> type[BaseModel]:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"tool {name!r}: cannot read the signature of {fn!r}: {exc}") from None
    try:
        hints = typing.get_type_hints(fn, localns=namespace, include_extras=True)
    except (NameError, TypeError, AttributeError, SyntaxError) as exc:  # e.g. an unresolved forward reference
        raise ValidationError(f"tool {name!r}: cannot resolve the type hints of {fn!r}: {exc}") from None
    fields: dict[str, Any] = {}
    for index, parameter in enumerate(signature.parameters.values()):
        if index == 0 and parameter.name in ("self", "cls"):
            continue  # a method decorated in its class: bound on access (see `Tool.__get__`)
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ValidationError(
                f"tool {name!r}: *{parameter.name} / **{parameter.name} cannot be described to a model; "
                f"give every argument a name (and a type hint)"
            )
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise ValidationError(
                f"tool {name!r}: argument {parameter.name!r} is positional-only; tools are called by keyword"
            )
        if parameter.name not in hints:
            # Without a type the schema says nothing ({}), and models do not call such a tool.
            raise ValidationError(
                f"tool {name!r}: argument {parameter.name!r} has no type hint, so the model is told "
                f"nothing about it; annotate it (e.g. `{parameter.name}: str`, or `typing.Any` to "
                f"accept any JSON value)"
            )
        annotation = hints[parameter.name]
        default = ... if parameter.default is parameter.empty else parameter.default
        description = arg_docs.get(parameter.name)
        if description and not _has_field_description(annotation):
            fields[parameter.name] = (annotation, Field(default, description=description))
        else:
            fields[parameter.name] = (annotation, default)
    try:
        model = create_model(model_name(name), __config__=ConfigDict(extra="forbid"), **fields)
        model.model_json_schema()
    except (TypeError, ValueError, pydantic.PydanticUserError) as exc:  # a type pydantic cannot describe
        raise ValidationError(f"tool {name!r}: its arguments cannot be described as JSON schema: {exc}") from None
    return model


def _has_field_description(annotation: Any) -> bool:
    for extra in getattr(annotation, "__metadata__", ()):
        if getattr(extra, "description", None):
            return True
    return False


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    schema.setdefault("properties", {})
    return schema


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description (text before the first section) and the `Args:` entries of a docstring."""
    lines = doc.splitlines()
    text: list[str] = []
    args: dict[str, str] = {}
    index = 0
    while index < len(lines) and not _SECTION_HEADER.match(lines[index]):
        text.append(lines[index])
        index += 1
    current: str | None = None
    in_args = False
    base_indent: int | None = None
    for line in lines[index:]:
        if _ARGS_HEADER.match(line):
            in_args, current, base_indent = True, None, None
            continue
        if _SECTION_HEADER.match(line) and not line.startswith((" ", "\t")):
            in_args = False
            continue
        if not in_args or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        match = _ARG_LINE.match(line)
        if match and (base_indent is None or indent <= base_indent):
            base_indent = indent
            current = match.group(1)
            args[current] = match.group(2).strip()
        elif current is not None:
            args[current] = f"{args[current]} {line.strip()}".strip()
    return "\n".join(text).strip(), args
