"""`gitops-acp serve`: run the reconciler over the repository.

`--once` runs until nothing can progress without an outside change (a new commit, a human's
decision, a missing dependency appearing), then exits 0; a backoff timer keeps it running. A
checkpoint that cannot be committed after its bounded retries stops it with exit 1 (never a stall).
SIGINT/SIGTERM finish the checkpoint in flight and exit 0. `--http ADDR` serves `/healthz`, `/readyz`,
`/metrics` and the forges' webhooks beside the reconciler (`reactor/webhooks.py`), and with
`--api-tokens FILE` the HTTP API under `/v1` (`api/`, docs/api.md). Traces follow the `OTEL_*`
variables (docs/telemetry.md).

`--repo URL` (or `--repo CLONE --remote origin`) serves a remote through a bare mirror in the
cache directory (docs/remotes.md); a plain local path is served in place, as always.

`--shard I/N` runs one of N reconciler processes, each on its share of the tasks and its own
status branch (store/shards.py, docs/scale.md).
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitops_acp.errors import StoreError, UserError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from gitops_acp.api.app import Service
    from gitops_acp.api.tokens import Tokens
    from gitops_acp.reactor.manager import Manager, ServeOptions
    from gitops_acp.reactor.remote import RemoteOptions
    from gitops_acp.store.shards import Shard


def add_parser(subparsers: Any, name: str, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        name,
        parents=[common],
        help="run the reconciler (`--once`: until nothing can progress, then exit)",
        description=(
            "Run the reconciler: watch main, run every task's agent loop, commit checkpoints to acp/status."
        ),
    )
    parser.add_argument(
        "--once", action="store_true", help="exit 0 once nothing can progress without an outside change"
    )
    parser.add_argument(
        "--secrets-dir", type=Path, help="secrets as <dir>/<name>/<key> files (a mounted Kubernetes secret)"
    )
    parser.add_argument(
        "--branch", default="main", help="the branch holding the desired state (default: main)"
    )
    parser.add_argument(
        "--status-branch", help="the reconciler's branch (default: acp/status; with --shard, the shard's)"
    )
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="serve shard I of N (0 <= I < N): the tasks whose name hashes to I, on branch "
        "acp/status-I-of-N; auto/N takes I from the host name's -<ordinal> (a StatefulSet pod)",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=2.0, help="safety poll of main, seconds (default: 2)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=512, help="resources reconciled at once (default: 512)"
    )
    parser.add_argument(
        "--backoff-base", type=float, default=1.0, help="first LLM retry delay, seconds (default: 1)"
    )
    parser.add_argument(
        "--backoff-cap", type=float, default=300.0, help="longest LLM retry delay, seconds (default: 300)"
    )
    parser.add_argument(
        "--max-llm-attempts",
        type=int,
        default=10,
        help="transient LLM failures before a task fails (default: 10)",
    )
    parser.add_argument(
        "--llm-concurrency",
        type=int,
        default=128,
        help="LLM requests in flight per endpoint (default: 128)",
    )
    parser.add_argument(
        "--llm-timeout", type=float, default=120.0, help="seconds per LLM request (default: 120)"
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        help="where MCP servers' stderr goes, one file per server (default: ~/.cache/gitops-acp/<repo>/logs)",
    )
    parser.add_argument(
        "--tool-timeout",
        type=float,
        default=60.0,
        help="seconds per MCP tool call unless the server sets one",
    )
    parser.add_argument(
        "--identity", default="gitops-acp <gitops-acp@localhost>", help="author of checkpoint commits"
    )
    parser.add_argument(
        "--humanlayer-url",
        default=os.environ.get("HUMANLAYER_API_BASE") or "https://api.humanlayer.dev",
        help="HumanLayer's API base for slack and email channels (default: $HUMANLAYER_API_BASE, "
        "else https://api.humanlayer.dev)",
    )
    parser.add_argument(
        "--humanlayer-poll-interval",
        type=float,
        default=5.0,
        help="seconds between looks at a pending HumanLayer request (default: 5)",
    )
    parser.add_argument(
        "--http",
        metavar="ADDR",
        help="serve GET /healthz, /readyz, /metrics, the web view at / (docs/web.md) and POST "
        "/webhooks/{github,gitea,gitlab} on HOST:PORT (e.g. 127.0.0.1:8080); traces: the OTEL_* "
        "variables (docs/telemetry.md)",
    )
    parser.add_argument(
        "--api-tokens",
        type=Path,
        metavar="FILE",
        help="the HTTP API's tokens (YAML list of name, email, roles, sha256 of the token; docs/api.md); "
        "without it every /v1 request is refused",
    )
    parser.add_argument(
        "--webhook-secret-file",
        type=Path,
        metavar="PATH",
        help="the webhooks' shared secret (without it, webhooks are refused)",
    )
    parser.add_argument(
        "--forge-poll-interval",
        type=float,
        default=60.0,
        help="seconds between two looks at one pull request's state, at best (default: 60)",
    )
    parser.add_argument(
        "--remote",
        metavar="NAME",
        help="serve the remote NAME (e.g. origin) of the local clone --repo, never touching the clone",
    )
    parser.add_argument(
        "--fetch-interval",
        type=float,
        default=15.0,
        help="with a remote: seconds between fetches of main (default: 15); a webhook fetches at once",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="the operator's policy (YAML, outside the repository): which MCP commands and URLs and "
        "which responseUrls are allowed (docs/security.md); without it everything is",
    )
    parser.add_argument(
        "--retain-finished",
        metavar="DURATION",
        default="168h",
        help="how long a finished task (with its tool calls and sub-tasks) stays in the status "
        "branch's tip before an `archive:` commit moves it to archive/ (default: 168h; a Task's "
        "spec.ttlSecondsAfterFinished overrides; `never` keeps everything)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="with a remote: where its mirror lives, the reconciler's durable state "
        "(default: $XDG_CACHE_HOME/gitops-acp/<name>-<digest>)",
    )
    parser.set_defaults(run=run)


def parse_identity(text: str) -> tuple[str, str]:
    """`Name <email>` → (name, email)."""
    name, _, rest = text.partition("<")
    email = rest.rstrip().rstrip(">")
    if not name.strip() or not email:
        raise UserError(f'--identity "{text}": expected "Name <email>"')
    return name.strip(), email


def options_from(args: argparse.Namespace) -> ServeOptions:
    """Serve options from parsed arguments."""
    from gitops_acp.controllers.base import Settings
    from gitops_acp.reactor.manager import ServeOptions

    if args.secrets_dir is not None and not args.secrets_dir.is_dir():
        raise UserError(f"--secrets-dir {args.secrets_dir}: not a directory")
    if args.concurrency < 1:
        raise UserError("--concurrency must be at least 1")
    if not args.humanlayer_url.startswith(("http://", "https://")):
        raise UserError(f"--humanlayer-url {args.humanlayer_url}: expected an http:// or https:// URL")
    if args.humanlayer_poll_interval <= 0:
        raise UserError("--humanlayer-poll-interval must be more than 0 seconds")
    if args.fetch_interval <= 0:
        raise UserError("--fetch-interval must be more than 0 seconds")
    from gitops_acp import policy
    from gitops_acp.reactor.retention import parse_retain

    retain_finished = parse_retain(args.retain_finished)
    loaded_policy = policy.load(args.policy)
    shard = shard_from(args)
    remote = remote_options(args)
    repo = remote.mirror if remote is not None else Path(args.repo)
    log_dir = args.log_dir or (remote.mirror.parent / "logs" if remote else default_log_dir(Path(args.repo)))
    return ServeOptions(
        repo=repo,
        remote=remote,
        branch=args.branch,
        status_branch=args.status_branch or shard.branch,
        shard=shard,
        once=args.once,
        poll_interval=args.poll_interval,
        concurrency=args.concurrency,
        identity=parse_identity(args.identity),
        retain_finished=retain_finished,
        settings=Settings(
            backoff_base=args.backoff_base,
            backoff_cap=args.backoff_cap,
            max_llm_attempts=args.max_llm_attempts,
            llm_timeout=args.llm_timeout,
            tool_timeout=args.tool_timeout,
            log_dir=log_dir,
            humanlayer_url=args.humanlayer_url,
            humanlayer_poll=args.humanlayer_poll_interval,
            forge_poll_interval=args.forge_poll_interval,
            policy=loaded_policy,
        ),
    )


def shard_from(args: argparse.Namespace) -> Shard:
    """The shard to serve (`--shard I/N` or `auto/N`); unsharded without the flag."""
    import socket

    from gitops_acp.store import shards

    if args.shard is None:
        return shards.Shard()
    if args.status_branch is not None:
        raise UserError(
            f"--status-branch cannot be combined with --shard {args.shard}: "
            "each shard writes its own branch, acp/status-<I>-of-<N>"
        )
    # A Kubernetes pod's HOSTNAME is its name (`acp-2` for the third pod of StatefulSet `acp`).
    return shards.parse(args.shard, hostname=os.environ.get("HOSTNAME") or socket.gethostname())


def remote_options(args: argparse.Namespace) -> RemoteOptions | None:
    """The remote to serve: `--repo URL`, or the `--remote NAME` of the local clone `--repo`; else None."""
    from gitops_acp.reactor.remote import RemoteOptions
    from gitops_acp.store import mirror as mirrors
    from gitops_acp.store.git import GitRepo, is_url

    target = str(args.repo)
    if args.remote:
        try:
            clone = GitRepo.open(target)
        except StoreError as exc:
            raise UserError(f"--remote {args.remote}: {exc}") from exc
        with clone:
            url = clone.config(f"remote.{args.remote}.url")
            base = clone.work_tree or clone.common_dir
        if not url:
            raise UserError(
                f'--remote {args.remote}: {target} has no remote "{args.remote}" (see `git remote -v`)'
            )
        if not is_url(url) and not Path(url).is_absolute():
            url = str((base / url).resolve())  # a clone of a relative path
    elif is_url(target) and not Path(target).exists():
        url = target
    else:
        return None
    cache = args.cache_dir or mirrors.cache_dir(url)
    return RemoteOptions(url=url, mirror=Path(cache) / "mirror.git", fetch_interval=args.fetch_interval)


def default_log_dir(repo: Path) -> Path:
    """`$XDG_CACHE_HOME/gitops-acp/<repo name>-<digest of its path>/logs`: outside the repository."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    resolved = repo.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:10]
    return cache / "gitops-acp" / f"{resolved.name}-{digest}" / "logs"


