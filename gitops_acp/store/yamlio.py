"""YAML in and out of the store, always through libyaml's safe C loader and dumper.

Every status file the reconciler commits goes through `dump`, so its output is what people read in
`git log -p` and pull requests: keys in the order the object was built (apiVersion, kind, metadata,
spec, status, like `kubectl get -o yaml`), no line folding, and multi-line strings (prompts, tool
results, model answers) as literal blocks so a diff shows the lines that changed. `load` is the
matching reader for the store's own files; resource files written by people are parsed with line
numbers in `gitops_acp.resources`.

Status documents are plain JSON-shaped data (dicts, lists, strings, numbers, booleans, None), and
PyYAML's representer, written in Python, is the largest single cost of the write path at 1000
tasks (0.25 ms a task file against 0.18 ms here). `dump` therefore emits such data directly, in
the same style, and falls back to PyYAML for anything else. tests/test_yamlio.py checks that what
it writes loads back as exactly the data it was given (random documents included).

A resource's checkpoints repeat most of its strings (names, phases, timestamps, keys), so how each
short string and each key line is written is remembered (`_strings`, `_keys`, bounded): 11 µs a
status file instead of 18 µs (the files of a 300-task tools run; the output is byte for byte the
same, which tests/test_yamlio.py checks against cleared caches).

PyYAML itself is imported when first needed (`load`, `load_all`, a document the direct emitter
does not handle): its import is ~10 ms, and `get KIND NAME` and `describe` read status files with
`statusfields.document` and write with the direct emitter, so they never need it. Which plain
scalars read back as strings is PyYAML's resolvers' answer, through the copies in `statusfields`
(tests/test_statusfields.py checks them against PyYAML's own).
"""

from __future__ import annotations

import functools
import itertools
import math
import re

try:  # json.encoder's own C functions, without the json package (~1.4 ms of a `get task`)
    from _json import encode_basestring as _encode
    from _json import encode_basestring_ascii as _encode_ascii
except ImportError:  # not CPython: json.encoder's pure-Python ones
    from json.encoder import encode_basestring as _encode
    from json.encoder import encode_basestring_ascii as _encode_ascii

from gitops_acp.errors import StoreError
from gitops_acp.store import statusfields

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)
if TYPE_CHECKING:
    from typing import Any

    import yaml

__all__ = ["dump", "load"]


@functools.cache
def _dumper() -> type[yaml.CSafeDumper]:
    """The safe C dumper, with literal blocks for multi-line strings."""
    import yaml

    class Dumper(yaml.CSafeDumper):
        pass

    def represent_str(dumper: Dumper, value: str) -> yaml.ScalarNode:
        # libyaml falls back to a quoted scalar by itself when a literal block cannot hold the value
        # exactly (trailing spaces on a line, special characters), so this never changes what loads.
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, represent_str)
    return Dumper


def dump(doc: dict[str, Any]) -> bytes:
    """Serialize `doc` as UTF-8 YAML: insertion order, no folding, literal blocks for multi-line text."""
    lines: list[str] = []
    try:
        _emit_mapping(doc, 0, lines)
    except _NotPlain:
        return _dump_pyyaml(doc)
    lines.append("")
    return "\n".join(lines).encode()


# -- the direct emitter for JSON-shaped data ----------------------------------------------------


class _NotPlain(Exception):
    """A value the direct emitter does not handle: PyYAML writes the whole document instead."""


# Plain (unquoted) scalars: a conservative character set, then PyYAML's own resolver must agree
# that the text reads back as a string (not a number, boolean, null or timestamp).
_PLAIN = re.compile(r"[A-Za-z0-9_./()+=;~^$\\][A-Za-z0-9 _./()+=;~^$\\,@-]*")
_NEEDS_QUOTES = re.compile(r"(^|\s)#|:(\s|$)|\s$")
# Characters YAML allows raw in a document (no control characters, no line separators, no BOM).
_ALLOWED_RAW = r"\x09\x0a\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff"


@functools.cache
def _raw_ok_pattern() -> re.Pattern[str]:
    """Text made only of characters YAML allows raw. Compiled on first use, as `_not_raw_pattern`:
    only non-ASCII text needs them, and compiling the two is ~5 ms of the start-up of every reader
    (`get`, `describe`), which never writes."""
    return re.compile(f"[{_ALLOWED_RAW}]*")


