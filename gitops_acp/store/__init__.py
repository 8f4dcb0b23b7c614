"""The git-backed store: everything gitops-acp reads from or writes to the repository.

- ``gitrepo``: the only module that talks to git (objects, refs, logs; commits made for a person);
- ``yamlio``: YAML in and out (libyaml's safe loader and dumper);
- ``desired``: the resources declared on ``main``, read from commits (never the working tree);
- ``status``: the status branch's single writer (group commit, compare-and-swap) and its reader;
- ``history``: a resource's checkpoint commits, for ``describe`` and ``history``.
"""
