"""The operator's policy file (DESIGN §10): read with one-line errors, and what it allows."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from gitops_acp import policy
from gitops_acp.errors import UserError

POLICY = """\
mcp:
  allowedCommands: ["npx", "/opt/tools/*"]
  allowedUrls: ["https://mcp.example.com/*", "https://*.tools.example.com/*", "http://169.254.169.254/latest/*"]
responseUrls: ["https://hooks.example.com/acp/*"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def resolver(address: str) -> Any:
    def resolve(host: str, port: object, **_: object) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 0))]

    return resolve


@pytest.fixture
def loaded(tmp_path: Path) -> policy.Policy:
    found = policy.load(write(tmp_path, POLICY))
    assert found is not None
    return found


def test_no_file_is_no_policy_and_the_log_line_says_everything_is_allowed() -> None:
    assert policy.load(None) is None
    assert policy.describe(None).startswith("no --policy: every MCP command and URL")


@pytest.mark.parametrize(
    ("command", "env", "allowed"),
    [
        ("npx", [], True),
        ("/opt/tools/search", ["API_TOKEN"], True),
        ("/usr/bin/npx", [], False),  # globs on the command as written
        ("sh", [], False),
        ("npx", ["LD_PRELOAD"], False),
        ("npx", ["NODE_OPTIONS", "X"], False),
        ("npx", ["path"], False),  # PATH, any case
    ],
)
def test_stdio_commands_and_loader_variables(
    loaded: policy.Policy, command: str, env: list[str], allowed: bool
) -> None:
    reason = loaded.refuse_mcp("stdio", command, env, None)
    assert (reason is None) is allowed
    if reason is not None:
        assert str(loaded.source) in reason


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://mcp.example.com/mcp", True),
        ("https://a.tools.example.com/mcp", True),
        ("https://evil.test/.tools.example.com/mcp", False),  # the host is matched on its own
        ("https://mcp.example.com.evil.test/mcp", False),
        ("https://user:pw@mcp.example.com/mcp", False),  # credentials in a URL match nothing
        ("http://mcp.example.com/mcp", False),  # another scheme
        ("https://mcp.example.com:8443/mcp", False),  # another port
        ("http://169.254.169.254/latest/meta-data", True),  # named literally: the operator's choice
    ],
)
def test_mcp_urls(loaded: policy.Policy, url: str, allowed: bool) -> None:
    found = policy.Policy(
        loaded.source, loaded.allowed_commands, loaded.allowed_urls, resolve=resolver("93.184.216.34")
    )
    assert (found.refuse_mcp("http", None, [], url) is None) is allowed


@pytest.mark.parametrize(
    ("address", "what"),
    [
        ("169.254.169.254", "a cloud metadata address"),
        ("169.254.10.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("fd00:ec2::254", "a cloud metadata address"),
    ],
)
def test_a_name_resolving_to_an_internal_address_is_refused_unless_named(address: str, what: str) -> None:
    wide = policy.Policy("p.yaml", allowed_urls=("https://*/*",), resolve=resolver(address))
    reason = wide.refuse_mcp("http", None, [], "https://innocent.example.com/mcp")
    assert reason is not None
    assert what in reason
    literal = policy.Policy(
        "p.yaml", allowed_urls=(f"http://[{address}]/*" if ":" in address else f"http://{address}/*",)
    )
    url = f"http://[{address}]/x" if ":" in address else f"http://{address}/x"
    assert literal.refuse_mcp("http", None, [], url) is None
    assert wide.refuse_url("https://metadata.google.internal/x", wide.allowed_urls, "f") is not None


def test_response_urls(loaded: policy.Policy) -> None:
    found = policy.Policy(
        loaded.source, response_urls=loaded.response_urls, resolve=resolver("93.184.216.34")
    )
    assert found.refuse_response_url("https://hooks.example.com/acp/done") is None
    reason = found.refuse_response_url("https://hooks.example.com/other")
    assert reason is not None
    assert "responseUrls" in reason


def test_an_empty_policy_allows_nothing(tmp_path: Path) -> None:
    empty = policy.load(write(tmp_path, ""))
    assert empty is not None
    assert empty.refuse_mcp("stdio", "npx", [], None) is not None
    assert empty.refuse_response_url("https://x.example.com/") is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "mcp:\n  allowedCommand: [npx]\n",
            "mcp.allowedCommand: unknown field (expected one of allowedCommands, allowedUrls)",
        ),
        ("mcp:\n  allowedCommands: npx\n", "mcp.allowedCommands: expected a list of strings"),
        ("mcp:\n  allowedCommands: [npx, 3]\n", "mcp.allowedCommands[1]: expected a non-empty string, got 3"),
        (
            "responseUrls: [hooks.example.com]\n",
            "responseUrls[0]: 'hooks.example.com' must start with http:// or https://",
        ),
        ("approvers: []\n", "approvers: unknown field"),
        ("- a\n", "expected a mapping of mcp, responseUrls and signers"),
        ("mcp: [\n", "not YAML"),
        ("signers:\n  requireSignedMain: true\n", "requireSignedMain: set signers.allowedSignersFile"),
        ("signers:\n  requireSignedMain: yes please\n", "signers.requireSignedMain: expected true or false"),
        ("signers:\n  allowedSignersFile: /nowhere/a\n", "signers.allowedSignersFile: /nowhere/a is not"),
        ("signers:\n  gpgHome: 3\n", "signers.gpgHome: expected a path, got 3"),
        ("signers:\n  allowedSigners: /x\n", "signers.allowedSigners: unknown field"),
    ],
)
def test_mistakes_are_one_line_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UserError) as raised:
        policy.load(path)
    assert str(raised.value).startswith(f"--policy {path}: ")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^--policy .*nowhere.yaml: cannot read it"):
        policy.load(tmp_path / "nowhere.yaml")


def test_signers_are_read_and_described(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed_signers"
    allowed.write_text("alice@example.com ssh-ed25519 AAAA\n")
    path = write(tmp_path, f"signers:\n  allowedSignersFile: {allowed}\n  requireSignedMain: true\n")
    loaded = policy.load(path)
    assert loaded is not None
    assert loaded.allowed_signers_file == allowed.resolve()
    assert loaded.require_signed_main
    assert loaded.has_signers
    assert "main must be signed by an allowed signer" in policy.describe(loaded)
    only_signers = write(tmp_path, f"signers:\n  allowedSignersFile: {allowed}\n")
    described = policy.describe(policy.load(only_signers))
    assert "approvers identified by signature" in described