def run(args: argparse.Namespace) -> int:
    # Imported here: openai and the reactor take a second to import, and `--help` or `get` need neither.
    from gitops_acp.llm.openai_client import OpenAIClient
    from gitops_acp.reactor.manager import Manager
    from gitops_acp.secrets import SecretResolver

    options = options_from(args)
    if args.llm_concurrency < 1:
        raise UserError("--llm-concurrency must be at least 1")
    if args.webhook_secret_file is not None and args.http is None:
        raise UserError("--webhook-secret-file needs --http ADDR (where the webhooks are received)")
    secret = webhook_secret(args.webhook_secret_file)
    if args.api_tokens is not None and args.http is None:
        raise UserError("--api-tokens needs --http ADDR (where the API is served)")
    from gitops_acp.api import tokens as api_tokens

    tokens = api_tokens.load(args.api_tokens) if args.api_tokens is not None else None
    # Imported when the command runs, not when main.py builds the parsers.
    import asyncio

    llm = OpenAIClient(max_concurrent_requests=args.llm_concurrency)
    manager = Manager(options, llm=llm, secrets=SecretResolver(args.secrets_dir))
    if args.http is None:
        return asyncio.run(manager.run())
    from gitops_acp.reactor import webhooks

    sock = webhooks.listen(*webhooks.parse_address(args.http))
    service = api_service(options, manager, tokens)

    async def serve_http() -> int:
        from gitops_acp.api import app as api_app

        try:
            return await webhooks.serve(
                manager.run,
                manager.webhook,
                sock,
                secret,
                manager.readiness,
                manager.stop,
                routes=api_app.routes(service),
            )
        finally:
            await service.aclose()

    return asyncio.run(serve_http())


