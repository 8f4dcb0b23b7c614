"""`statusfields.strings` gives PyYAML's answer for every status file it answers for, and declines
(None: the caller reads the file with PyYAML) whatever it cannot be sure of."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_acp.resources.meta import ANNOTATION_FIRST_CHECKPOINT, Kind, status_path
from gitops_acp.store import history, statusfields, yamlio
from gitops_acp.store.git import ReadOnlyRepo
from tests.conftest import commit_files, git
from tests.test_yamlio import _text, _value

PATHS = [
    ("status", "statusDetail"),
    ("status", "error"),
    ("metadata", "annotations", ANNOTATION_FIRST_CHECKPOINT),
]
ABSENT = object()


def _pyyaml(data: bytes) -> list[object] | None:
    """What PyYAML reads at each path (ABSENT where a key is missing); None if it cannot read it."""
    try:
        doc = yaml.load(data, Loader=yaml.CSafeLoader)
    except (yaml.YAMLError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    found: list[object] = []
    for path in PATHS:
        node: Any = doc
        for key in path:
            if not isinstance(node, dict):
                node = "not a mapping"
                break
            node = node.get(key, ABSENT)
            if node is ABSENT:
                break
        found.append(node)
    return found


def _agrees(data: bytes) -> bool:
    """Check the fast answer against PyYAML's; return whether there was one."""
    fast = statusfields.strings(data, *PATHS)
    if fast is None:
        return False
    reference = _pyyaml(data)
    assert reference is not None, data
    assert [ABSENT if value is None else value for value in fast] == reference, data
    return True


TRICKY = [
    "LLM final response received",
    'Waiting for agent "my-assistant" to become ready (waiting for LLM "local-stub")',
    "tool call add-numbers-tc-01: Failed",
    "a: b",
    "key:value",
    "# not a comment",
    "x #y",
    "trail ",
    " lead",
    "'single'",
    '"double"',
    "back\\slash",
    "tab\there",
    "two\nlines",
    "ends with newline\n",
    "two trailing newlines\n\n",
    "\n starts with a newline",
    "line\n  indented\n\nafter a blank",
    "trailing space \non a line",
    "crlf\r\nline",
    "unicode: é ✓ 漢字 😀",
    "emoji and control \x01 😀",
    "nbsp\xa0and\u2028separator",
    "nul\x00",
    "yes",
    "no tools",
    "null",
    "~",
    "1.0",
    "0x1F",
    "0b_",
    "2026-11-22",
    "2026-11-22T10:00:00Z",
    "=",
    "<<",
    "-x",
    "- x",
    "---",
    "...",
    "[x]",
    "{x}",
    "|",
    "*ref",
    "&anchor",
    "!tag",
    "%x",
    "@x",
    "`x",
    "",
]


@pytest.mark.parametrize("value", TRICKY)
def test_tricky_values_read_as_pyyaml_reads_them(value: str) -> None:
    doc = {
        "apiVersion": "acp.gitops.dev/v1alpha1",
        "kind": "Task",
        "metadata": {
            "name": "t",
            "annotations": {ANNOTATION_FIRST_CHECKPOINT: "2026-11-05T07:45:44.280778Z"},
        },
        "spec": {"agentRef": {"name": "a"}, "userMessage": value},
        "status": {
            "phase": "Failed",
            "statusDetail": value,
            "error": value,
            "contextWindow": [{"role": "user", "content": value}, {"role": "tool", "content": [value, {}]}],
        },
    }
    data = yamlio.dump(doc)
    # What the writer writes is read without PyYAML, every value (a line ending in a blank is
    # quoted, not put in a literal block, which this reader declines: `yamlio._block`).
    assert _agrees(data), data


