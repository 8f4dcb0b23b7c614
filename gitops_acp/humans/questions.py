"""Questions to humans as branches: the agent asks, a person writes the answer and merges it.

    <channel>__human_contact({message}) ──► branch acp/questions/<toolcall> = tip of main +
        responses/<toolcall>.yaml (kind HumanResponse: task, toolCall, question, response: "")
    a person writes `response` on the branch and merges it (or `gitops-acp respond`)
    the reconciler reads responses/<toolcall>.yaml on main ──► the response is the tool's result

The branch and the file are built like an approval's (humans/branches.py). Blocking; runs on the
reconciler's git thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gitops_acp.humans import branches
from gitops_acp.humans.branches import Decision
from gitops_acp.store.git import GitRepo
from gitops_acp.store.git.signatures import Signers

__all__ = ["RESPONSES_DIR", "branch_name", "propose", "read_response", "response_path"]

RESPONSES_DIR = "responses"


def branch_name(toolcall: str) -> str:
    """The question branch of a tool call."""
    return f"acp/questions/{toolcall}"


def response_path(toolcall: str) -> str:
    """Where the response file lives on `main` once merged."""
    return f"{RESPONSES_DIR}/{toolcall}.yaml"


def propose(
    repo: GitRepo,
    *,
    main: str,
    toolcall: str,
    document: dict[str, Any],
    message: str,
    identity: tuple[str, str],
    at: str | None = None,
    sign: Callable[[bytes], bytes] | None = None,
) -> str:
    """Create `acp/questions/<toolcall>` from `main` plus the response file; reuse it if it exists."""
    return branches.propose(
        repo,
        main=main,
        branch=branch_name(toolcall),
        path=response_path(toolcall),
        document=document,
        message=message,
        identity=identity,
        at=at,
        sign=sign,
    )


def read_response(
    repo: GitRepo,
    *,
    main: str,
    toolcall: str,
    reconciler: tuple[str, str],
    at: str | None = None,
    signers: Signers | None = None,
) -> Decision | None:
    """The response file on the tip of `main`, with who merged (or committed) it.

    `at`: the commit of main that is applied (signed main); `signers`: who may have signed it."""
    return branches.read(
        repo, main=main, path=response_path(toolcall), reconciler=reconciler, at=at, signers=signers
    )