def api_service(options: ServeOptions, manager: Manager, tokens: Tokens | None) -> Service:
    """The HTTP API's service: readers and the writer of main over the served repository."""
    import logging

    from gitops_acp.api import app as api_app
    from gitops_acp.api import events as api_events
    from gitops_acp.api.reading import Reads
    from gitops_acp.api.writer import MainWriter

    log = logging.getLogger("gitops_acp")
    from gitops_acp.store.git import signatures

    policy = options.settings.policy
    refused = None
    sign = None
    signed_main = policy is not None and policy.require_signed_main
    if policy is not None and signed_main and policy.signing_key is not None:
        sign = signatures.ssh_signer(policy.signing_key)  # serve vouches for its callers' commits
    elif policy is not None and signed_main:
        refused = (
            f"the policy ({policy.source}) requires signed commits on {options.branch} and has no "
            "signers.signingKey for serve to sign with: commit with your own key "
            "(git, gitops-acp task create)"
        )
    if tokens is None:
        log.warning("no --api-tokens: every /v1 request is refused (403) until serve is given one")
    else:
        log.info("HTTP API on /v1: %d token(s) (docs/api.md)", len(tokens))
    hub = manager.events

    async def events(request: Request) -> Response:
        return await api_events.sse(request, hub)

    return api_app.Service(
        tokens=tokens,
        reads=Reads(options.repo, branch=options.branch),
        writer=MainWriter(
            options.repo,
            branch=options.branch,
            committer=options.identity,
            remote=options.remote.url if options.remote is not None else None,
            on_commit=manager.poke,
            refused=refused,
            sign=sign,
        ),
        branch=options.branch,
        signed_decisions=policy is not None and policy.has_signers,
        signed_main=signed_main,
        events=events,
    )


def webhook_secret(path: Path | None) -> bytes | None:
    """The shared webhook secret from its file (one trailing newline stripped), or None."""
    if path is None:
        return None
    try:
        value = path.read_bytes().removesuffix(b"\n")
    except OSError as exc:
        raise UserError(f"--webhook-secret-file {path}: cannot read it ({exc.strerror})") from exc
    if not value.strip():
        raise UserError(f"--webhook-secret-file {path}: the file is empty")
    return value