@functools.cache
def _not_raw_pattern() -> re.Pattern[str]:
    """One character YAML does not allow raw."""
    return re.compile(f"[^{_ALLOWED_RAW}]")


# The scalar text of short strings already written: names, phases, timestamps and ids come back in
# every checkpoint of a resource, and most of an emitted line's cost is deciding how to write its
# string. Bounded: when full, the older half goes (insertion order), so the strings of resources
# being worked on stay. A race between threads can only cost a miss.
_strings: dict[str, str] = {}
_MAX_CACHED_STRINGS = 16384
_MAX_CACHED_LENGTH = 256


def _is_plain(text: str) -> bool:
    # `...` begins no plain scalar: `statusfields` declines a key line that does (a document end
    # marker looks so at the start of a line).
    if not _PLAIN.fullmatch(text) or _NEEDS_QUOTES.search(text) or text.startswith("..."):
        return False
    # A string PyYAML reads as one, and that `statusfields` (the readers without PyYAML) reads too.
    return statusfields.plain_tag(text) == "str" and not statusfields.uncertain_plain(text)


def _raw_ok(text: str) -> bool:
    """Whether every character of `text` may appear raw in a document, quickly for ASCII."""
    if text.isascii():  # O(1); then only tabs, newlines and printable ASCII are allowed
        return text.isprintable() or text.replace("\n", "").replace("\t", "").isprintable()
    return _raw_ok_pattern().fullmatch(text) is not None


