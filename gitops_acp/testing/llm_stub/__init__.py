"""A scripted OpenAI-compatible server: the fake LLM behind tests, ``gitops-acp demo`` and benchmarks.

Nothing is monkeypatched: the real ``OpenAIClient`` talks HTTP to this server on 127.0.0.1, so
tests exercise the SDK, the wire format and the error mapping exactly as production does. A small
script decides each reply; every request body is recorded so a test can check what was sent.

    request ──► app (HTTP, SSE) ──► replies.StubState.chat ──► validation (401, 400)
                                                            └─► script rules, else echo

- ``script``: the script's schema (``Rule``, ``Script``) and ``load_script``;
- ``validation``: what a real provider would refuse (key, body shape, broken conversations);
- ``replies``: ``StubState``, the reply engine with the recorded requests and ``times`` counters;
- ``app``: ``create_app``, the OpenAI and ``/_stub`` endpoints;
- ``servers``: ``StubServer``, run in a thread, in the running event loop, or as a process.

As a process it is ``gitops-acp llm-stub`` (also ``python -m gitops_acp.testing.llm_stub``, the same
command): it prints its URL as the first line of stdout and exits when its parent dies or after
``--max-seconds``. docs/llm-stub.md describes the script and the endpoints.
"""

from __future__ import annotations

from gitops_acp.testing.llm_stub.app import create_app
from gitops_acp.testing.llm_stub.replies import StubState
from gitops_acp.testing.llm_stub.script import Rule, Script, load_script
from gitops_acp.testing.llm_stub.servers import StubServer

__all__ = ["Rule", "Script", "StubServer", "StubState", "create_app", "load_script"]
