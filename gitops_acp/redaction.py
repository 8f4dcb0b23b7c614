"""Redaction (DESIGN §10): a secret value never reaches a commit, a status file or a log line.

    SecretResolver.resolve(name, key) ──remember──► known values (this process)
    State.checkpoint(obj) ──document()──► "[redacted <name>/<key>]" for each value, in every string
    logging (serve's handler) ──LogFilter──► the same, in every line

Tools and models see secrets they were given (an MCP server's env, an LLM's key in an error
message) and may repeat them; point fixes (the LLM client scrubs its key from its own errors) can't
catch what a tool returns. Every string of every status document is therefore scanned for every
value this process resolved, before it is written, and so is every log line.

Values shorter than `MIN_LENGTH` characters are not redacted (a secret of 3 characters would turn
every occurrence of those letters anywhere into a marker; such a value is no secret). Old values
of a rotated secret stay known for the life of the process: an echo of the old one is still one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

__all__ = ["MIN_LENGTH", "LogFilter", "clear", "document", "may_hold", "remember", "text"]

MIN_LENGTH = 6

_lock = threading.Lock()
_labels: dict[str, str] = {}  # value -> "name/key"
_latest: dict[tuple[str, str], str] = {}  # (name, key) -> the value last resolved
_pattern: re.Pattern[str] | None = None
# Each value as it appears inside a JSON string, to tell in one C-level scan of a document's JSON
# that no value is in it (the usual case) before walking it in Python. A value with characters
# JSON escapes in more than one way (controls, non-ASCII) always takes the walk.
_json_forms: tuple[bytes, ...] = ()
# ...and as it appears in a status file written by `yamlio.dump` (plain, in a literal block, double
# quoted with JSON's escapes, or single quoted by PyYAML: never folded), for `may_hold`.
_yaml_forms: tuple[bytes, ...] = ()
_walk_always = False


def remember(name: str, key: str, value: str) -> None:
    """Note a resolved secret value (called by SecretResolver on every resolve: cheap when known)."""
    global _pattern, _json_forms, _yaml_forms, _walk_always
    if _latest.get((name, key)) == value:
        return
    with _lock:
        _latest[(name, key)] = value
        if len(value) < MIN_LENGTH or value in _labels:
            return
        _labels[value] = f"{name}/{key}"
        # Longest first, so a value that contains another is replaced whole.
        ordered = sorted(_labels, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in ordered))
        _json_forms = tuple(_json_string(v) for v in ordered)
        forms = ((v.encode(), _json_string(v), v.replace("'", "''").encode()) for v in ordered)
        _yaml_forms = tuple(dict.fromkeys(form for three in forms for form in three))
        _walk_always = _walk_always or not all(" " <= c <= "~" for c in value)


def clear() -> None:
    """Forget every value (tests: one process runs many scenarios with their own secrets)."""
    global _pattern, _json_forms, _yaml_forms, _walk_always
    with _lock:
        _labels.clear()
        _latest.clear()
        _pattern, _json_forms, _yaml_forms, _walk_always = None, (), (), False


def text(value: str) -> str:
    """`value` with every known secret replaced by `[redacted <name>/<key>]`."""
    pattern = _pattern
    if pattern is None or not value or pattern.search(value) is None:
        return value  # the same object: `document` tells "nothing to redact" by identity
    return pattern.sub(lambda m: f"[redacted {_labels[m.group(0)]}]", value)


def may_hold(status_file: bytes) -> bool:
    """Whether a status file as `yamlio.dump` wrote it may hold a known value (then `document`
    must walk the document it was made from); False for certain otherwise.

    One C-level scan per value form, ~1 µs for a 5 KB file: the checkpoint serializes the
    document anyway, where the JSON of `document`'s own first look cost ~10 µs more. A value with
    characters YAML or JSON escape in more than one way always answers True.
    """
    if _pattern is None:
        return False
    return _walk_always or any(form in status_file for form in _yaml_forms)


def document(value: Any) -> Any:
    """A copy of a JSON-like document with every string redacted; the very same object if nothing
    needed it (so a caller can tell, by identity, that nothing was there)."""
    if _pattern is None:
        return value
    if not _walk_always:
        # Only a process that resolved a secret gets here (the reconciler): the command line's
        # error funnel imports this module, and pydantic_core would be ~20 ms of every command.
        import pydantic_core

        try:
            blob = pydantic_core.to_json(value)
        except (TypeError, ValueError, pydantic_core.PydanticSerializationError):
            blob = None
        if blob is not None and not any(form in blob for form in _json_forms):
            return value  # ~10 µs for a 5 KB status file, against ~100 µs for the walk
    return _walk(value)


def _walk(value: Any) -> Any:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, Mapping):
        changed = False
        out: dict[Any, Any] = {}
        for key, item in value.items():
            clean = _walk(item)
            changed |= clean is not item
            out[key] = clean
        return out if changed else value
    if isinstance(value, list):
        items = [_walk(item) for item in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


def _json_string(value: str) -> bytes:
    import json  # here: the command line's error funnel imports this module (docs/growth.md)

    return json.dumps(value)[1:-1].encode()


class LogFilter:
    """Redacts every record's message (formatted with its arguments) before a handler writes it.

    An object with `filter`, which is what `Handler.addFilter` takes, rather than a
    `logging.Filter`: the command line's error funnel imports this module, and need not import
    logging with it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _pattern is None:
            return True
        message = record.getMessage()
        clean = text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            import logging

            formatted = logging.Formatter().formatException(record.exc_info)
            if text(formatted) != formatted:
                record.msg = f"{clean}\n{text(formatted)}"
                record.args, record.exc_info, record.exc_text = None, None, None
        return True