def _scalar(value: Any) -> str:
    if type(value) is str:  # most values: tested first
        return _string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        if "." not in text and "e" in text:  # YAML 1.1 floats need a dot: 1e+300 would read as a string
            mantissa, _, exponent = text.partition("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    if isinstance(value, str):
        return _string(value)
    raise _NotPlain


def _string(value: str) -> str:
    text = _strings.get(value)
    if text is not None:
        return text
    text = _quoted(value)
    if len(value) <= _MAX_CACHED_LENGTH:
        if len(_strings) >= _MAX_CACHED_STRINGS:
            for old in list(itertools.islice(_strings, _MAX_CACHED_STRINGS // 2)):
                _strings.pop(old, None)
        _strings[value] = text
    return text


def _quoted(value: str) -> str:
    if _is_plain(value):
        return value
    # JSON's escapes are a subset of YAML's double-quoted ones; non-ASCII stays readable when
    # every character may appear raw. `json.dumps(value, ensure_ascii=...)` is exactly these two
    # encoders (which give the same text for ASCII), without its per-call overhead.
    if value.isascii():
        return _encode_ascii(value)
    if _raw_ok_pattern().fullmatch(value):
        return _encode(value)
    # Not JSON's ASCII escapes here: they write a character beyond U+FFFF as a surrogate pair, which
    # YAML refuses (a tool's output with an emoji and a control character made an unreadable file).
    # What JSON's raw encoder leaves that YAML does not allow raw (C1 controls, DEL, U+2028/9, the
    # BOM, non-characters, surrogates) is escaped; control characters below U+0020 it has already.
    return _not_raw_pattern().sub(_escape_char, _encode(value))


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xD800 <= code <= 0xDFFF:  # a lone surrogate (text decoded from bad JSON) has no UTF-8 form
        return "\ufffd"
    return f"\\u{code:04x}"


@functools.lru_cache(maxsize=4096)  # a handful of keys at a handful of indentations
def _key(head: str, key: str) -> str:
    return f"{head}{_string(key)}:"


def _block(text: str, indent: int) -> list[str] | None:
    """A literal block for multi-line text, or None when one cannot hold it exactly or a line of it
    ends in a blank: PyYAML's emitter quotes those (and so does this one), and `statusfields`,
    which reads status files without PyYAML, does not read them from a block."""
    if "\r" in text or text[:1] in (" ", "\t", "\n") or not _raw_ok(text):
        return None
    body = text.rstrip("\n")
    if " \n" in body or "\t\n" in body or body.endswith((" ", "\t")):
        return None
    trailing = len(text) - len(body)
    chomp = "-" if trailing == 0 else ("" if trailing == 1 else "+")
    pad = " " * (indent + 2)
    lines = [pad + line if line else "" for line in body.split("\n")]
    lines.extend([""] * (trailing - 1))
    return ["|" + chomp, *lines]


def _emit_value(prefix: str, value: Any, indent: int, lines: list[str], *, in_list: bool) -> None:
    """Emit `prefix` (a key with its colon, or a list dash) followed by `value`."""
    if isinstance(value, dict):
        if not value:
            lines.append(prefix + " {}")
        elif in_list:
            _emit_mapping(value, indent + 2, lines, first_prefix=prefix + " ")
        else:
            lines.append(prefix)
            _emit_mapping(value, indent + 2, lines)
    elif isinstance(value, list):
        if not value:
            lines.append(prefix + " []")
        else:
            lines.append(prefix)
            # PyYAML's style: "- item" at the key's own indentation
            _emit_sequence(value, indent + 2 if in_list else indent, lines)
    elif isinstance(value, str) and "\n" in value and (block := _block(value, indent)) is not None:
        lines.append(f"{prefix} {block[0]}")
        lines.extend(block[1:])
    else:
        lines.append(f"{prefix} {_scalar(value)}")


# indentation -> key -> "<indentation><key>:", the prefix of a mapping's lines after its first
# (which may start with a list's dash: `_key`). Bounded like `_strings`.
_keys: dict[int, dict[str, str]] = {}
_MAX_CACHED_KEYS = 4096


def _emit_mapping(
    mapping: dict[Any, Any], indent: int, lines: list[str], first_prefix: str | None = None
) -> None:
    keys = _keys.get(indent)
    if keys is None or len(keys) >= _MAX_CACHED_KEYS:
        keys = _keys[indent] = {}
    strings = _strings
    append = lines.append
    for key, value in mapping.items():
        if type(key) is not str:
            raise _NotPlain
        if first_prefix is None:
            prefix = keys.get(key)
            if prefix is None:
                prefix = keys[key] = f"{' ' * indent}{_string(key)}:"
        else:
            prefix = _key(first_prefix, key)
            first_prefix = None
        if type(value) is str and "\n" not in value:  # the common case, without a call when seen before
            text = strings.get(value)
            append(f"{prefix} {text if text is not None else _string(value)}")
        else:
            _emit_value(prefix, value, indent, lines, in_list=False)


def _emit_sequence(items: list[Any], indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for item in items:
        _emit_value(f"{pad}-", item, indent, lines, in_list=True)


def _dump_pyyaml(doc: dict[str, Any]) -> bytes:
    import yaml

    try:
        text: bytes = yaml.dump(
            doc,
            Dumper=_dumper(),
            sort_keys=False,
            allow_unicode=True,
            default_flow_style=False,
            # A negative width is "never fold" for libyaml: long one-line strings stay one line.
            width=-1,
            encoding="utf-8",
        )
    except yaml.YAMLError as exc:  # a value YAML cannot represent (an object, a set, ...)
        raise StoreError(f"cannot write as YAML: {exc}") from exc
    return text


def load(data: bytes) -> dict[str, Any]:
    """Parse one YAML document that must be a mapping.

    A file in the emitter's own style (every status file the reconciler wrote) is read by
    `statusfields.document`, which gives PyYAML's answer or none: ~65 µs a single-turn task's
    file against ~180 µs through libyaml (whose events are built into objects in Python). Any
    other file, and one it is not certain of, is read by PyYAML.
    """
    found = statusfields.document(data)
    if found is not None:
        return found
    import yaml

    try:
        doc = yaml.load(data, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        raise StoreError(f"invalid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise StoreError(f"expected a YAML mapping, found {type(doc).__name__}")
    return doc


def load_all(data: bytes) -> list[Any]:
    """Parse every YAML document of a (possibly multi-document) file, as they are."""
    import yaml

    try:
        return list(yaml.load_all(data, Loader=yaml.CSafeLoader))
    except yaml.YAMLError as exc:
        raise StoreError(f"invalid YAML: {exc}") from exc
