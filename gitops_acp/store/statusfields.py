"""A status file read without PyYAML when that is certain to give PyYAML's answer: a few string
fields (`strings`), or the whole document (`document`).

`gitops-acp history` is a new process each time, and of each checkpoint it shows two fields
(`status.statusDetail`, `status.error`), bounded by one more of the tip's file (the
`acp.gitops.dev/first-checkpoint` annotation). Importing PyYAML costs ~15 ms of a command that
should take 50 (its pure-Python reader compiles a large regular expression at import), so these
fields are read here from the text `yamlio.dump` writes, and the caller falls back to
`yamlio.load` whenever `strings` returns None.

It returns an answer only when the whole file is in the language of `yamlio`'s emitter: block
mappings and sequences indented two spaces a level (a list at its key's own indentation), one
scalar a line (plain, JSON-quoted, `{}` or `[]`) or a literal block (`|`, `|-`, `|+`) whose lines
carry no trailing blank; only characters YAML allows raw; every plain scalar resolving, by
PyYAML's own patterns (copied below; tests/test_statusfields.py checks them against PyYAML's), to
a string or to a null, boolean, integer or float PyYAML builds without error; and each field asked
for a string or absent. Such a file is valid YAML, and PyYAML reads the same values from it. Anything
else (a file PyYAML's dumper wrote, an escape JSON never writes, a date-like plain scalar, a blank
line, a field that is a number) returns None: the caller does not guess. The tests check that both
readers agree on the emitter's output for random documents and tricky values (multi-line text,
quotes, colons, unicode), and that the fast reader declines what it cannot be sure of.

`document` gives the whole file as PyYAML builds it, for `get KIND NAME` and `describe` (which
PyYAML's import cost ~10 ms of ~50). On top of the above, it declines a plain key PyYAML would
read as something else than a string (`true:`, `1:`), and a plain scalar it would build otherwise
than the emitter writes its kind: integers other than `-?(0|[1-9][0-9]*)`, floats with `_` or
`:`, booleans other than `true`/`false`, nulls other than `null`. `plain_tag` is the tag PyYAML
resolves a plain scalar to, which `yamlio`'s emitter asks too.
"""

from __future__ import annotations

import math
import re

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["RESOLVERS", "document", "plain_tag", "strings", "uncertain_plain"]

# Characters YAML allows raw in a document (yamlio's `_RAW_OK`: no control characters but tab and
# newline, no NEL or line separators, no BOM): anything else may make PyYAML refuse the file.
# Compiled on first use, for a file that is not ASCII: compiling it takes ~2.5 ms.
_RAW_OK = r"[\x09\x0a\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]*"
# A double-quoted scalar as `json.encoder` writes it: the escapes JSON uses, all of which YAML's
# double-quoted style reads the same way (but surrogate escapes, which libyaml refuses: see `_json`).
_JSON = r'"(?:[^"\\\x00-\x1f]|\\["\\bfnrt]|\\u[0-9a-fA-F]{4})*"'
# A plain scalar in the emitter's character set (no indicator, no `: `, no ` #`, no trailing blank).
_PLAIN_BODY = r"[A-Za-z0-9_./()+=;~^$\\](?:[A-Za-z0-9 _./()+=;~^$\\,@-]*[A-Za-z0-9_./()+=;~^$\\,@-])?"
_KEY_LINE = re.compile(rf"({_JSON}|{_PLAIN_BODY}):(?: (.+))?")
_PLAIN_VALUE = re.compile(rf"-?{_PLAIN_BODY}")  # `-5`, `-.inf`: a dash followed by no blank
_JSON_VALUE = re.compile(_JSON)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)")
_UNESCAPED = {'"': '"', "\\": "\\", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}

# PyYAML's implicit resolvers (yaml/resolver.py), by the first character of a plain scalar, in its
# order: the first pattern that matches gives the tag; none gives a string.
_BOOL = r"""^(?:yes|Yes|YES|no|No|NO
                    |true|True|TRUE|false|False|FALSE
                    |on|On|ON|off|Off|OFF)$"""
