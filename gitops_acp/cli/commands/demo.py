"""`gitops-acp demo`: an offline end-to-end run in a temporary repository.

Starts the scripted OpenAI-compatible stub on a free 127.0.0.1 port, creates a repository from the
offline example (its LLM pointed at the stub), runs the reconciler until nothing can progress, and
shows what a user sees: `get`, `describe`, `history` and the status branch's log. One task hits a
scripted 503 first, so the run also shows ErrorBackoff recovering.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gitops_acp.cli.commands import describe, get, history

DEMO_SCRIPT: dict[str, Any] = {
    "rules": [
        {
            "match": "capital of the moon",
            "content": "The Moon has no capital: it has no government and no permanent residents.",
        },
        {
            "match": "Name a planet",
            "times": 1,
            "status": 503,
            "message": "upstream overloaded (scripted by the demo)",
        },
        {"match": "Name a planet", "content": "Saturn: its rings are the brightest in the solar system."},
        {
            "match": r"19\.5 \+ 22\.5",
            "when": "first",
            "toolCalls": [{"name": "tools__add", "arguments": {"a": 19.5, "b": 22.5}}],
        },
        {"match": r"19\.5 \+ 22\.5", "when": "tool", "content": "19.5 + 22.5 = {tool}, says the add tool."},
        {
            "match": "visitor",
            "when": "first",
            "toolCalls": [{"name": "tools__count", "arguments": {"label": "visitor"}}],
        },
        {"match": "visitor", "when": "tool", "content": "Done: that makes {tool} visitor(s)."},
    ]
}


def add_parser(subparsers: Any, name: str, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        name,
        parents=[common],
        help="an offline end-to-end run in a temporary repository",
        description="Run an offline end-to-end demo: a temporary repository, a local OpenAI-compatible stub.",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary repository and print its path"
    )
    parser.add_argument(
        "--dir", type=Path, help="create the demo repository here instead of a temporary directory"
    )
    parser.add_argument(
        "--http",
        metavar="ADDR",
        help="afterwards, keep serving on HOST:PORT (e.g. 127.0.0.1:8080) with the web view at / "
        "and the API (a token for it is written beside the repository); Ctrl-C stops",
    )
    parser.set_defaults(run=run)


def _section(title: str) -> None:
    print(f"\n=== {title}")


def _approve_as_a_reviewer(repo: Path) -> None:
    """Do what a reviewer does: look at the pending approval branch, then merge it into main."""
    from gitops_acp.cli.commits import git_as_user

    _section("gitops-acp get toolcalls  (one call waits for a person)")
    get.show(str(repo), "toolcalls")
    branches = git_as_user(
        repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/acp/approvals/"
    ).split()
    for branch in branches:
        _section(f"git show {branch}  (the proposal: a reviewer decides from this alone)")
        print(git_as_user(repo, "show", "--stat", "--format=%an: %B", branch))
        print(git_as_user(repo, "show", f"{branch}:approvals/{branch.rsplit('/', 1)[1]}.yaml"))
        _section(f"git merge --no-ff {branch}  (as Demo Reviewer: this is the approval)")
        reviewer = ("Demo Reviewer", "reviewer@example.com")
        git_as_user(
            repo, "merge", "--no-ff", "-q", "-m", f"Merge {branch}: approved", branch, identity=reviewer
        )
        print(git_as_user(repo, "log", "--oneline", "-3", "main"))


def _serve_http(address: str, *, repo: Path, secrets: Path, base: Path) -> int:
    """Serve the demo repository with the web view until Ctrl-C; its token goes to a file, not stdout."""
    import hashlib
    import json
    import secrets as random

    from gitops_acp.cli.main import main

    token = random.token_urlsafe(24)
    token_file = base / "web-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    entry = {"name": "Demo User", "email": "demo@example.com", "roles": ["operator", "approver"]}
    tokens = base / "api-tokens.yaml"
    tokens.write_text(json.dumps([{**entry, "sha256": hashlib.sha256(token.encode()).hexdigest()}]) + "\n")
    _section(f"gitops-acp serve --http {address}  (Ctrl-C stops)")
    print(f"the web view: http://{address}/  sign in with the token in {token_file}", flush=True)
    return main(
        [
            "--repo",
            str(repo),
            "serve",
            "--http",
            address,
            "--api-tokens",
            str(tokens),
            "--secrets-dir",
            str(secrets),
            "--log-dir",
            str(base / "logs"),
        ]
    )


def run(args: argparse.Namespace) -> int:
    # Imported here: openai, uvicorn and the reactor are slow to import and only the demo needs them.
    import asyncio
    import shutil
    import tempfile

    from gitops_acp.cli.commits import git_as_user, init_repository
    from gitops_acp.cli.examples import example_files
    from gitops_acp.controllers.base import Settings
    from gitops_acp.llm.openai_client import OpenAIClient
    from gitops_acp.reactor.manager import Manager, ServeOptions
    from gitops_acp.secrets import SecretResolver
    from gitops_acp.testing.llm_stub import StubServer

    base = args.dir or Path(tempfile.mkdtemp(prefix="gitops-acp-demo-"))
    repo, secrets = base / "repo", base / "secrets"
    (secrets / "local-stub").mkdir(parents=True, exist_ok=True)
    (secrets / "local-stub" / "LOCAL_STUB_API_KEY").write_text("demo-key-not-a-secret\n")
    try:
        with StubServer(DEMO_SCRIPT) as stub:
            # The example's LLM points at the stub's port, its MCP server runs with this Python.
            files = {
                path: data.replace(b"http://127.0.0.1:8765/v1", stub.url.encode())
                .replace(b"command: python3", b"command: " + sys.executable.encode())
                .replace(b"/tmp/gitops-acp-visitors.txt", str(base / "visitors.txt").encode())
                for path, data in example_files("offline").items()
            }
            init_repository(repo, files=files, message="Add the offline example resources")
            _section(f"repository {repo} (main)")
            print(git_as_user(repo, "ls-files"))
            options = ServeOptions(
                repo=repo, once=True, settings=Settings(backoff_base=0.2, log_dir=base / "logs")
            )

            def serve() -> None:
                manager = Manager(options, llm=OpenAIClient(), secrets=SecretResolver(secrets))
                asyncio.run(manager.run())
                stats = manager.writer.stats
                print(f"done: {stats.checkpoints} checkpoints in {stats.commits} commits")

            _section(f"gitops-acp serve --once  (LLM stub at {stub.url})")
            serve()
            _approve_as_a_reviewer(repo)
            _section("gitops-acp serve --once  (again: the approved call runs, its task finishes)")
            serve()
            print(f"{len(stub.requests())} requests to the LLM stub in all")
            where = str(repo)
            for kind in ("llms", "agents", "tasks"):
                _section(f"gitops-acp get {kind}")
                get.show(where, kind)
            _section("gitops-acp get tasks -o wide")
            get.show(where, "tasks", output="wide")
            _section("gitops-acp get mcpservers -o wide")
            get.show(where, "mcpservers", output="wide")
            _section("gitops-acp get toolcalls")
            get.show(where, "toolcalls")
            _section("gitops-acp describe task add-numbers")
            describe.show(where, "task", "add-numbers")
            for task in ("add-numbers", "count-visitor", "continue-conversation"):
                _section(f"gitops-acp history task {task}")
                history.show(where, "task", task)
            _section("git log --oneline acp/status")
            print(git_as_user(repo, "log", "--format=%h %s", "acp/status"))
            if args.http:
                return _serve_http(args.http, repo=repo, secrets=secrets, base=base)
    finally:
        if args.keep or args.dir:
            print(f"\nthe demo repository is kept at {repo}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0