@pytest.mark.parametrize("seed", range(3))
def test_random_documents_agree_with_pyyaml(seed: int) -> None:
    rnd = random.Random(seed)
    answered = 0
    for _ in range(2000):
        doc: dict[str, Any] = {_text(rnd): _value(rnd) for _ in range(rnd.randint(1, 3))}
        doc["metadata"] = {"annotations": {ANNOTATION_FIRST_CHECKPOINT: _text(rnd)}}
        status = {_text(rnd): _value(rnd) for _ in range(rnd.randint(0, 3))}
        for field in ("statusDetail", "error"):
            if rnd.random() < 0.7:
                status[field] = rnd.choice([_text(rnd), f"{_text(rnd)}\n{_text(rnd)}", _value(rnd)])
        doc["status"] = status
        strings = all(isinstance(status.get(field, ""), str) for field in ("statusDetail", "error"))
        # Answered without PyYAML whenever the fields asked for are strings: what the emitter
        # writes, this reader reads (a number or a list there is PyYAML's to say).
        assert _agrees(yamlio.dump(doc)) == strings, doc
        answered += strings
    assert answered > 1000


MUTATIONS = [
    " ",
    "  ",
    "-",
    "- ",
    ":",
    ": ",
    "\n",
    "#",
    '"',
    "'",
    "|",
    "|+",
    ">",
    "{",
    "[",
    "\t",
    "\\",
    "\\ud800",
]
MUTATIONS += [
    "yes",
    "0x",
    "0b_",
    "2026-01-01",
    "=",
    "<<",
    "~",
    "...",
    "---",
    "é",
    "\x85",
    "!",
    "&a",
    "*a",
    "?",
    "%",
]


