"""The desired-state reader reads a new commit of `main` by its change alone (DESIGN §9).

Random edits (new, changed, removed, broken and duplicated files) are committed one after another;
after each, the reader that has followed every commit must agree with a fresh reader that parses
the whole commit, and `changed_keys` computed from the change must equal the full comparison.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from gitops_acp.store.desired import DesiredReader, DesiredState, changed_keys
from gitops_acp.store.git import GitRepo
from tests.conftest import commit_files, git

API = "acp.humanlayer.dev/v1alpha1"


def _task(name: str, message: str) -> str:
    return (
        f"apiVersion: {API}\nkind: Task\nmetadata:\n  name: {name}\nspec:\n  agentRef:\n    name: a\n"
        f"  userMessage: {message!r}\n"
    )


def _summary(state: DesiredState) -> tuple[object, ...]:
    assert state.load is not None
    return (
        {key: (loaded.path, loaded.line, loaded.resource) for key, loaded in state.resources.items()},
        [(e.path, e.line, str(e)) for e in state.load.errors],
        state.load.keys_in_error,
        state.load.broken_paths,
        state.held,
    )


@pytest.mark.parametrize("seed", [7, 11, 23])
def test_following_commits_equals_reading_each_whole(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    rng = random.Random(seed)
    files: dict[str, str] = {"tasks/t0.yaml": _task("t0", "hello")}
    commit_files(path, files, "start")
    with GitRepo.open(path) as repo:
        following = DesiredReader(repo)
        state = following.read(repo.resolve("refs/heads/main"))
        for step in range(80):
            edits: dict[str, str] = {}
            removed: list[str] = []
            for _ in range(rng.randint(1, 4)):
                roll = rng.random()
                name = f"t{rng.randint(0, 6)}"
                target = f"tasks/{name}.yaml"
                if roll < 0.45:
                    edits[target] = _task(name, f"message {step}")
                elif roll < 0.6 and files:
                    victim = rng.choice(sorted(files))
                    if victim not in edits and victim not in removed:
                        removed.append(victim)
                elif roll < 0.75:
                    edits[target] = "kind: Task\nmetadata: [broken\n"  # YAML that does not parse
                elif roll < 0.85:
                    edits[target] = _task(name, "x").replace("agentRef", "agentRefs")  # invalid spec
                else:
                    edits[f"more/{name}.yaml"] = _task(name, "a duplicate elsewhere")
            for victim in removed:
                git(path, "rm", "-q", victim)
                files.pop(victim, None)
            files.update(edits)
            for rel, text in edits.items():
                (path / rel).parent.mkdir(parents=True, exist_ok=True)
                (path / rel).write_text(text)
                git(path, "add", rel)
            git(path, "commit", "-q", "--allow-empty", "-m", f"step {step}")
            commit = repo.resolve("refs/heads/main")
            previous = state
            state = following.read(commit, previous=previous)
            # A fresh reader, given the same previous state (for what is held), reads all of it.
            fresh = DesiredReader(repo).read(commit, previous=dataclasses.replace(previous, commit=None))
            assert _summary(state) == _summary(fresh), f"step {step}"
            full = changed_keys(previous, dataclasses.replace(state, touched=None))
            assert changed_keys(previous, state) == full, f"step {step}"


def test_a_new_commit_parses_only_the_files_it_changed(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    commit_files(path, {f"tasks/t{i}.yaml": _task(f"t{i}", "x") for i in range(50)}, "fifty")
    with GitRepo.open(path) as repo:
        reader = DesiredReader(repo)
        first = reader.read(repo.resolve("refs/heads/main"))
        commit_files(path, {"tasks/new.yaml": _task("new", "y")}, "one more")
        second = reader.read(repo.resolve("refs/heads/main"), previous=first)
        assert len(second.resources) == 51
        assert second.touched is not None
        assert {name for _, name in second.touched} == {"new"}
        assert changed_keys(first, second) == {next(iter(second.touched))}
