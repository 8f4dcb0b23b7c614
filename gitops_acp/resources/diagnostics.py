"""Turn pydantic's validation errors into the short sentences a person editing YAML needs.

pydantic says "Input should be a valid integer, unable to parse string as an integer
[type=int_parsing, input_value='ten', input_type=str]"; the person wants `spec.limits.maxTurns: must
be an integer`. This module owns that translation (and the field listing for unknown fields) so
the loader, `from_document` and any later reader word errors the same way. It never repeats an
input value: the value may be a secret.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from gitops_acp.resources import secretscan

__all__ = ["allowed_fields", "describe", "format_loc"]

Loc = tuple[int | str, ...]

_SECRETS_WHERE = "(the value goes in --secrets-dir or the environment)"


def format_loc(loc: Loc) -> str:
    """Return a field path as written in YAML: `spec.env[0].valueFrom`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe(error: ErrorDetails, *, model: type[BaseModel], kind: str) -> str:
    """Return a one-line message (without the field path) for one pydantic error on `model`."""
    kind_of_error = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    loc = tuple(error["loc"])
    if kind_of_error == "extra_forbidden":
        return _unknown_field(loc, error.get("input"), model=model, kind=kind)
    if kind_of_error in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    simple = _SIMPLE.get(kind_of_error)
    if simple is not None:
        return simple
    if kind_of_error in ("literal_error", "enum"):
        return f"must be one of {_expected(str(ctx.get('expected', '')))}"
    for prefix, template in _BOUNDS:
        if kind_of_error.startswith(prefix):
            return template.format(**ctx)
    if kind_of_error == "string_pattern_mismatch":
        return f"must match the pattern {ctx.get('pattern')}"
    # Anything not translated above: pydantic's own sentence, which never contains the input.
    message = error["msg"]
    return message[:1].lower() + message[1:]


_SIMPLE = {
    "missing": "field required",
    "string_type": "must be a string (quote it if YAML read it as a number, date or boolean)",
    "string_unicode": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "none_required": "must be empty",
}
_BOUNDS = (
    ("string_too_short", "must not be empty"),
    ("string_too_long", "must be at most {max_length} characters"),
    ("too_short", "must have at least {min_length} item(s)"),
    ("too_long", "must have at most {max_length} item(s)"),
    ("greater_than_equal", "must be at least {ge}"),
    ("greater_than", "must be greater than {gt}"),
    ("less_than_equal", "must be at most {le}"),
    ("less_than", "must be less than {lt}"),
)


def _expected(text: str) -> str:
    """Return pydantic's "'a', 'b' or 'c'" as "a, b, c"."""
    return ", ".join(part.strip("'\" ") for part in re.split(r",| or ", text) if part.strip("'\" "))


def _unknown_field(loc: Loc, value: object, *, model: type[BaseModel], kind: str) -> str:
    """Explain an unknown field: a literal secret, a typo, or a field that does not exist."""
    field = str(loc[-1]) if loc else ""
    # A scalar under a secret-sounding name is a literal credential; say so, and not that the
    # field is merely unknown (the person would "fix" it by moving the key somewhere else).
    if secretscan.is_secret_name(field) and isinstance(value, str | int | float):
        parent = [str(part) for part in loc[:-1] if isinstance(part, str)]
        if parent[-1:] == ["git"]:
            return f"literal tokens are refused: use tokenFrom.secretKeyRef {_SECRETS_WHERE}"
        if kind in ("LLM", "ContactChannel"):
            return (
                "literal API keys are refused: use apiKeyFrom.secretKeyRef "
                "(the key goes in --secrets-dir or the environment)"
            )
        if kind == "MCPServer":
            return f"literal secrets are refused: use env[].valueFrom.secretKeyRef {_SECRETS_WHERE}"
        return f"literal secrets are refused: reference them with a secretKeyRef {_SECRETS_WHERE}"
    allowed = allowed_fields(model, loc[:-1])
    if not allowed:
        return "unknown field"
    close = difflib.get_close_matches(field, allowed, n=1)
    hint = f", did you mean {close[0]}?" if close else ""
    return f"unknown field{hint} (allowed: {', '.join(allowed)})"


def allowed_fields(model: type[BaseModel], loc: Loc) -> list[str]:
    """Return the YAML names of the fields allowed at `loc` inside `model`, sorted."""
    target = _model_at(model, loc)
    if target is None:
        return []
    return sorted(_yaml_name(name, info) for name, info in target.model_fields.items())


def _yaml_name(name: str, info: Any) -> str:
    """Return the name a field has in YAML (its serialization alias)."""
    return str(info.serialization_alias or info.alias or name)


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """Follow `loc` through field annotations and return the model found there, if any."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        origin = typing.get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str):
            fields = current.model_fields
            info = next(
                (info for name, info in fields.items() if part in (name, _yaml_name(name, info), info.alias)),
                None,
            )
            if info is None:
                return None
            current = info.annotation
        elif origin in (list, tuple) and isinstance(part, int):
            current = typing.get_args(current)[0]
        elif origin is dict:
            current = typing.get_args(current)[1]
        # Anything else is a pydantic-internal step (a union member's tag): stay where we are.
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip `Annotated[...]` and `X | None` until a concrete type remains."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            annotation = models[0] if models else members[0]
            if len(members) > 1 and not models:
                return annotation
        else:
            return annotation