@pytest.mark.parametrize("seed", range(3))
def test_edited_files_are_answered_only_as_pyyaml_reads_them(seed: int) -> None:
    """Text the emitter never wrote (random edits of what it wrote): an answer is PyYAML's or none."""
    rnd = random.Random(seed)
    for _ in range(3000):
        doc = {_text(rnd): _value(rnd) for _ in range(rnd.randint(1, 3))}
        doc["status"] = {
            "statusDetail": rnd.choice([_text(rnd), f"{_text(rnd)}\n{_text(rnd)}"]),
            "error": _text(rnd),
        }
        text = yamlio.dump(doc).decode()
        for _ in range(rnd.randint(1, 3)):
            at = rnd.randint(0, len(text))
            if rnd.random() < 0.5:
                text = text[:at] + rnd.choice(MUTATIONS) + text[at:]
            elif rnd.random() < 0.6:
                text = text[:at] + text[at + rnd.randint(1, 3) :]
            else:
                lines = text.split("\n")
                i, j = rnd.randrange(len(lines)), rnd.randrange(len(lines))
                lines[i], lines[j] = lines[j], lines[i]
                text = "\n".join(lines)
        _agrees(text.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize(
    "text",
    [
        # PyYAML's own dumper, and hand-written YAML: valid, but not the emitter's
        "status:\n  statusDetail: 'single quoted'\n",
        "status:\n    statusDetail: four spaces\n",
        "status: {statusDetail: flow}\n",
        "status:\n  statusDetail: >\n    folded\n",
        "status:\n  statusDetail: plain\n    continued\n",
        '# a comment\nstatus:\n  statusDetail: "x"\n',
        '---\nstatus:\n  statusDetail: "x"\n',
        "status:\n  statusDetail: 2026-01-01\n",
        "status:\n  statusDetail: 12\n",
        "status:\n  statusDetail: null\n",
        "status:\n  statusDetail: x\n\n",
        "status:\n  statusDetail: x",
        "status: []\n",
        "status:\n  statusDetail: |\n    trailing \n",
        # not YAML, or not what yamlio.load accepts
        "status:\n  statusDetail: x\n error: y\n",
        "status:\n  statusDetail: a: b\n",
        "- status\n",
        'status:\n  statusDetail: "\\ud83d\\ude00"\n',
        "status:\n  statusDetail: \x85\n",
        "",
    ],
)
def test_what_is_not_certain_is_left_to_pyyaml(text: str) -> None:
    assert statusfields.strings(text.encode(), *PATHS) is None


def test_the_resolver_patterns_are_pyyamls() -> None:
    """The copied patterns, by first character and in order, are exactly those PyYAML resolves with."""
    theirs = {
        first: [(tag.rsplit(":", 1)[1], pattern.pattern) for tag, pattern in resolvers]
        for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
        if first not in ("!", "&", "*")  # `!`, `&`, `*` never start a plain scalar the reader accepts
    }
    assert theirs == statusfields.RESOLVERS
    compiled = [
        pattern
        for resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.values()
        for _, pattern in resolvers
    ]
    # Compiled verbose, as `_Leaf.string` compiles them (those without blanks mean the same either way).
    assert all(p.flags & re.X or not any(c.isspace() for c in p.pattern) for p in compiled)


def test_keys_a_resolver_may_claim_cannot_be_asked_for() -> None:
    with pytest.raises(ValueError, match="must not start with"):
        statusfields.strings(b"true: x\n", ("true",))


def test_real_status_files_of_a_demo_run(tmp_path: Path) -> None:
    """Every status file a real run writes (through the reconciler) is read without PyYAML, the same."""
    demo = tmp_path / "demo"
    subprocess.run(
        [sys.executable, "-m", "gitops_acp", "demo", "--dir", str(demo)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    listed = subprocess.run(
        ["git", "-C", str(demo / "repo"), "rev-list", "--objects", "acp/status"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    blobs = [line.split()[0] for line in listed if line.endswith(".yaml")]
    assert len(blobs) > 10
    for sha in blobs:
        data = subprocess.run(
            ["git", "-C", str(demo / "repo"), "cat-file", "blob", sha], check=True, capture_output=True
        ).stdout
        assert _agrees(data), data


def test_history_reads_other_styles_through_pyyaml(repo: Path) -> None:
    """A status file in another style (PyYAML's dumper, by hand) is read by PyYAML: the same events."""
    path = status_path(Kind.Task, "t")
    emitted = {"metadata": {"name": "t"}, "status": {"statusDetail": "Waiting: for it", "error": "a\nb"}}
    commit_files(repo, {path: yamlio.dump(emitted).decode()}, "Task/t: - -> Pending")
    stamp = "2000-01-01T00:00:00.000000Z"  # long before the commits: the walk is not cut short
    other = {**emitted, "metadata": {"name": "t", "annotations": {ANNOTATION_FIRST_CHECKPOINT: stamp}}}
    commit_files(repo, {path: yaml.safe_dump(other, default_style="'")}, "Task/t: Pending -> Failed")
    git(repo, "update-ref", "refs/heads/acp/status", "HEAD")
    assert statusfields.strings(yaml.safe_dump(other, default_style="'").encode(), *PATHS) is None
    with ReadOnlyRepo.open(repo) as reader:
        events = history.events(reader, kind="Task", name="t")
    assert [(e.old_phase, e.new_phase, e.detail) for e in events] == [
        ("Pending", "Failed", "Waiting: for it; error: a\nb"),
        ("-", "Pending", "Waiting: for it; error: a\nb"),
    ]


# -- the whole document (`statusfields.document`: `get KIND NAME` and `describe`) ---------------


def _same(a: object, b: object) -> bool:
    """Equal as data, NaN equal to NaN, and of the same types (1 is not 1.0, nor True)."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _whole_agrees(data: bytes) -> bool:
    """Check the fast document against PyYAML's; return whether there was one."""
    fast = statusfields.document(data)
    if fast is None:
        return False
    reference = yaml.load(data, Loader=yaml.CSafeLoader)
    assert _same(fast, reference), (data, fast, reference)
    return True


@pytest.mark.parametrize("seed", range(3))
def test_random_documents_are_read_whole_as_pyyaml_reads_them(seed: int) -> None:
    rnd = random.Random(seed)
    answered = 0
    for _ in range(2000):
        doc: dict[str, Any] = {_text(rnd): _value(rnd) for _ in range(rnd.randint(1, 4))}
        doc[rnd.choice(["status", "spec", "x"])] = {_text(rnd): _value(rnd) for _ in range(3)}
        doc["numbers"] = [rnd.randint(-(10**6), 10**6), rnd.random() * 10 ** rnd.randint(-300, 300), -0.0]
        data = yamlio.dump(doc)
        assert _whole_agrees(data), data  # what the emitter writes, this reader reads
        answered += 1
        assert _same(statusfields.document(data), doc)  # what was written, read back
    assert answered == 2000


@pytest.mark.parametrize("value", TRICKY)
def test_tricky_values_are_read_whole_as_pyyaml_reads_them(value: str) -> None:
    doc = {
        "kind": "Task",
        "spec": {"userMessage": value, value or "empty": [value, {value or "k": value}, [value]]},
        "status": {"phase": "Failed", "n": 3, "x": 0.25, "ok": True, "none": None, "empty": [], "map": {}},
    }
    # every value, `...` too (as a key it is quoted: a key line starting with `...` is declined)
    assert _whole_agrees(yamlio.dump(doc))


EDITS = [*MUTATIONS, "1", "0", "true", "null", "1.5", "-", "e+5"]


EDITS = [*MUTATIONS, "1", "0", "true", "null", "1.5", "-", "e+5"]


@pytest.mark.parametrize("seed", range(3))
def test_edited_files_are_read_whole_only_as_pyyaml_reads_them(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(3000):
        doc = {_text(rnd): _value(rnd) for _ in range(rnd.randint(1, 3))}
        text = yamlio.dump(doc).decode()
        for _ in range(rnd.randint(1, 3)):
            at = rnd.randint(0, len(text))
            if rnd.random() < 0.5:
                text = text[:at] + rnd.choice(EDITS) + text[at:]
            else:
                text = text[:at] + text[at + rnd.randint(1, 3) :]
        try:
            readable = yaml.load(text.encode("utf-8", "surrogatepass"), Loader=yaml.CSafeLoader)
        except (yaml.YAMLError, ValueError, UnicodeError):
            readable = None
        fast = statusfields.document(text.encode("utf-8", "surrogatepass"))
        if fast is not None:
            assert isinstance(readable, dict), text
            assert _same(fast, readable), text


@pytest.mark.parametrize(
    "text",
    [
        # scalars PyYAML builds otherwise than the emitter writes their kind: left to PyYAML
        "a: yes\n",
        "a: True\n",
        "a: ~\n",
        "a: Null\n",
        "a: 007\n",
        "a: 0x1F\n",
        "a: 1_000\n",
        "a: 1:30\n",
        "a: 1_0.5\n",
        "a: 2026-01-01\n",
        # keys that are not strings to PyYAML
        "true: x\n",
        "1: x\n",
        "null: x\n",
        "a:\n  1.5: x\n",
        # other styles
        "a: [1, 2]\n",
        "a: {b: 1}\n",
        "a: 'x'\n",
        "---\na: 1\n",
        "a: 1\n---\nb: 2\n",
        "# comment\na: 1\n",
    ],
)
def test_what_is_not_certain_is_read_whole_by_pyyaml(text: str) -> None:
    assert statusfields.document(text.encode()) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\n", {"a": 1}),
        ("a: -0\n", {"a": 0}),
        ("a: +12\n", {"a": 12}),
        ("a: 1.5\n", {"a": 1.5}),
        ("a: 1.\n", {"a": 1.0}),
        ("a: .5\n", {"a": 0.5}),
        ("a: 1.0e+20\n", {"a": 1e20}),
        ("a: -.inf\n", {"a": float("-inf")}),
        ("a: .NaN\n", {"a": float("nan")}),
        ("a: 1e5\n", {"a": "1e5"}),  # YAML 1.1: no dot, no float
        ("a: 0o17\n", {"a": "0o17"}),  # YAML 1.1's octal is 017
        ("a: true\nb: false\nc: null\n", {"a": True, "b": False, "c": None}),
        ("a:\n- 1\n- b: 2\n  c: x\n-\n  - y\n", {"a": [1, {"b": 2, "c": "x"}, ["y"]]}),
        ("a: []\nb: {}\n", {"a": [], "b": {}}),
        ('"1": x\n"true": y\n', {"1": "x", "true": "y"}),
        ("a: |-\n  two\n  lines\n", {"a": "two\nlines"}),
    ],
)
def test_scalars_are_built_as_pyyaml_builds_them(text: str, expected: dict[str, object]) -> None:
    assert _same(statusfields.document(text.encode()), expected)
    assert _same(yaml.load(text, Loader=yaml.CSafeLoader), expected)


def test_the_emitter_asks_the_same_resolvers_as_pyyaml() -> None:
    """`yamlio` writes a string plain exactly when PyYAML's resolver would read it back as one."""
    resolver = yaml.resolver.Resolver()
    rnd = random.Random(7)
    words = [*TRICKY, "1", "1.5", "1e5", "0x1F", "yes", "no", "on", "OFF", "~", "null", "<<", "=", ".inf"]
    words += [
        "".join(rnd.choice("0123456789.eE+-_:xob~ynYNtrufalsTRUEFALSE") for _ in range(4))
        for _ in range(3000)
    ]
    for word in words:
        theirs = resolver.resolve(yaml.ScalarNode, word, (True, False)) == "tag:yaml.org,2002:str"
        assert (statusfields.plain_tag(word) == "str") == theirs, word


@pytest.mark.parametrize(
    "line",
    [
        "phase:Running",  # no blank after the colon
        "phase: ",  # a blank and nothing
        "phase:  Running",  # two blanks: a value that starts with one
        'phase: "Run\\tning"',  # an escape in a quoted value
        'phase: "Run"ning"',  # a quote inside
        "phase: Run\tning",  # a tab inside a plain value
        'phase: "2026-12-07"',  # quoted: a string
        "phase: 2026-12-07",  # plain: a date
        "phase: 017",  # YAML 1.1's octal
    ],
)
def test_what_the_reader_remembers_of_earlier_files_changes_no_answer(line: str) -> None:
    """Keys and values met in earlier files are not matched again (a list reads 100,000 files),
    and the answer is the same as with nothing remembered, for lines a remembered key begins."""
    data = f"kind: Task\nstatus:\n  {line}\n".encode()
    statusfields._PLAIN_KEYS.clear()
    statusfields._PLAIN_VALUES.clear()
    statusfields._TAGS.clear()
    fresh = statusfields.document(data), statusfields.strings(data, ("status", "phase"))
    for earlier in ("kind: Task\nstatus:\n  phase: Running\n", "status:\n  phase: 017\n  at: 2026-12-07\n"):
        statusfields.document(earlier.encode())  # the second declined: 017 is an octal integer
    assert "phase" in statusfields._PLAIN_KEYS
    assert "017" in statusfields._PLAIN_VALUES
    remembered = statusfields.document(data), statusfields.strings(data, ("status", "phase"))
    assert _same(remembered, fresh)
    pyyaml = _pyyaml_document(data)
    assert fresh[0] is None or _same(fresh[0], pyyaml)


def _pyyaml_document(data: bytes) -> object:
    try:
        return yaml.load(data, Loader=yaml.CSafeLoader)
    except yaml.YAMLError:
        return None


@pytest.mark.parametrize(
    "value",
    [
        "a line ending in a blank \nand the next",
        "a tab at the end\t\nof a line",
        "the last line ends in a blank\n ok ",
        "0b",  # a string PyYAML reads as one, that this reader would not be sure of plain
        "0x1g",
        "-0b1",
        "63 ,-",
        "1234-",
        "...",  # also as a key: tests/test_statusfields.py's tricky values
    ],
)
def test_what_the_emitter_writes_is_read_without_pyyaml(value: str) -> None:
    """Found 2026-12-08: a multi-line string with a line ending in a blank went into a literal
    block, and a plain string beginning like a date or a binary number was written plain; this
    reader declines both, so `history` and `describe` of such a status loaded PyYAML (slower, and a
    flaky check in tests/e2e/test_readers.py). The emitter now quotes them."""
    data = yamlio.dump({"status": {"statusDetail": value, "error": value}})
    assert statusfields.strings(data, ("status", "statusDetail"), ("status", "error")) == [value, value]
    assert statusfields.document(data) == {"status": {"statusDetail": value, "error": value}}


@pytest.mark.parametrize(
    ("text", "uncertain"),
    [
        ("2026-13-45", True),  # matches the timestamp pattern, and is no date: PyYAML fails
        ("2026-12-08", True),
        ("1234-", True),
        ("1.0e-07", False),  # a float: no date begins so
        ("12a4-5", False),
        ("0b", True),
        ("-0x", True),
        ("=", True),
        ("0", False),
        ("b0", False),
    ],
)
def test_uncertain_plain_scalars(text: str, uncertain: bool) -> None:
    assert statusfields.uncertain_plain(text) is uncertain
    if uncertain:  # declined when met plain in a file
        assert statusfields.document(f"x: {text}\n".encode()) is None
    assert statusfields.document(yamlio.dump({"x": text})) == {"x": text}  # written so that it is read
