"""The git-backed store: everything gitops-acp reads from or writes to the repository.

- ``git/``: the only package that talks to git, split by job (objects and packs, trees, refs,
  transfer, maintenance); commits made for a person live in ``usercommits.py``;
- ``yamlio``: YAML in and out (libyaml's safe loader and dumper);
- ``desired``: the resources declared on ``main``, read from commits (never the working tree);
- ``status``: the status branch's single writer (group commit, compare-and-swap) and its reader;
- ``history``: a resource's checkpoint commits, for ``describe`` and ``history``;
- ``recovery``: the ServeLock of a status branch, and what a killed writer left, cleared at start;
- ``shards``: which shard owns a task, and every status branch read as one;
- ``mirror``: the mirror of a remote repository, kept in step by fetch and push (driven by
  ``reactor/remote.py``).
"""
