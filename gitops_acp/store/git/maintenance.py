"""Keeping a repository fast as checkpoints pile up: rolling packs up and the commit-graph.

Called from a background thread of ``reactor/manager.py`` (through ``GitRepo.maintain``), never
on the checkpoint path. What it may lock depends on who else works in the repository: see
`maintain`.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import time
from pathlib import Path

from gitops_acp.store.git import process
from gitops_acp.store.git.objects import PackLedger, pack_ledger

__all__ = ["BLOOM_ENV", "YOUNG_PACK_SECONDS", "geometric_split", "maintain", "write_commit_graph"]

#: A pack another process wrote this recently may still be rolled up and deleted by its writer
#: (`objects.PackLedger`): maintenance leaves it for a later run.
YOUNG_PACK_SECONDS = 10.0


#: A changed-path Bloom filter for every commit, however many paths it changes, in a commit-graph
#: written from scratch. git gives a commit that changes more than 512 paths (counting
#: directories) a truncated filter, and every path-limited log then diffs its trees. git reads the
#: limit from this variable (commit-graph.c, made for its tests; a git that ignores it writes what
#: it did before; readers need nothing), but only when no commit-graph exists yet: a write over
#: one takes the settings stored there, whose limit git always reads back as 512. So our commits
#: stay within 512 changed paths instead (`status.BLOOM_MAX_PATHS`), which keeps their filters
#: whatever git writes the graph; this covers the first write and commits people make.
BLOOM_ENV = {"GIT_TEST_BLOOM_SETTINGS_MAX_CHANGED_PATHS": str(2**31 - 1)}


def write_commit_graph(git_dir: Path) -> None:
    """Refresh the commit-graph with changed-path Bloom filters (path-limited logs get ~8x faster).

    Always as a split chain (`--split`: a new layer of the commits since the last write, layers
    merged when one grows to half the one below it, so a write costs what was committed since,
    not the history): a single file is rewritten whole, every commit of the history, and with
    300,000 commits that took ~3 s each time maintenance ran (every 32 group commits), against
    13 to 23 ms for the same 100 new commits as a layer (docs/growth.md). A single file already
    there (a person's `git commit-graph write`, `git gc`) becomes the chain's base. Run it in the
    background, never on the checkpoint path.
    """
    graph = ("commit-graph", "write", "--reachable", "--changed-paths", "--split")
    process.in_repo(git_dir, *graph, background=True, extra_env=BLOOM_ENV)


def maintain(git_dir: Path, objects: Path, *, shared: bool) -> None:
    """Roll loose objects and small packs up and refresh the commit-graph; in a mirror, `gc --auto` too.

    The status writer rolls every 16 of its group commits' packs into one (`ObjectWriter.roll_up`);
    approval and question branches add loose objects (GIT-NOTES: gc shrank 7.9 MB of them to
    365 KB). `_merge_packs` merges the packs the way `git repack --geometric=2` does (the smallest,
    until each pack left is at least twice the size of all smaller ones together, loose objects
    with them), so its cost follows what was written since the last run, not the repository size;
    unlike `git repack`, it never reads a pack the writer is about to delete.

    `shared`: people work in this repository too (a local repository served in place). Then
    nothing here may take a lock their git commands need: no `gc --auto` (its `pack-refs` and
    `reflog expire` lock each ref, and `git commit` fails on such a lock); the commit-graph is
    a split chain in both (`write_commit_graph`; `git gc` fails on the `commit-graph.lock` a full
    write holds, not on the chain's). Pruning and ref packing are left to their own `git gc` /
    `git maintenance`. A mirror in the cache directory is the reconciler's alone: `gc --auto` (in
    the foreground: we are on a background thread already) keeps it pruned; packs are left to
    `_merge_packs` there too (`gc.autoPackLimit=0`: a `repack -A` would read the writer's packs).
    `objects`: the repository's object folder (a worktree's is its common dir's).
    """
    _merge_packs(git_dir, objects, pack_ledger(objects))
    if not shared:
        auto = ("-c", "gc.autoDetach=false", "-c", "gc.autoPackLimit=0", "gc", "--auto", "--quiet")
        process.in_repo(git_dir, *_ONE_THREAD, *auto, background=True, extra_env=BLOOM_ENV)
    write_commit_graph(git_dir)


# One thread of delta search, niced: the reconciler keeps a core and the CPU it asks for (with
# git's default of a thread per core, a repack of 40,000 tasks' history took both cores of a
# 2-core machine for 3 s, and the batch of tasks running meanwhile took 70% longer).
_ONE_THREAD = ("-c", "pack.threads=1")


def geometric_split(sizes: list[int], factor: int = 2) -> int:
    """How many of the smallest packs (`sizes`, object counts ascending) to merge, as `git repack
    --geometric` does.

    Past the split, each pack is at least `factor` times the next smaller one, and the merged
    ones together are at most 1/`factor` of the smallest pack kept.
    """
    split = 0
    for i in range(len(sizes) - 1, 0, -1):
        if sizes[i] < factor * sizes[i - 1]:
            split = i + 1
            break
    total = sum(sizes[:split])
    while split < len(sizes) and total * factor > sizes[split]:
        total += sizes[split]
        split += 1
    return split


def _merge_packs(git_dir: Path, objects: Path, ledger: PackLedger) -> None:
    """Merge the small packs nobody else will delete, and the loose objects, into one pack."""
    folder = objects / "pack"
    ledger.sweep(folder)  # what was retired long enough ago (the background's looks do it too)
    with ledger.lock:  # a pack a writer of ours will delete is owned before its files appear
        names = _pack_names(folder)
        skipped = ledger.owned | ledger.retired.keys()
        handed = set(ledger.handed)
    now = time.time()
    weighed: list[tuple[int, str]] = []  # (objects, name)
    for name in names:
        if name in skipped or (folder / f"{name}.keep").exists() or (folder / f"{name}.promisor").exists():
            continue
        try:
            stat = (folder / f"{name}.pack").stat()
            objects_in = _object_count(folder / f"{name}.idx")
        except FileNotFoundError:  # another process's repack took it meanwhile
            continue
        if name not in handed and now - stat.st_mtime < YOUNG_PACK_SECONDS:
            continue  # another process's writer may roll it up (PackLedger)
        weighed.append((objects_in, name))
    # Weighed by their objects, as git does: the writer's packs are stored uncompressed, and by
    # their bytes a roll-up of 16 commits weighed more than a merged pack of hundreds.
    weighed.sort()
    merged = [name for _, name in weighed[: geometric_split([count for count, _ in weighed])]]
    loose = _loose_objects(objects)
    if len(merged) >= 2 or loose:
        made = process.in_repo(
            git_dir,
            *_ONE_THREAD,
            "pack-objects",
            "--stdin-packs",
            *(["--unpacked"] if loose else []),
            "--delta-base-offset",
            "--non-empty",
            "-q",
            str(folder / "pack"),
            stdin="".join(f"{name}.pack\n" for name in merged).encode(),
            background=True,
        )
        written = made.stdout.decode("ascii", "replace").split()  # the new pack's name (its sha)
        new = {f"pack-{name}" for name in written}
        # Their objects are in the new pack, in place; `repack -d` would delete them now, and a
        # reader could miss an object in both (`PackLedger.retired`): deleted a while later. (One
        # that is the new pack itself, the same objects written again, stays.)
        ledger.retire(name for name in merged if name not in new)
        with ledger.lock:  # ours: the next run may merge it at once, not 10 s later (YOUNG_PACK_SECONDS)
            ledger.handed.update(new)
        if loose:
            _drop_packed(objects, loose, folder, written)
    present = set(_pack_names(folder))
    with ledger.lock:  # roll-ups gone (merged here, or by a person's `git gc`): forgotten
        ledger.handed.intersection_update(present)


def _object_count(idx: Path) -> int:
    """How many objects the pack of the version-2 index `idx` holds (the last fan-out entry)."""
    with open(idx, "rb") as index:
        head = index.read(8 + 256 * 4)
    if len(head) < 8 + 256 * 4 or head[:4] != b"\xfftOc":
        return 0  # not an index this code knows: weighed as empty, merged first
    return int.from_bytes(head[-4:], "big")


def _pack_names(folder: Path) -> list[str]:
    """The packs in `folder` by name (`pack-<sha>`), as git finds them: by their index."""
    try:
        listing = os.listdir(folder)
    except FileNotFoundError:
        return []
    return [entry[:-4] for entry in listing if entry.startswith("pack-") and entry.endswith(".idx")]


def _loose_objects(objects: Path) -> dict[str, Path]:
    """Every loose object in `objects` (the 256 fan-out folders), by its sha."""
    found: dict[str, Path] = {}
    with os.scandir(objects) as entries:
        for entry in entries:
            if len(entry.name) == 2 and entry.is_dir(follow_symlinks=False):
                with os.scandir(entry.path) as inside:
                    for item in inside:
                        if len(item.name) == 38:
                            found[entry.name + item.name] = Path(item.path)
    return found


def _drop_packed(objects: Path, loose: dict[str, Path], folder: Path, packs: list[str]) -> None:
    """Delete the loose objects the pack just written (`packs`: the name pack-objects printed)
    holds, and only those, leaving their fan-out folders in place.

    Not `git prune-packed`: it also removes each folder it empties, and a person's `git add` in
    the same repository that had just found or made that folder then failed to write its object
    there ("unable to create temporary file: No such file or directory", seen once in a
    100,000-task `bench_growth.py` run, whose parent commits Task files as a person does; git
    retries such a write once, after making the folder again). Each object is looked up in the
    pack's index as git does (its fan-out, then a binary search), mapped rather than read: a
    merged pack can hold the whole history (a set of its 800,000 names grew the reconciler's
    memory by ~40 MB that it kept).
    """
    for name in packs:
        with (
            contextlib.suppress(FileNotFoundError, ValueError),  # gone meanwhile; empty
            open(folder / f"pack-{name}.idx", "rb") as idx,
            mmap.mmap(idx.fileno(), 0, access=mmap.ACCESS_READ) as index,
        ):
            for sha, path in loose.items():
                if _in_index(index, bytes.fromhex(sha)):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)


def _in_index(index: mmap.mmap, sha: bytes) -> bool:
    """Whether the version-2 pack index `index` lists object `sha` (20 bytes)."""
    if len(index) < 8 + 256 * 4 or index[:8] != b"\xfftOc\x00\x00\x00\x02":
        return False
    first = sha[0]
    low = int.from_bytes(index[4 + 4 * first : 8 + 4 * first], "big") if first else 0
    high = int.from_bytes(index[8 + 4 * first : 12 + 4 * first], "big")
    names = 8 + 256 * 4
    while low < high:
        middle = (low + high) // 2
        found = index[names + 20 * middle : names + 20 * middle + 20]
        if found == sha:
            return True
        if found < sha:
            low = middle + 1
        else:
            high = middle
    return False
