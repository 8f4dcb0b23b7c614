"""What runs beside the reconciler while it serves: repository maintenance, the secrets watch, and
the garbage collector's tuning for a long-lived process full of resources.

All three are optimisations, never conditions of correctness: a failure is logged and the
reconciler keeps serving (maintenance is retried; rotated secrets are still noticed by the
periodic re-validation, only later).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import watchfiles

from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.meta import Kind
from gitops_acp.store.git import GitRepo
from gitops_acp.store.status import StatusWriter

__all__ = ["SECRET_USERS", "maintain", "tune_gc", "watch_secrets"]

log = logging.getLogger("gitops_acp")

#: Group commits before maintenance is due anyway: two of the status writer's roll-ups (it rolls
#: every 16 of its packs into one). Packs stay well under git's `gc.autoPackLimit` (50): past it,
#: every `git commit` a person makes in a served repository starts `git gc --auto`, which repacks
#: the whole repository (`repack -A`) in the background.
PACKS_BEFORE_MAINTENANCE = 32
#: Seconds between looks at whether maintenance is due (a look is reading a counter).
CHECK_EVERY = 1.0
#: Kinds whose controllers resolve secrets: a change under --secrets-dir wakes them.
SECRET_USERS = (Kind.LLM, Kind.MCPServer, Kind.ContactChannel)


async def maintain(
    repo: Callable[[], GitRepo | None],
    writer: StatusWriter,
    git: ThreadPoolExecutor,
    *,
    interval: float,
    shared: bool,
) -> None:
    """Repository maintenance (`GitRepo.maintain`) off the checkpoint path, when it is due; forever.

    Due every `interval` seconds if checkpoints were written, and sooner once 32 commits were: each
    group commit adds one small pack (`GitRepo.one_pack`), the writer rolls every 16 into one,
    git's object lookups slow down with hundreds of packs, and past 50 a person's `git commit`
    repacks everything (above). Looked at every second: at 30 commits a second, a look every 5 s
    let 150 packs pile up before the writer rolled its packs up, and in a 100,000-task run
    (`bench_growth.py`) the parent's commits then kept a core busy with full repacks. History
    reads stay fast (`describe`, `history`) and objects don't pile up over weeks of running.
    `git`: a thread of its own, never the one that reads `main` (a repack and a commit-graph of a
    big history take seconds: on the reader's thread they held up every new Task that long, more
    as history grew). `shared`: people work in this repository too (see `GitRepo.maintain`).
    """
    loop = asyncio.get_running_loop()
    done = writer.stats.commits
    last = time.monotonic()
    while True:
        await asyncio.sleep(min(interval, CHECK_EVERY))
        commits = writer.stats.commits
        due = commits - done >= PACKS_BEFORE_MAINTENANCE or (
            commits != done and time.monotonic() - last >= interval
        )
        opened = repo()
        if opened is None:
            continue
        if not due:
            # Packs replaced by a roll-up or a merge go once their time came, checkpoints or not.
            opened.delete_retired_packs()
            continue
        done, last = commits, time.monotonic()
        try:
            await loop.run_in_executor(git, functools.partial(opened.maintain, shared=shared))
        except Exception as exc:  # maintenance is an optimisation: never stop serving for it
            log.warning("repository maintenance failed (will retry): %s", exc)


async def watch_secrets(
    directory: Path, stop: asyncio.Event, declared: Callable[[], Iterable[Key]], wake: Callable[[Key], None]
) -> None:
    """A rotated secret (a mounted Kubernetes secret is swapped by symlink) re-validates what uses it."""
    try:
        async for _ in watchfiles.awatch(directory, stop_event=stop, debounce=200, watch_filter=None):
            for key in list(declared()):
                if key[0] in SECRET_USERS:
                    wake(key)
    except Exception:  # the periodic re-validation still notices, only later
        log.warning("watching --secrets-dir %s failed; rotated secrets are noticed within minutes", directory)


def tune_gc() -> None:
    """Collect garbage less often: the reconciler holds every resource in memory and allocates fast.

    With CPython's defaults (700, 10, 10) a run of 1000 tasks spent 1.7 s of its 7.3 s of CPU in the
    cycle collector, 1 s of it in five full collections that walk every live object (pauses of
    ~200 ms). After start-up, what was loaded is frozen (never scanned again; it lives as long as
    the process anyway) and the first generation is collected every 10000 net allocations instead
    of 700: 0.55 s of collection for the same run. Reference counting still frees everything that is
    not in a cycle at once, so memory does not wait for the collector.

    The first generation is now collected every 100,000 net allocations: what a serving reconciler
    allocates and keeps is the resources it holds (about 100 tracked objects a task, of which the
    collector found 28 in all to be garbage over 1000 tasks), and collecting them in tenths cost
    more than twice as much per object. Tool workload, 3000 tasks (issue 12 item 6): 0.71 s of
    collection (78 first-generation and 3 second-generation passes) became 0.22 s (4 passes); peak
    RSS the same. The second generation is collected every 500,000 allocations (was 200,000), the
    third every 4,000,000 as before.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 5, 8)
