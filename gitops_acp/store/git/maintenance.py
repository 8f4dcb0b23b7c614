"""Keeping a repository fast as checkpoints pile up: repacking and the commit-graph.

Called from a background thread of ``reactor/manager.py`` (through ``GitRepo.maintain``), never
on the checkpoint path. What it may lock depends on who else works in the repository: see
`maintain`.
"""

from __future__ import annotations

from pathlib import Path

from gitops_acp.store.git import process

__all__ = ["maintain", "write_commit_graph"]


def write_commit_graph(git_dir: Path) -> None:
    """Refresh the commit-graph with changed-path Bloom filters (path-limited logs get ~8x faster).

    Slow on big histories: run it in the background, never on the checkpoint path.
    """
    process.in_repo(git_dir, "commit-graph", "write", "--reachable", "--changed-paths", background=True)


def maintain(git_dir: Path, *, shared: bool) -> None:
    """Roll loose objects and small packs up and refresh the commit-graph; in a mirror, `gc --auto` too.

    Each group commit adds a small pack (`one_pack`); approval and question branches add loose
    objects (GIT-NOTES: gc shrank 7.9 MB of them to 365 KB). `repack --geometric=2` packs the
    loose objects and merges packs only until each is at least twice the size of the next
    smaller one, so its cost follows what was written since the last run, not the repository
    size, and it is safe beside a running writer (it only deletes what it rewrote).

    `shared`: people work in this repository too (a local repository served in place). Then
    nothing here may take a lock their git commands need: no `gc --auto` (its `pack-refs` and
    `reflog expire` lock each ref, and `git commit` fails on such a lock), and the commit-graph
    is written as a split chain (`git gc` fails on the `commit-graph.lock` a full write holds,
    not on the chain's). Pruning and ref packing are left to their own `git gc` / `git
    maintenance`. A mirror in the cache directory is the reconciler's alone: `gc --auto` (in
    the foreground: we are on a background thread already) keeps it packed and pruned.
    """
    # One thread of delta search, niced: the reconciler keeps a core and the CPU it asks for (with
    # git's default of a thread per core, a repack of 40,000 tasks' history took both cores of a
    # 2-core machine for 3 s, and the batch of tasks running meanwhile took 70% longer).
    one = ("-c", "pack.threads=1")
    process.in_repo(git_dir, *one, "repack", "-d", "-q", "--geometric=2", background=True)
    if not shared:
        auto = ("-c", "gc.autoDetach=false", "gc", "--auto", "--quiet")
        process.in_repo(git_dir, *one, *auto, background=True)
    split = ["--split"] if shared else []
    graph = ("commit-graph", "write", "--reachable", "--changed-paths", *split)
    process.in_repo(git_dir, *graph, background=True)
