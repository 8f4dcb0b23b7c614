"""Measure checkpoint -> SSE event latency: from a commit landing on the status branch to its event
arriving at a client of `GET /v1/events` (target: p50 <= 50 ms; DESIGN §11, issue 14 item 7).

Run: ``python benchmarks/bench_events.py`` (``--help`` for sizes). In one process, as in `serve`:
the real StatusWriter commits checkpoints to a temporary bare repository, the real EventHub follows
its `on_commit`, and `api/events.sse` is served by uvicorn on 127.0.0.1; the client is a separate
process (`http.client`, reading the stream line by line) that stamps each event's arrival with
the shared monotonic clock (`time.monotonic`, the same clock across processes on Linux).

- single: one checkpoint at a time, `--gap` ms apart (an idle reconciler: each commit alone);
- burst: `--burst` resources checkpoint concurrently, round after round (a busy one: group
  commits back to back, a hub wake-up covering several commits).

The landing is stamped by an `on_commit` hook registered before the hub's: the moment the writer
moved the ref. `benchmarks/bench_api.py` measures the same through the whole `serve --http`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gitops_acp.api.events import sse
from gitops_acp.reactor.events import EventHub
from gitops_acp.resources.meta import Kind
from gitops_acp.store.status import Change, StatusWriter

CLIENT = r"""
import http.client, json, sys, time
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=600)
conn.request("GET", "/v1/events")
response = conn.getresponse()
print("open", flush=True)
while True:
    line = response.readline()
    if not line:
        break
    if line.startswith(b"data: "):
        event = json.loads(line[6:])
        print(json.dumps([time.monotonic(), event["commit"]]), flush=True)
"""


def _document(name: str, turn: int) -> dict[str, Any]:
    return {
        "apiVersion": "acp.gitops.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"agentRef": {"name": "a"}, "userMessage": "hello"},
        "status": {"phase": f"Turn{turn}", "statusDetail": "x" * 2000},
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(args: argparse.Namespace, repo: Path) -> dict[str, Any]:
    writer = StatusWriter(repo)
    await writer.start()
    landed: dict[str, float] = {}

    async def stamp(sha: str) -> None:
        landed[sha] = time.monotonic()

    writer.on_commit.append(stamp)  # before the hub's: the moment the ref moved
    hub = EventHub(repo, "acp/status")
    writer.on_commit.append(hub.committed)
    await hub.start()

    async def endpoint(request: Request) -> Response:
        return await sse(request, hub)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=[Route("/v1/events", endpoint)]), log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, str(sock.getsockname()[1]), stdout=subprocess.PIPE
    )
    assert client.stdout is not None
    assert (await client.stdout.readline()).strip() == b"open"
    arrived: dict[str, float] = {}

    async def read() -> None:
        assert client.stdout is not None
        async for line in client.stdout:
            when, commit = json.loads(line)
            arrived.setdefault(commit, when)

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.2)  # the client subscribed

    single: list[str] = []
    for i in range(args.single):
        sha = await writer.commit(
            [Change(Kind.Task, "alone", _document("alone", i), "-", f"Turn{i}")], spec_commit=""
        )
        assert sha is not None
        single.append(sha)
        await asyncio.sleep(args.gap / 1000)
    burst: set[str] = set()
    for round_ in range(args.rounds):
        shas = await asyncio.gather(
            *(
                writer.commit(
                    [Change(Kind.Task, f"t{j}", _document(f"t{j}", round_), "-", "x")], spec_commit=""
                )
                for j in range(args.burst)
            )
        )
        burst.update(sha for sha in shas if sha is not None)
    await asyncio.sleep(1.0)  # the last events
    await writer.close()
    await hub.close()
    await asyncio.wait_for(reader, 10)
    await client.wait()
    server.should_exit = True
    await serving

    def latencies(commits: list[str] | set[str]) -> list[float]:
        return [(arrived[c] - landed[c]) * 1000 for c in commits if c in arrived and c in landed]

    result: dict[str, Any] = {}
    for label, commits in (("single", single), ("burst", burst)):
        ms = latencies(commits)
        result[label] = {
            "commits": len(commits),
            "received": len(ms),
            "p50_ms": round(statistics.median(ms), 2) if ms else None,
            "p99_ms": round(_percentile(ms, 0.99), 2) if ms else None,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--single", type=int, default=200, help="checkpoints one at a time (default 200)")
    parser.add_argument("--gap", type=float, default=10.0, help="ms between them (default 10)")
    parser.add_argument("--burst", type=int, default=50, help="resources checkpointing at once (default 50)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of the burst (default 20)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        repo = Path(tmp) / "repo.git"
        subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
        result = asyncio.run(_run(args, repo))
    if args.json:
        print(json.dumps(result))
        return
    for label, row in result.items():
        print(
            f"checkpoint -> SSE event, {label}: {row['received']}/{row['commits']} commits, "
            f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms"
        )


if __name__ == "__main__":
    main()
