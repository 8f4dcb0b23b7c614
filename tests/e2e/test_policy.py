"""`serve --policy FILE` (DESIGN §10): what the operator does not allow never happens.

A stdio MCP server whose command is not allowed is never spawned (its command would write a
marker file: the file never appears); one whose env sets a loader variable is refused; an HTTP MCP
server or a responseUrl outside the allowed URLs is never contacted (a listening socket counts the
connections: none), and a metadata address is refused even under a wildcard. An allowed server
still connects. A bad policy file is one line naming the field.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    API,
    MARKER_ENV,
    AcpRepo,
    Stub,
    cli,
    module_repo,
    no_servers_left,
    one_error_line,
    serve_args,
    task_yaml,
)

pytestmark = pytest.mark.e2e


class Listener:
    """A TCP socket on 127.0.0.1 that counts the connections made to it (closes each at once)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def _stdio(name: str, command: str, args: list[str], env: dict[str, str] | None = None) -> str:
    text = (
        f"apiVersion: {API}\nkind: MCPServer\nmetadata:\n  name: {name}\nspec:\n  transport: stdio\n"
        f"  command: {json.dumps(command)}\n  args: {json.dumps(args)}\n"
    )
    if env:
        text += "  env:\n" + "".join(
            f"    - name: {k}\n      value: {json.dumps(v)}\n" for k, v in env.items()
        )
    return text


def _http(name: str, url: str) -> str:
    header = f"apiVersion: {API}\nkind: MCPServer\nmetadata:\n  name: {name}\n"
    return header + f"spec:\n  transport: http\n  url: {url}\n"


@dataclass
class Run:
    repo: AcpRepo
    marker: Path
    listener: Listener
    serve_stderr: str
    returncode: int

    def status(self, plural: str, name: str) -> dict[str, object]:
        document = self.repo.status(plural, name)
        assert document is not None, f"{plural}/{name} has no status file"
        status: dict[str, object] = document["status"]
        return status


@pytest.fixture(scope="module")
def run(stub_process: Stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("policy")
    listener = Listener()
    marker = base / "spawned"
    # The policy globs on the command alone: the allowed server runs the interpreter through a path
    # of its own, so `forbidden` (the same interpreter by its usual path) is told apart.
    allowed_dir = base / "allowed-only"
    allowed_dir.mkdir()
    wrapper = allowed_dir / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    with no_servers_left() as servers_marker, module_repo(stub_process, base) as (repo, _):
        stub_process.rules({"match": "^Hook:", "content": "hooked answer"})
        spawn = f"open({str(marker)!r}, 'w').write('spawned')"
        test_server = ["-m", "gitops_acp.testing.mcp_server"]
        files = {
            "mcpservers/forbidden.yaml": _stdio("forbidden", sys.executable, ["-c", spawn]),
            "mcpservers/preload.yaml": _stdio(
                "preload", str(allowed_dir / "python"), ["-c", spawn], {"LD_PRELOAD": "/x.so"}
            ),
            "mcpservers/local.yaml": _http("local", f"http://127.0.0.1:{listener.port}/mcp"),
            "mcpservers/metadata.yaml": _http("metadata", "http://169.254.169.254/mcp"),
            "mcpservers/allowed.yaml": _stdio(
                "allowed", str(allowed_dir / "python"), test_server, {MARKER_ENV: servers_marker}
            ),
            "tasks/hooked.yaml": task_yaml("hooked", "Hook: answer me")
            + f"  responseUrl: http://127.0.0.1:{listener.port}/hook\n",
        }
        repo.commit(files, "MCP servers and a task the policy has opinions about")
        policy = base / "policy.yaml"
        policy.write_text(
            json.dumps(
                {
                    "mcp": {
                        "allowedCommands": ["npx", f"{allowed_dir}/*"],
                        "allowedUrls": ["https://mcp.example.com/*", "http://169.254.*/*"],
                    },
                    "responseUrls": ["https://hooks.example.com/*"],
                }
            )
        )
        args = serve_args(repo, "--policy", str(policy), "--log-dir", str(repo.logs), once=True)
        serve = cli(*args, timeout=120)
        try:
            yield Run(repo, marker, listener, serve.stderr, serve.returncode)
        finally:
            listener.close()


def test_serve_once_finishes_and_says_which_policy(run: Run) -> None:
    assert run.returncode == 0, run.serve_stderr
    assert "Traceback" not in run.serve_stderr
    assert "policy " in run.serve_stderr
    assert "2 command pattern(s), 2 MCP URL pattern(s), 1 responseUrl pattern(s)" in run.serve_stderr


def test_a_command_not_allowed_is_never_spawned(run: Run) -> None:
    status = run.status("mcpservers", "forbidden")
    assert status["status"] == "Error"
    assert f"command {sys.executable!r} is not allowed by the policy" in str(status["statusDetail"])
    assert not run.marker.exists()  # the process never ran


def test_a_loader_variable_in_env_is_refused(run: Run) -> None:
    status = run.status("mcpservers", "preload")  # an allowed command, with LD_PRELOAD
    assert status["status"] == "Error"
    assert "env may not set LD_PRELOAD" in str(status["statusDetail"])
    assert not run.marker.exists()


def test_an_allowed_server_still_connects(run: Run) -> None:
    status = run.status("mcpservers", "allowed")
    assert status["status"] == "Ready", status
    assert status["connected"] is True


def test_urls_outside_the_policy_are_never_contacted(run: Run) -> None:
    local = run.status("mcpservers", "local")
    assert local["status"] == "Error"
    assert f"URL http://127.0.0.1:{run.listener.port}/mcp is not allowed by the policy" in str(
        local["statusDetail"]
    )
    metadata = run.status("mcpservers", "metadata")  # matched by http://169.254.*/*, yet refused
    assert metadata["status"] == "Error"
    assert "a cloud metadata address (169.254.169.254)" in str(metadata["statusDetail"])
    task = run.status("tasks", "hooked")
    assert task["phase"] == "FinalAnswer"
    delivery = task["delivery"]
    assert isinstance(delivery, dict)
    assert delivery["state"] == "Failed"
    assert "is not allowed by the policy" in delivery["lastError"]
    assert "responseUrls" in delivery["lastError"]
    assert run.listener.connections == 0  # neither the MCP server nor the hook was contacted


def test_a_bad_policy_is_one_line_naming_the_field(acp_repo: AcpRepo, tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("mcp:\n  allowedCommands: [npx, 7]\n")
    result = cli(*serve_args(acp_repo, "--policy", str(bad), once=True))
    line = one_error_line(result)
    assert line == f"error: --policy {bad}: mcp.allowedCommands[1]: expected a non-empty string, got 7"
