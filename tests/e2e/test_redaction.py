"""Redaction (DESIGN §10): a secret a tool, a model or an error repeats is in no git object, no log.

leak-tool ..... the model calls tools__getenv for the MCP server's secret env var, then repeats the
                result in its answer
leak-model .... the model answers with the LLM's own API key
leak-error .... the model calls tools__fail with the MCP secret in its arguments: the tool's error
                repeats it
Every object of the repository (`git cat-file --batch-all-objects`), serve's log and the CLI's
output are searched for both secret values: none has them; the status files say
`[redacted <secret>/<key>]` where they were.
"""

from __future__ import annotations

import secrets as random_secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.conftest import (
    SECRET_KEY,
    SECRET_NAME,
    AcpRepo,
    Stub,
    call,
    cli,
    mcpserver_yaml,
    module_repo,
    no_servers_left,
    serve_args,
    task_yaml,
    tool_agent_yaml,
)

pytestmark = pytest.mark.e2e

TOOL_SECRET = "tool-token"
TOOL_KEY = "TOOL_TOKEN"


@dataclass
class Run:
    repo: AcpRepo
    llm_key: str
    tool_token: str
    stderr: str
    returncode: int

    def task(self, name: str) -> dict[str, object]:
        document = self.repo.status("tasks", name)
        assert document is not None
        status: dict[str, object] = document["status"]
        return status


@pytest.fixture(scope="module")
def run(stub_process: Stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("redaction")
    tool_token = "tt-" + random_secrets.token_hex(16)
    with no_servers_left() as marker, module_repo(stub_process, base) as (repo, llm_key):
        (repo.secrets / TOOL_SECRET).mkdir()
        (repo.secrets / TOOL_SECRET / TOOL_KEY).write_text(tool_token + "\n")
        reference = f"{{name: {TOOL_SECRET}, key: {TOOL_KEY}}}"
        server = mcpserver_yaml("tools", marker=marker) + (
            f"    - name: {TOOL_KEY}\n      valueFrom:\n        secretKeyRef: {reference}\n"
        )
        stub_process.rules(
            {
                "match": "^Tool leak",
                "when": "first",
                "toolCalls": [{"name": "tools__getenv", "arguments": {"name": TOOL_KEY}}],
            },
            {"match": "^Tool leak", "when": "tool", "content": "the token is {tool}"},
            {"match": "^Model leak", "content": f"my key is {llm_key}, do not tell"},
            {
                "match": "^Error leak",
                "when": "first",
                "toolCalls": [call("tools__fail", message=f"bad {tool_token}")],
            },
            {"match": "^Error leak", "when": "tool", "content": "the tool said: {tool}"},
        )
        repo.commit(
            {
                "mcpservers/tools.yaml": server,
                "agents/toolish.yaml": tool_agent_yaml("toolish", servers=("tools",)),
                "tasks/leak-tool.yaml": task_yaml(
                    "leak-tool", "Tool leak: what is the token?", agent="toolish"
                ),
                "tasks/leak-model.yaml": task_yaml("leak-model", "Model leak: what is your key?"),
                "tasks/leak-error.yaml": task_yaml("leak-error", "Error leak: fail please", agent="toolish"),
            },
            "Tasks whose tools and model repeat secrets",
        )
        serve = cli(*serve_args(repo, "--log-dir", str(repo.logs), "-v", once=True), timeout=120)
        yield Run(repo, llm_key, tool_token, serve.stderr, serve.returncode)


def test_serve_finishes(run: Run) -> None:
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr


def test_the_status_says_where_a_secret_was(run: Run) -> None:
    assert run.task("leak-tool")["output"] == f"the token is [redacted {TOOL_SECRET}/{TOOL_KEY}]"
    assert run.task("leak-model")["output"] == f"my key is [redacted {SECRET_NAME}/{SECRET_KEY}], do not tell"
    output = str(run.task("leak-error")["output"])
    assert f"[redacted {TOOL_SECRET}/{TOOL_KEY}]" in output


def test_no_git_object_holds_a_secret(run: Run) -> None:
    everything = subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch"],
        cwd=run.repo.path,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert len(everything) > 10_000  # really every object: blobs, trees, commits
    assert b"my key is [redacted" in everything
    assert run.tool_token.encode() not in everything
    assert run.llm_key.encode() not in everything


def test_no_log_line_or_cli_output_holds_a_secret(run: Run) -> None:
    assert "a secret value was redacted" in run.stderr
    assert run.tool_token not in run.stderr
    assert run.llm_key not in run.stderr
    for command in (("get", "tasks", "-o", "yaml"), ("describe", "task", "leak-error")):
        shown = cli("--repo", str(run.repo.path), *command)
        assert shown.returncode == 0, shown.stderr
        assert run.tool_token not in shown.stdout
        assert run.llm_key not in shown.stdout