_FLOAT = r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
                    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$"""
_INT = r"""^(?:[-+]?0b[0-1_]+
                    |[-+]?0[0-7_]+
                    |[-+]?(?:0|[1-9][0-9_]*)
                    |[-+]?0x[0-9a-fA-F_]+
                    |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$"""
_MERGE = r"^(?:<<)$"
_NULL = r"""^(?: ~
                    |null|Null|NULL
                    | )$"""
_TIMESTAMP = r"""^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
                    |[0-9][0-9][0-9][0-9] -[0-9][0-9]? -[0-9][0-9]?
                     (?:[Tt]|[ \t]+)[0-9][0-9]?
                     :[0-9][0-9] :[0-9][0-9] (?:\.[0-9]*)?
                     (?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$"""
_VALUE = r"^(?:=)$"
_PATTERNS: dict[str, str] = {
    "bool": _BOOL,
    "float": _FLOAT,
    "int": _INT,
    "merge": _MERGE,
    "null": _NULL,
    "timestamp": _TIMESTAMP,
    "value": _VALUE,
}
_FIRST: dict[str, tuple[str, ...]] = {
    "bool": tuple("yYnNtTfFoO"),
    "float": tuple("-+0123456789."),
    "int": tuple("-+0123456789"),
    "merge": ("<",),
    "null": ("~", "n", "N", ""),
    "timestamp": tuple("0123456789"),
    "value": ("=",),
}
#: first character -> [(tag, pattern)], as PyYAML's `Resolver.yaml_implicit_resolvers` holds them
#: (compiled with re.X). They are needed only to tell whether a field asked for is a string: a
#: scalar nobody asks for only has to be one PyYAML builds without error (`Parser.scalar`).
RESOLVERS: dict[str, list[tuple[str, str]]] = {}
for _tag in _PATTERNS:  # PyYAML's registration order (add_implicit_resolver appends)
    for _first in _FIRST[_tag]:
        RESOLVERS.setdefault(_first, []).append((_tag, _PATTERNS[_tag]))


class _Uncertain(Exception):
    """The text is not (certainly) the emitter's: PyYAML reads it."""


_MAX_DEPTH = 64
_MAX_KEY = 1000  # libyaml allows a simple key of at most 1024 characters


def strings(data: bytes, *paths: tuple[str, ...]) -> list[str | None] | None:
    """The string at each path of keys (None where a key is absent), or None when not certain.

    None means: read the file with `yamlio.load` instead (it may be valid YAML in another style,
    hold a non-string where a string was asked for, or not be YAML at all).
    """
    if any(key[:1] in RESOLVERS for path in paths for key in path):
        # A plain key is stored as written (`_Parser.mapping`): only a key no resolver starts
        # with (`status`, `error`, ...) is certainly the string it looks like.
        raise ValueError(f"strings: keys must not start with one of {sorted(RESOLVERS)}: {paths}")
    lines = _lines(data)
    if lines is None:
        return None
    try:
        root = _Parser(lines).document()
        return [_string_at(root, path) for path in paths]
    except _Uncertain:
        return None


def document(data: bytes) -> dict[str, Any] | None:
    """The whole file as `yamlio.load` reads it, or None when not certain (then read it so)."""
    lines = _lines(data)
    if lines is None:
        return None
    try:
        parser = _Parser(lines, whole=True)
        root: Any = parser.document()  # its keys are strings (`odd_keys` otherwise)
        return None if parser.odd_keys else root
    except _Uncertain:
        return None


def _lines(data: bytes) -> list[str] | None:
    """The file's lines, if it is UTF-8 text ending in a newline, of characters YAML allows raw."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.endswith("\n") or not _raw_ok(text):
        return None
    return text[:-1].split("\n")


def plain_tag(text: str) -> str:
    """The tag PyYAML resolves a plain scalar to: `str`, `bool`, `int`, `float`, `null`, ..."""
    if text[:1] not in RESOLVERS:  # most text: a letter no resolver starts with
        return "str"
    tag = _TAGS.get(text)
    if tag is None:
        if len(_TAGS) >= _REMEMBERED:
            _TAGS.clear()
        tag = _TAGS[text] = _resolve(text)
    return tag


def uncertain_plain(text: str) -> bool:
    """Whether a plain scalar of the emitter's character set is one this reader declines.

    Of the tags such a scalar can resolve to, PyYAML fails to build only these (a superset is
    declined): `=` (no constructor), a date or a time (`2026-13-45` is not one: anything that
    begins like one), an integer in base 2 or 16 without digits (`0b_`). Strings, nulls,
    booleans, floats and other integers always build. `yamlio`'s emitter quotes such a string
    (`1234-5`, `0b1`), so that what it writes is always read here.
    """
    unsigned = text[1:] if text[:1] in ("+", "-") else text
    # Both forms of `_TIMESTAMP` begin with four digits and a dash (`1.0e-07` is a float).
    date_like = text[4:5] == "-" and text[:4].isascii() and text[:4].isdigit()
    return text == "=" or unsigned[:2] in ("0b", "0x") or date_like


def _resolve(text: str) -> str:
    first = text[:1]
    resolvers = _COMPILED.get(first)
    if resolvers is None:  # compiled on first use: most readers meet a few first characters
        resolvers = _COMPILED[first] = [
            (tag, re.compile(pattern, re.X)) for tag, pattern in RESOLVERS.get(first, ())
        ]
    for tag, pattern in resolvers:
        if pattern.match(text):
            return tag
    return "str"


_COMPILED: dict[str, list[tuple[str, re.Pattern[str]]]] = {}

# What reading a file found of lines and scalars, kept for the next files: status files repeat
# their keys (the schema's field names) and many values (phases, roles, agents), and a list of
# 100,000 archived tasks spent most of its time matching them again (`get tasks --all`). Each
# holds what the patterns above decided, so an answer is the same with or without them; each is
# emptied when it reaches _REMEMBERED entries, which bounds a long-lived reader (the HTTP API).
_REMEMBERED = 4096
_TAGS: dict[str, str] = {}  # plain scalar -> `plain_tag`
_PLAIN_KEYS: set[str] = set()  # plain keys that are strings and pass `_Parser.scalar`
_PLAIN_VALUES: set[str] = set()  # plain scalars that pass `_Parser.scalar`


def _key_line(rest: str) -> tuple[str, str | None] | None:
    """A key line's key as written and the value on its line (None: on the lines below), or None
    when `rest` is not a key line (`_KEY_LINE`). A plain key has no `:` in it, so with one met
    before the line is its key, then nothing or a blank and a value."""
    key, colon, after = rest.partition(":")
    if colon and key in _PLAIN_KEYS:
        if not after:
            return key, None
        return (key, after[1:]) if after[0] == " " and len(after) > 1 else None
    match = _KEY_LINE.fullmatch(rest)
    return None if match is None else (match[1], match[2])


_CANONICAL_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_BOOLS = {"true": True, "false": False}


def _raw_ok(text: str) -> bool:
    if text.isascii():  # then only tabs, newlines and printable ASCII are allowed
        return text.replace("\n", "").replace("\t", "").isprintable()
    return re.fullmatch(_RAW_OK, text) is not None  # `re` keeps the compiled pattern


def _string_at(root: dict[object, object], path: tuple[str, ...]) -> str | None:
    node: object = root
    for key in path:
        if not isinstance(node, dict):
            raise _Uncertain  # a scalar or a list where a mapping was expected
        if key not in node:
            return None
        node = node[key]
    if isinstance(node, _Leaf):
        return node.string()
    raise _Uncertain  # a mapping, a list, a number, null: PyYAML says what it is


class _Leaf:
    """A scalar PyYAML builds without error, decoded when asked for (most are never looked at)."""

    __slots__ = ("chomp", "lines", "raw")

    def __init__(self, raw: str, *, lines: list[str] | None = None, chomp: str = "") -> None:
        self.raw = raw  # a plain or a JSON-quoted scalar; "" for a literal block
        self.lines = lines  # a literal block's lines, without their indentation
        self.chomp = chomp

    def string(self) -> str:
        """Its value, which must be a string: a plain scalar PyYAML resolves to another tag (a
        number, a boolean, null) is not, and makes the answer uncertain."""
        value = self.value()
        if not isinstance(value, str):
            raise _Uncertain
        return value

    def value(self) -> Any:
        """Its value as PyYAML builds it; `_Uncertain` where PyYAML might build another."""
        if self.lines is not None or self.raw[:1] == '"':
            return self.text()
        raw = self.raw
        tag = plain_tag(raw)
        if tag == "str":
            return raw
        if tag == "bool" and raw in _BOOLS:
            return _BOOLS[raw]
        if tag == "null" and raw == "null":
            return None
        if tag == "int" and _CANONICAL_INT.fullmatch(raw):
            return int(raw)
        if tag == "float" and "_" not in raw and ":" not in raw:  # PyYAML's construct_yaml_float
            text = raw.lower()
            sign = -1.0 if text[0] == "-" else 1.0
            if text[0] in "+-":
                text = text[1:]
            if text == ".inf":
                return sign * math.inf
            if text == ".nan":
                return math.nan
            return sign * float(text)
        raise _Uncertain

    def text(self) -> str:
        """Its text as written (a plain scalar's, whatever PyYAML would resolve it to)."""
        if self.lines is not None:
            body = list(self.lines)
            trailing = 0
            while body and body[-1] == "":
                body.pop()
                trailing += 1
            end = {"-": "", "": "\n", "+": "\n" * (trailing + 1)}[self.chomp]
            return "\n".join(body) + end
        if self.raw[:1] != '"':
            return self.raw
        inner = self.raw[1:-1]
        if "\\" not in inner:
            return inner
        return _ESCAPE.sub(_unescape, inner)


def _unescape(match: re.Match[str]) -> str:
    code = match[1]
    return chr(int(code[1:], 16)) if len(code) == 5 else _UNESCAPED[code]


class _Parser:
    """The emitter's language, line by line: mappings as dicts (str keys), scalars as `_Leaf` (as
    the values PyYAML builds, `whole`)."""

    def __init__(self, lines: list[str], *, whole: bool = False) -> None:
        self.lines = lines
        self.i = 0  # the next line to read
        # `document`: each scalar built as it is read (`_Leaf.value`), and keys that are not
        # strings looked for
        self.whole = whole
        self.odd_keys = False  # a plain key PyYAML reads as another thing than a string
        self._head: tuple[int, tuple[int, bool, str] | None] = (-1, None)  # `head`'s last answer

    def document(self) -> dict[object, object]:
        root = self.mapping(0, None, 0)
        if self.i != len(self.lines) or not root:
            raise _Uncertain
        return root

    def head(self) -> tuple[int, bool, str] | None:
        """The next line as (indentation, after a "- ", the rest), None at the end (asked about
        most lines twice: where a value ends, then where the next begins)."""
        i = self.i
        if self._head[0] == i:
            return self._head[1]
        if i >= len(self.lines):
            return None
        line = self.lines[i]
        rest = line.lstrip(" ")
        indent = len(line) - len(rest)
        if rest[:2] == "- ":
            found = indent, True, rest[2:]
        elif rest == "-":
            found = indent, True, ""
        else:
            found = indent, False, rest
        self._head = (i, found)
        return found

    def mapping(self, indent: int, first: str | None, depth: int) -> dict[object, object]:
        """Key lines at `indent` (the first one's rest given when it follows a list's dash)."""
        if depth > _MAX_DEPTH:
            raise _Uncertain
        node: dict[object, object] = {}
        rest = first
        while True:
            if rest is None:
                head = self.head()
                if head is None or head[0] < indent:
                    return node
                if head[0] > indent or head[1]:
                    raise _Uncertain
                rest = head[2]
            found = _key_line(rest)
            if found is None or len(found[0]) > _MAX_KEY or rest.startswith(("...", "---")):
                raise _Uncertain
            written, value = found
            if written in _PLAIN_KEYS:
                key = written
            else:
                leaf = self.scalar(written)
                key = leaf.text()
                if leaf.raw[:1] != '"':
                    if plain_tag(written) != "str":
                        self.odd_keys = self.odd_keys or self.whole
                    elif len(_PLAIN_KEYS) < _REMEMBERED and not written.startswith("..."):
                        _PLAIN_KEYS.add(written)
            self.i += 1
            # Later keys win, as in PyYAML. A plain key is stored as written: those asked for
            # start with no resolver's character, so they are the strings they look like.
            node[key] = self.nested(indent, depth) if value is None else self.value(value, indent + 2)
            rest = None

    def nested(self, indent: int, depth: int) -> object:
        """The value of a key line ending in `:` at `indent`: a mapping below it, or a list at it."""
        head = self.head()
        if head is not None and head[0] == indent + 2 and not head[1]:
            return self.mapping(indent + 2, None, depth + 1)
        if head is not None and head[0] == indent and head[1]:
            return self.sequence(indent, depth + 1)
        raise _Uncertain

    def sequence(self, indent: int, depth: int) -> list[object]:
        """Dash lines at `indent`: the list's items."""
        if depth > _MAX_DEPTH:
            raise _Uncertain
        items: list[object] = []
        while True:
            head = self.head()
            if head is None or head[0] < indent or (head[0] == indent and not head[1]):
                return items  # the end of the list (a key line at `indent` is its mapping's next key)
            if head[0] > indent:
                raise _Uncertain
            rest = head[2]
            if not rest:  # a list in a list: its items two columns in, from the next line
                self.i += 1
                following = self.head()
                if following is None or following[0] != indent + 2 or not following[1]:
                    raise _Uncertain
                items.append(self.sequence(indent + 2, depth + 1))
            elif _key_line(rest) is not None:
                items.append(self.mapping(indent + 2, rest, depth + 1))
            else:
                self.i += 1
                items.append(self.value(rest, indent + 2))

    def value(self, text: str, pad: int) -> object:
        """A value written on its key's (or dash's) line; a literal block's lines are `pad` in."""
        if text == "{}":
            return {}
        if text == "[]":
            return []
        if text[:1] == "|":
            if text not in ("|", "|-", "|+"):
                raise _Uncertain
            leaf = self.block(pad, text[1:])
        else:
            leaf = self.scalar(text)
        return leaf.value() if self.whole else leaf

    def scalar(self, text: str) -> _Leaf:
        """A one-line scalar PyYAML builds without error (whatever its tag: `_Leaf.string`)."""
        if text[:1] == '"':
            inner = text[1:-1]
            # Without an escape, a tab or a quote inside, the line (of characters `_raw_ok`
            # allows) is a JSON string: no pattern needed.
            if len(text) > 1 and text[-1] == '"' and not ("\\" in inner or '"' in inner or "\t" in inner):
                return _Leaf(text)
            if not _JSON_VALUE.fullmatch(text) or _SURROGATE_ESCAPE.search(text):
                raise _Uncertain
            return _Leaf(text)
        if text in _PLAIN_VALUES:
            return _Leaf(text)
        if not _PLAIN_VALUE.fullmatch(text) or uncertain_plain(text):
            raise _Uncertain
        if len(_PLAIN_VALUES) >= _REMEMBERED:
            _PLAIN_VALUES.clear()
        _PLAIN_VALUES.add(text)
        return _Leaf(text)

    def block(self, pad: int, chomp: str) -> _Leaf:
        """A literal block's lines: `pad` spaces in, the first not blank; ended by a line less in."""
        lines: list[str] = []
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line and line[:pad].strip(" ") == "" and len(line) > pad:
                content = line[pad:]
                if content[-1] in " \t" or (not lines and content[0] in " \t"):
                    raise _Uncertain  # blanks at an edge: where libyaml's rules are subtle
                lines.append(content)
            elif line:
                if not line.strip(" ") or not lines:
                    raise _Uncertain  # a line of spaces, or no content at all
                break  # a line less indented: the next key or item
            elif lines:
                lines.append("")  # an empty line inside (or trailing) the block
            else:
                raise _Uncertain
            self.i += 1
        if not lines:
            raise _Uncertain
        return _Leaf("", lines=lines, chomp=chomp)
