"""The redaction of secret values (gitops_acp/redaction.py, DESIGN §10)."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import pytest

from gitops_acp import redaction
from gitops_acp.secrets import SecretResolver


def test_values_a_resolver_read_are_redacted_everywhere_in_a_document(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    (secrets_dir / "api").mkdir(parents=True)
    (secrets_dir / "api" / "KEY").write_text("sk-live-1234567890\n")
    SecretResolver(secrets_dir, environ={"TOKEN": "tok-abcdef"}).resolve("api", "KEY", owner="t")
    SecretResolver(None, environ={"TOKEN": "tok-abcdef"}).resolve("env", "TOKEN", owner="t")
    doc = {
        "spec": {"n": 3, "ok": True, "none": None},
        "status": {"output": "key sk-live-1234567890 and tok-abcdef", "window": [{"content": "tok-abcdef!"}]},
    }
    clean = redaction.document(doc)
    assert clean["status"]["output"] == "key [redacted api/KEY] and [redacted env/TOKEN]"
    assert clean["status"]["window"] == [{"content": "[redacted env/TOKEN]!"}]
    assert clean["spec"] is doc["spec"]  # untouched parts are shared, not copied
    assert doc["status"]["output"].startswith("key sk-live")  # the input is not changed
    untouched = {"status": {"output": "nothing here"}}
    assert redaction.document(untouched) is untouched


def test_a_longer_value_containing_another_is_replaced_whole_and_short_ones_are_not_secrets() -> None:
    redaction.remember("a", "SHORT", "abc")
    redaction.remember("b", "K", "secret-one")
    redaction.remember("c", "K", "secret-one-two")
    assert redaction.text("x secret-one-two y secret-one abc") == ("x [redacted c/K] y [redacted b/K] abc")


def test_a_rotated_value_stays_known() -> None:
    redaction.remember("a", "K", "first-value")
    redaction.remember("a", "K", "second-value")
    assert redaction.text("first-value second-value") == "[redacted a/K] [redacted a/K]"


def test_log_lines_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    redaction.remember("a", "K", "hunter2-hunter2")
    logger = logging.getLogger("test.redaction")
    handler = logging.StreamHandler()
    records: list[str] = []
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    handler.addFilter(redaction.LogFilter())
    logger.addHandler(handler)
    try:
        logger.warning("calling with %s", "hunter2-hunter2")
    finally:
        logger.removeHandler(handler)
    assert records == ["calling with [redacted a/K]"]


@pytest.mark.parametrize("value", ['pa"ss\\word-1', "naïve-secret", "tab\there-secret", "plain-secret-1"])
def test_values_json_escapes_are_found_too(value: str) -> None:
    redaction.remember("s", "K", value)
    doc = {"status": {"output": f"<{value}>", "list": [1, None, {"x": value}]}}
    assert redaction.document(doc) == {
        "status": {"output": "<[redacted s/K]>", "list": [1, None, {"x": "[redacted s/K]"}]}
    }


@pytest.mark.parametrize(
    "value", ['pa"ss\\word-1', "it's-a-secret", "naïve-secret", "tab\there-secret", "plain-secret-1"]
)
@pytest.mark.parametrize(
    "around",
    [
        "{}",  # alone: a plain scalar where YAML allows
        "key: {} # not a comment",  # quoted
        "first line\n  {} in a literal block\n",  # a literal block
        "\x85 {} \x07",  # characters YAML writes escaped
        "x" * 300 + " {} " + "y" * 300,  # long: never folded
    ],
)
def test_a_status_file_holding_a_value_is_told_apart_from_one_that_does_not(value: str, around: str) -> None:
    """`may_hold` looks at the file the checkpoint writes instead of the document: every way
    `yamlio.dump` can write the value (plain, quoted, in a literal block, by PyYAML) is found."""
    from gitops_acp.store import yamlio

    assert not redaction.may_hold(yamlio.dump({"status": {"output": around.format(value)}}))  # not known yet
    redaction.remember("s", "K", value)
    for doc in (
        {"status": {"output": around.format(value)}},
        {"status": {"contextWindow": [{"role": "tool", "content": around.format(value)}]}},
        {"status": {"output": around.format(value), "when": datetime.date(2026, 1, 1)}},  # by PyYAML
    ):
        assert redaction.may_hold(yamlio.dump(doc)), doc
    without = redaction.may_hold(yamlio.dump({"status": {"output": around.format("nothing-here")}}))
    # A value with characters escaped in more than one way (a tab, non-ASCII) always takes the walk.
    assert without is not (value.isascii() and value.isprintable())
