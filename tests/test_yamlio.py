"""Status files: whatever `yamlio.dump` writes loads back as exactly the data it was given."""

from __future__ import annotations

import random
import string

import pytest
import yaml

from gitops_acp.store import yamlio

ALPHABET = string.printable + "é✓\u2028\x85\x00\ufeff\x7f😀\U0010fffd\ufffe"


def _text(rnd: random.Random) -> str:
    return "".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(0, 12)))


def _value(rnd: random.Random, depth: int = 0) -> object:
    choice = rnd.randint(0, 7 if depth < 3 else 4)
    if choice in (0, 3):
        return _text(rnd)
    if choice == 1:
        return rnd.randint(-(10**20), 10**20)
    if choice == 2:
        return rnd.choice([True, False, None, 0.5, -1e300, 1e-7, 3.0, float("inf")])
    if choice == 4:
        return _text(rnd) + "\n" + _text(rnd)
    if choice == 5:
        return [_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
    return {_text(rnd): _value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))}


@pytest.mark.parametrize("seed", range(4))
def test_random_documents_round_trip(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(1500):
        doc = {_text(rnd): _value(rnd) for _ in range(rnd.randint(1, 4))}
        assert yaml.load(yamlio.dump(doc), Loader=yaml.CSafeLoader) == doc


@pytest.mark.parametrize(
    "value",
    [
        "yes",
        "No",
        "1.0",
        "0x1F",
        "2026-11-22T10:00:00Z",
        "null",
        "~",
        "",
        " lead",
        "trail ",
        "a: b",
        "a #b",
        "-x",
        "*ref",
        "&anchor",
        "!tag",
        "%x",
        "@x",
        "`x",
        "'q'",
        '"q"',
        "{x}",
        "[x]",
        "1e3",
        ".inf",
        "=",
        "<<",
    ],
)
def test_strings_that_look_like_something_else_stay_strings(value: str) -> None:
    assert yamlio.load(yamlio.dump({"k": value})) == {"k": value}


def test_status_style_output_is_readable() -> None:
    doc = {
        "apiVersion": "acp.gitops.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": "hello", "labels": {}},
        "status": {
            "phase": "FinalAnswer",
            "turns": 2,
            "contextWindow": [
                {"role": "system", "content": "You help.\nBe brief.\n"},
                {"role": "user", "content": "Hi"},
            ],
        },
    }
    assert yamlio.dump(doc).decode() == (
        "apiVersion: acp.gitops.dev/v1alpha1\n"
        "kind: Task\n"
        "metadata:\n"
        "  name: hello\n"
        "  labels: {}\n"
        "status:\n"
        "  phase: FinalAnswer\n"
        "  turns: 2\n"
        "  contextWindow:\n"
        "  - role: system\n"
        "    content: |\n"
        "      You help.\n"
        "      Be brief.\n"
        "  - role: user\n"
        "    content: Hi\n"
    )


def test_other_types_fall_back_to_pyyaml() -> None:
    from gitops_acp.errors import StoreError

    assert yamlio.load(yamlio.dump({"pair": (1, 2)})) == {"pair": [1, 2]}  # PyYAML writes tuples as lists
    with pytest.raises(StoreError, match="cannot write as YAML"):
        yamlio.dump({"when": object()})  # and refuses what it cannot represent, with our error


def test_the_fast_raw_check_agrees_with_the_pattern() -> None:
    rnd = random.Random(7)
    alphabet = "".join(map(chr, range(0, 0x80))) + "é\u2028\x85\ufeff"
    for _ in range(20000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 6)))
        assert yamlio._raw_ok(text) == (yamlio._raw_ok_pattern().fullmatch(text) is not None), repr(text)


def test_a_string_seen_before_is_written_the_same() -> None:
    """The second dump takes every short string and key from the caches; the bytes must not change."""
    rnd = random.Random(11)
    docs = [{_text(rnd): _value(rnd) for _ in range(rnd.randint(1, 4))} for _ in range(500)]
    first = [yamlio.dump(doc) for doc in docs]
    assert [yamlio.dump(doc) for doc in docs] == first
    yamlio._strings.clear()
    yamlio._keys.clear()
    assert [yamlio.dump(doc) for doc in docs] == first


@pytest.mark.parametrize(
    "value",
    [
        "x\x01 😀",  # an emoji and a control character: JSON's ASCII escapes made a surrogate pair
        "\x1b[31m✓ done 🎉\x1b[0m",  # a tool's coloured output
        "😀\x85\u2028\ufeff\ufffe\x7f",
    ],
)
def test_characters_beyond_u_ffff_beside_control_characters_read_back(value: str) -> None:
    assert yaml.load(yamlio.dump({"k": value}), Loader=yaml.CSafeLoader) == {"k": value}
    assert yamlio.load(yamlio.dump({"k": value})) == {"k": value}


def test_a_lone_surrogate_is_written_as_the_replacement_character() -> None:
    """Text decoded from bad JSON may hold one; it has no UTF-8 form, and YAML refuses its escape."""
    for value in ("lone \ud800", "lone \udfff \x01", "\ud83d😀"):
        expected = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
        assert yamlio.load(yamlio.dump({"k": value})) == {"k": expected}
