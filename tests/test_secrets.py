"""secretKeyRef resolution: a mounted-secrets directory first, then the environment; values never leak."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gitops_acp.errors import SecretError
from gitops_acp.secrets import SecretResolver

OWNER = 'LLM "gpt-4o"'
VALUE = "sk-file-value-123"


def write_secret(root: Path, name: str, key: str, text: str) -> Path:
    path = root / name / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_file_beats_environment(tmp_path: Path) -> None:
    write_secret(tmp_path, "openai", "OPENAI_API_KEY", VALUE)
    resolver = SecretResolver(tmp_path, environ={"OPENAI_API_KEY": "sk-from-env"})
    assert resolver.resolve("openai", "OPENAI_API_KEY", owner=OWNER) == VALUE


def test_environment_is_the_fallback(tmp_path: Path) -> None:
    write_secret(tmp_path, "other", "OPENAI_API_KEY", VALUE)  # another secret's key does not count
    resolver = SecretResolver(tmp_path, environ={"OPENAI_API_KEY": "sk-from-env"})
    assert resolver.resolve("openai", "OPENAI_API_KEY", owner=OWNER) == "sk-from-env"


def test_environment_only_without_secrets_dir() -> None:
    resolver = SecretResolver(None, environ={"OPENAI_API_KEY": "sk-from-env"})
    assert resolver.resolve("openai", "OPENAI_API_KEY", owner=OWNER) == "sk-from-env"


def test_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITOPS_ACP_TEST_KEY", "from-os-environ")
    assert SecretResolver(None).resolve("s", "GITOPS_ACP_TEST_KEY", owner=OWNER) == "from-os-environ"


def test_missing_names_both_places_and_no_value(tmp_path: Path) -> None:
    write_secret(tmp_path, "openai", "OTHER_KEY", VALUE)
    resolver = SecretResolver(tmp_path, environ={"UNRELATED": "sk-env-value"})

    with pytest.raises(SecretError) as caught:
        resolver.resolve("openai", "OPENAI_API_KEY", owner=OWNER)

    assert str(caught.value) == (
        f'LLM "gpt-4o": secret "openai" has no key OPENAI_API_KEY '
        f"(looked in --secrets-dir {tmp_path} and the environment)"
    )


def test_missing_without_secrets_dir_says_so() -> None:
    with pytest.raises(SecretError) as caught:
        SecretResolver(None, environ={}).resolve("openai", "OPENAI_API_KEY", owner=OWNER)
    assert str(caught.value) == (
        'LLM "gpt-4o": secret "openai" has no key OPENAI_API_KEY '
        "(looked in the environment; no --secrets-dir given)"
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("abc\n", "abc"),
        ("abc\r\n", "abc"),
        ("abc\n\n", "abc\n"),  # one newline only: the rest is part of the value
        ("abc", "abc"),
        ("  abc  \n", "  abc  "),
    ],
)
def test_one_trailing_newline_is_stripped(tmp_path: Path, text: str, value: str) -> None:
    write_secret(tmp_path, "s", "k", text)
    assert SecretResolver(tmp_path, environ={}).resolve("s", "k", owner=OWNER) == value


@pytest.mark.parametrize("text", ["", "\n"])
def test_empty_file_is_an_error_not_a_fallback(tmp_path: Path, text: str) -> None:
    path = write_secret(tmp_path, "openai", "OPENAI_API_KEY", text)
    resolver = SecretResolver(tmp_path, environ={"OPENAI_API_KEY": "sk-env"})

    with pytest.raises(SecretError) as caught:
        resolver.resolve("openai", "OPENAI_API_KEY", owner=OWNER)

    assert str(caught.value) == f'LLM "gpt-4o": secret "openai": key OPENAI_API_KEY is empty (file {path})'


def test_empty_environment_variable_is_an_error() -> None:
    with pytest.raises(SecretError, match="key OPENAI_API_KEY is empty"):
        SecretResolver(None, environ={"OPENAI_API_KEY": ""}).resolve("openai", "OPENAI_API_KEY", owner=OWNER)


def test_unreadable_path_is_an_error_without_content(tmp_path: Path) -> None:
    (tmp_path / "openai" / "OPENAI_API_KEY").mkdir(parents=True)
    with pytest.raises(SecretError, match=r"cannot read key OPENAI_API_KEY from .*: Is a directory"):
        SecretResolver(tmp_path, environ={}).resolve("openai", "OPENAI_API_KEY", owner=OWNER)


def test_non_utf8_file_is_an_error_without_content(tmp_path: Path) -> None:
    path = tmp_path / "s" / "k"
    path.parent.mkdir()
    path.write_bytes(b"\xff\xfesecret")
    with pytest.raises(SecretError) as caught:
        SecretResolver(tmp_path, environ={}).resolve("s", "k", owner=OWNER)
    assert "not UTF-8" in str(caught.value)
    assert "secret" not in str(caught.value).split(":", 2)[-1]


@pytest.mark.parametrize(
    ("name", "key"), [("..", "k"), ("../etc", "passwd"), ("s", "../k"), ("s", ".."), ("S", "k")]
)
def test_names_cannot_leave_the_secrets_dir(tmp_path: Path, name: str, key: str) -> None:
    write_secret(tmp_path / "inner", "s", "k", VALUE)
    resolver = SecretResolver(tmp_path / "inner", environ={})
    with pytest.raises(SecretError, match="invalid"):
        resolver.resolve(name, key, owner=OWNER)


def test_repr_shows_no_environment(tmp_path: Path) -> None:
    resolver = SecretResolver(tmp_path, environ={"OPENAI_API_KEY": "sk-env-value"})
    assert "sk-env-value" not in repr(resolver)


def test_fingerprint_notices_rotation_without_showing_the_value(tmp_path: Path) -> None:
    path = write_secret(tmp_path, "openai", "OPENAI_API_KEY", VALUE)
    resolver = SecretResolver(tmp_path, environ={})

    before = resolver.fingerprint("openai", "OPENAI_API_KEY")
    assert before is not None
    assert before == resolver.fingerprint("openai", "OPENAI_API_KEY")
    assert VALUE not in before
    assert len(before) == 16

    path.write_text("sk-rotated\n")
    after = resolver.fingerprint("openai", "OPENAI_API_KEY")
    assert after is not None
    assert after != before

    assert resolver.fingerprint("openai", "MISSING") is None


def test_every_resolve_reads_the_file_again(tmp_path: Path) -> None:
    """Nothing is cached: a same-length rewrite in the same clock tick and a Kubernetes-style
    symlink swap are both seen by the very next call."""
    path = write_secret(tmp_path, "openai", "OPENAI_API_KEY", "sk-aaaa\n")
    resolver = SecretResolver(tmp_path, environ={})
    assert resolver.resolve("openai", "OPENAI_API_KEY", owner=OWNER) == "sk-aaaa"
    stat = path.stat()
    path.write_text("sk-bbbb\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    assert resolver.resolve("openai", "OPENAI_API_KEY", owner=OWNER) == "sk-bbbb"

    mounted = tmp_path / "mounted"
    for version, value in (("v1", "sk-one"), ("v2", "sk-two")):
        write_secret(mounted / version, "x", "KEY", value)
    (mounted / "..data").symlink_to(mounted / "v1")
    (mounted / "openai").symlink_to(mounted / "..data" / "x")
    resolver = SecretResolver(mounted, environ={})
    assert resolver.resolve("openai", "KEY", owner=OWNER) == "sk-one"
    (mounted / "..data_tmp").symlink_to(mounted / "v2")
    os.replace(mounted / "..data_tmp", mounted / "..data")
    assert resolver.resolve("openai", "KEY", owner=OWNER) == "sk-two"


def test_a_large_file_is_read_whole(tmp_path: Path) -> None:
    value = "k" * 200_000  # more than one read() of the resolver
    write_secret(tmp_path, "big", "KEY", value + "\n")
    assert SecretResolver(tmp_path, environ={}).resolve("big", "KEY", owner=OWNER) == value


def test_fingerprints_differ_across_processes(tmp_path: Path) -> None:
    write_secret(tmp_path, "openai", "OPENAI_API_KEY", VALUE)
    code = (
        "import sys; from pathlib import Path; from gitops_acp.secrets import SecretResolver; "
        "print(SecretResolver(Path(sys.argv[1]), environ={}).fingerprint('openai', 'OPENAI_API_KEY'))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    other = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()

    ours = SecretResolver(tmp_path, environ={}).fingerprint("openai", "OPENAI_API_KEY")
    assert other
    assert ours
    assert other != ours
