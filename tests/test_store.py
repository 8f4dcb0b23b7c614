"""The git store on real repositories: objects and refs, the status writer, history, commits for people."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gitops_acp.cli.commits import commit_as_user, init_repository
from gitops_acp.errors import ConflictError, StoreError
from gitops_acp.resources.meta import Kind, status_path
from gitops_acp.store import history, yamlio
from gitops_acp.store.git import EMPTY_TREE, GitRepo, RefConflictError, TreeBuilder, TreeEditor
from gitops_acp.store.status import Change, StatusWriter, read_tip
from gitops_acp.store.statustree import read_status_file
from tests.conftest import commit_files, git

T = TypeVar("T")
BRANCH = "refs/heads/acp/status"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def task_doc(name: str, phase: str, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "acp.gitops.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"agentRef": {"name": "a"}, "userMessage": "What time is it?\nIn Tokyo."},
        "status": {"phase": phase, "statusDetail": f"now {phase}", **status},
    }


def task_change(name: str, old: str, new: str, **status: Any) -> Change:
    return Change("Task", name, task_doc(name, new, **status), old, new)


def task_path(name: str) -> str:
    return status_path(Kind.Task, name)


def status_files(repo: Path, ref: str = "acp/status") -> list[str]:
    # Not `bookmarks/`: a run crossing an hour adds one (store/statustree.py, tests/test_bookmarks.py).
    return sorted(git(repo, "ls-tree", "-r", "--name-only", ref, "--", "status", "archive").splitlines())


def message(repo: Path, sha: str) -> str:
    return git(repo, "log", "-1", "--format=%B", sha)


def move_ref_behind_back(repo: Path, path: str, content: bytes, *, ref: str = BRANCH) -> str:
    """Commit `path` on top of `ref` with git plumbing (another writer), return the new tip."""
    env = {**os.environ, "GIT_INDEX_FILE": str(repo / ".git" / "other-writer-index")}

    def plumbing(*args: str, stdin: bytes | None = None) -> str:
        out = subprocess.run(["git", *args], cwd=repo, env=env, input=stdin, capture_output=True, check=True)
        return out.stdout.decode().strip()

    old = plumbing("rev-parse", ref)
    plumbing("read-tree", old)
    blob = plumbing("hash-object", "-w", "--stdin", stdin=content)
    plumbing("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
    new = plumbing("commit-tree", plumbing("write-tree"), "-p", old, "-m", "another writer")
    plumbing("update-ref", ref, new, old)
    os.unlink(env["GIT_INDEX_FILE"])
    return new


# -- yamlio -----------------------------------------------------------------------------------


def test_yaml_round_trip_keeps_order_and_writes_literal_blocks() -> None:
    doc = {
        "apiVersion": "acp.gitops.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": "x"},
        "status": {
            "output": "line one\nline two\n",
            "long": "word " * 100,
            "tricky": ["trailing \nspace", "\tlead", "yes", "2026-01-01T00:00:00Z", "", "naïve ✓"],
            "n": 3,
            "none": None,
        },
    }
    text = yamlio.dump(doc)
    assert yamlio.load(text) == doc
    assert list(yamlio.load(text)) == ["apiVersion", "kind", "metadata", "status"]
    assert b"output: |\n    line one\n    line two\n" in text
    assert "naïve ✓".encode() in text  # unicode stays readable
    assert len([line for line in text.splitlines() if line.strip().startswith(b"long:")]) == 1


def test_yaml_load_rejects_non_mappings() -> None:
    with pytest.raises(StoreError, match="mapping"):
        yamlio.load(b"- a\n")
    with pytest.raises(StoreError, match="invalid YAML"):
        yamlio.load(b"a: [\n")


# -- GitRepo ----------------------------------------------------------------------------------


def test_open_work_tree_git_dir_bare_and_linked_worktree(repo: Path, tmp_path: Path) -> None:
    with GitRepo.open(repo) as r:
        assert r.work_tree == repo.resolve()
        assert r.git_dir == r.common_dir == (repo / ".git").resolve()
        assert not r.is_bare
    with GitRepo.open(repo / ".git") as r:
        assert r.work_tree == repo.resolve()
    git(repo, "worktree", "add", "-q", str(tmp_path / "linked"), "-b", "feature")
    with GitRepo.open(tmp_path / "linked") as r:
        assert r.common_dir == (repo / ".git").resolve()
        assert r.git_dir != r.common_dir
        assert r.resolve("HEAD") == r.resolve("refs/heads/feature") == git(repo, "rev-parse", "main")
    git(tmp_path, "init", "-q", "--bare", "bare.git")
    with GitRepo.open(tmp_path / "bare.git") as r:
        assert r.is_bare
        assert r.work_tree is None
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="not a git repository"):
        GitRepo.open(tmp_path / "plain")
    with pytest.raises(StoreError, match="not a git repository"):
        GitRepo.open(tmp_path / "missing")


def test_resolve_loose_packed_symbolic_and_missing(repo: Path) -> None:
    main = git(repo, "rev-parse", "main")
    git(repo, "branch", "acp/status")
    git(repo, "tag", "v1")
    with GitRepo.open(repo) as r:
        for name in ("main", "refs/heads/main", "HEAD", "acp/status", "v1", main[:10], "HEAD~0"):
            assert r.resolve(name) == main, name
        assert r.resolve("refs/heads/nope") is None
        assert r.resolve("nope") is None
        assert r.resolve("refs/heads/acp") is None  # a directory of refs, not a ref
        git(repo, "pack-refs", "--all")
        assert not (repo / ".git" / "refs" / "heads" / "main").exists()
        assert r.resolve("refs/heads/main") == r.resolve("acp/status") == main
        second = commit_files(repo, {"f.txt": "x"})  # a loose ref again, shadowing the packed one
        assert r.resolve("main") == second


def test_objects_round_trip_sorted_like_git_and_fsck_clean(repo: Path) -> None:
    main = git(repo, "rev-parse", "main")
    with GitRepo.open(repo) as r:
        blob = r.write_blob(b"hello\n")
        assert blob == hashlib.sha1(b"blob 6\0hello\n").hexdigest()
        inner = r.write_tree({"f.yaml": ("100644", blob)})
        # "a.b" (file) sorts before "a" (directory, compared as "a/"), the order git itself uses.
        tree = r.write_tree({"a": ("40000", inner), "a.b": ("100644", blob), "b": ("100644", blob)})
        commit = r.write_commit(
            tree=tree,
            parents=[main],
            message="Task/x: A -> B\n\nSpec-Commit: abc\nACP-Resource: Task/x",
            author=("bot", "bot@example.com"),
            timestamp=1_700_000_000.5,
        )
        r.update_ref("refs/heads/side", commit, None, message="test")
        assert r.resolve("side") == commit
        assert r.read_file(commit, "a/f.yaml") == b"hello\n"
        assert r.read_file(commit, "a/missing.yaml") is None
        with pytest.raises(StoreError, match="not a file"):
            r.read_file(commit, "a")
        assert r.read_blob(blob) == b"hello\n"
        assert r.list_tree(commit) == {"a/f.yaml": blob, "a.b": blob, "b": blob}
        assert r.read_tree(commit) == {"a": ("40000", inner), "a.b": ("100644", blob), "b": ("100644", blob)}
        assert r.read_tree(commit, "nope") is None
        assert r.commit_time(commit) == 1_700_000_000.0
        (info,) = r.log("side", n=1)
        assert (info.sha, info.subject, info.body, info.author) == (
            commit,
            "Task/x: A -> B",
            "",
            "bot <bot@example.com>",
        )
        assert info.trailers == (("Spec-Commit", "abc"), ("ACP-Resource", "Task/x"))
        # Without trailers (`history`): none parsed, the body keeps its trailer block.
        (bare,) = r.log("side", n=1, trailers=False)
        assert (bare.sha, bare.subject, bare.trailers) == (commit, "Task/x: A -> B", ())
        assert bare.body == "Spec-Commit: abc\nACP-Resource: Task/x"
        assert r.write_tree({}) == EMPTY_TREE
        with pytest.raises(StoreError, match="invalid tree entry"):
            r.write_tree({"a/b": ("100644", blob)})
    assert git(repo, "ls-tree", "--name-only", "side") == "a.b\na\nb"
    subprocess.run(["git", "fsck", "--strict", "--no-dangling"], cwd=repo, check=True, capture_output=True)


def test_many_blobs_read_in_one_batch_equal_one_by_one(repo: Path) -> None:
    contents = [b"", b"\n", b"a\nb\n\n", os.urandom(70_000)] + [f"task {i}\n".encode() for i in range(40)]
    with GitRepo.open(repo) as r:
        shas = [r.write_blob(content) for content in contents]
        with r.one_pack():  # some packed, some loose: cat-file finds both
            shas.append(r.write_blob(b"packed\n"))
        contents.append(b"packed\n")
        read = r.read_blobs(shas + shas[:3])  # repeated names are read once
        assert read == dict(zip(shas, contents, strict=True))
        assert r.read_blobs(shas[:2]) == {shas[0]: b"", shas[1]: b"\n"}  # a few: the persistent process
        missing = hashlib.sha1(b"blob 7\0nowhere").hexdigest()
        with pytest.raises(StoreError, match=f"no blob {missing}"):
            r.read_blobs([*shas, missing])
        tree = r.write_tree({"f": ("100644", shas[0])})
        with pytest.raises(StoreError, match="no blob"):  # not a blob
            r.read_blobs([*shas, tree])


@pytest.mark.parametrize("count", [3, 40])  # a few: the persistent cat-file; many: one batch-check run
def test_which_paths_are_files_at_a_commit_is_answered_for_many_at_once(repo: Path, count: int) -> None:
    files = {f"archive/tasks/{i % 4}/t{i}.yaml": f"t{i}\n" for i in range(0, 2 * count, 2)}
    commit = commit_files(repo, files)
    asked = [path.replace(".yaml", ".yml") for path in list(files)[:2]]  # absent
    asked += [f"archive/tasks/{i % 4}/t{i}.yaml" for i in range(2 * count)]  # every other one absent
    asked += ["archive/tasks/1", "archive", "nowhere/t0.yaml", "archive/tasks/0/t0.yaml"]  # dirs; repeated
    with GitRepo.open(repo) as r:
        assert r.files_present(commit, asked) == set(files)
        assert r.files_present(commit, []) == set()


def test_tree_builder_edits_match_git_mktree(repo: Path) -> None:
    with GitRepo.open(repo) as r:
        blob = r.write_blob(b"x")
        sub = r.write_tree({"f": ("100644", blob)})
        builder = TreeBuilder({f"n{i}.yaml": ("100644", blob) for i in range(0, 40, 3)})
        builder.data()  # from here on edits keep the serialized order up to date
        builder.set("a", "100644", blob)
        builder.set("a.b", "100644", blob)
        builder.set("a", "040000", sub)  # a file becomes a directory: it moves in the order
        builder.set("n7.yaml", "100755", blob)
        assert builder.remove("n3.yaml")
        assert not builder.remove("n4.yaml")
        assert builder.get("a") == ("40000", sub)
        assert "a.b" in builder
        mktree = "".join(
            f"{mode} {'tree' if mode == '40000' else 'blob'} {sha}\t{name}\n"
            for name, (mode, sha) in builder.entries().items()
        )
        expected = subprocess.run(["git", "mktree"], cwd=repo, input=mktree, capture_output=True, text=True)
        assert r.write_tree(builder) == expected.stdout.strip()
        assert r.write_tree(builder.entries()) == expected.stdout.strip()
        # Read back as git stored it, then edited alike: the same tree as a builder of the entries.
        stored = r.write_tree(builder)
        parsed = TreeBuilder.parse(r.read_trees([stored] * 16)[stored])
        assert parsed.entries() == builder.entries()
        assert parsed.data() == builder.data()
        fresh = TreeBuilder(builder.entries())
        unsplit = TreeBuilder.raw(r.read_trees([stored])[stored])  # edited as git's bytes
        for edited in (parsed, fresh, unsplit):
            edited.set("a", "100644", blob)  # the directory becomes a file again: it moves back
            edited.set("a-", "040000", sub)
            edited.remove("n9.yaml")
        assert unsplit._raw is not None  # still bytes: three edits
        assert unsplit.data() == fresh.data()
        assert unsplit.get("a") == ("100644", blob)
        assert unsplit.get("n9.yaml") is None
        assert unsplit.get("zz") is None
        assert parsed.entries() == fresh.entries()
        assert parsed.data() == fresh.data()
        assert r.write_tree(parsed) == r.write_tree(fresh.entries())
        # A directory mode zero-padded as old gits wrote it still sorts as a directory ("a/" after "a.b").
        padded = TreeBuilder.parse(b"40000 a\0" + bytes.fromhex(sub)).data().replace(b"40000 a", b"040000 a")
        old = TreeBuilder.parse(padded)
        old.set("a.b", "100644", blob)
        assert old.data() == TreeBuilder.parse(b"100644 a.b\0" + bytes.fromhex(blob)).data() + padded
        with pytest.raises(StoreError, match="malformed tree"):
            TreeBuilder.parse(b"100644 cut-short")
        with pytest.raises(StoreError, match="malformed tree"):
            TreeBuilder.raw(b"100644 f\0" + bytes(19)).set("g", "100644", blob)  # found when used
        with pytest.raises(StoreError, match="malformed tree"):
            TreeBuilder.parse(b"100644 f\0" + bytes(19))


def test_a_tree_edited_as_gits_bytes_matches_one_edited_as_entries() -> None:
    """`TreeBuilder.raw` (a level read for one commit) against the map of entries, in random edits:
    files and directories of the same names, removals, and past RAW_EDITS (then split)."""
    import random

    rng = random.Random(12)
    names = ["a", "a.b", "a-", "a0", "b", "b.yaml", "ab", "a.b.c", "z", "0", "g000001.yaml"]
    shas = [hashlib.sha1(bytes([i])).hexdigest() for i in range(8)]
    for _ in range(300):
        start = {
            name: ("40000" if rng.random() < 0.3 else "100644", rng.choice(shas))
            for name in rng.sample(names, rng.randrange(len(names)))
        }
        model = TreeBuilder(start)
        unsplit = TreeBuilder.raw(TreeBuilder(start).data())
        for _ in range(rng.randrange(1, 2 * TreeBuilder.RAW_EDITS + 2)):
            name = rng.choice(names)
            if rng.random() < 0.3:
                assert unsplit.remove(name) == model.remove(name)
            else:
                mode = "040000" if rng.random() < 0.3 else rng.choice(["100644", "100755"])
                sha = rng.choice(shas)
                unsplit.set(name, mode, sha)
                model.set(name, mode, sha)
            assert unsplit.get(name) == model.get(name)
            assert bool(unsplit) == bool(model)
        assert unsplit.data() == model.data()
        assert unsplit.entries() == model.entries()


def test_preloaded_levels_are_read_in_one_call_per_depth_and_edit_alike(repo: Path) -> None:
    with GitRepo.open(repo) as r:
        blob = r.write_blob(b"x")
        built = TreeEditor(r.read_tree, None)
        for i in range(60):
            built.set(f"archive/tasks/{i % 4}/{i % 7}/f{i}.yaml", "100644", blob)
        built.set("status/llms/one.yaml", "100644", blob)
        root = built.write(r.write_tree)
        singles: list[str] = []
        batches: list[list[str]] = []

        def read_one(sha: str) -> dict[str, tuple[str, str]] | None:
            singles.append(sha)
            return r.read_tree(sha)

        def read_many(shas: list[str]) -> dict[str, bytes]:
            batches.append(shas)
            return r.read_trees(shas)

        wanted = [f"archive/tasks/{i % 4}/{i % 7}" for i in range(28)] + [
            "archive/tasks/9/9",
            "nowhere/at/all",
        ]
        preloaded = TreeEditor(read_one, root)
        preloaded.preload(wanted, read_many)
        assert singles == []
        # root, archive, archive/tasks, its 4 children, their 28 children: one call per depth
        assert [len(batch) for batch in batches] == [1, 1, 1, 4, 28]
        plain = TreeEditor(r.read_tree, root)
        for editor in (preloaded, plain):
            for i in range(0, 60, 5):
                assert editor.get(f"archive/tasks/{i % 4}/{i % 7}/f{i}.yaml") == ("100644", blob)
                editor.remove(f"archive/tasks/{i % 4}/{i % 7}/f{i}.yaml")
            editor.set("archive/tasks/9/9/new.yaml", "100644", blob)
        assert singles == []  # everything the edits needed was read already
        assert preloaded.write(r.write_tree) == plain.write(r.write_tree)
        preloaded.preload(wanted, read_many)  # nothing left to read
        assert len(batches) == 5
        with pytest.raises(StoreError, match="no tree"):
            r.read_trees([blob] * 20)


def test_list_tree_walk_and_ls_tree_agree_on_deep_trees(repo: Path) -> None:
    files = {f"d{i}/e{j}/f.yaml": f"{i}-{j}" for i in range(6) for j in range(4)}
    commit = commit_files(repo, files)
    with GitRepo.open(repo) as r:
        listed = r.list_tree(commit)  # more directories than the walk limit: switches to ls-tree
        assert listed == r.list_tree(commit)
    assert set(listed) == set(files)
    assert listed["d0/e0/f.yaml"] == git(repo, "rev-parse", f"{commit}:d0/e0/f.yaml")


def test_update_ref_conflict_carries_the_actual_value(repo: Path) -> None:
    main = git(repo, "rev-parse", "main")
    other = commit_files(repo, {"x": "1"})
    with GitRepo.open(repo) as r:
        with pytest.raises(RefConflictError) as lost:
            r.update_ref("refs/heads/main", main, main, message="stale")
        assert lost.value.actual == other
        assert isinstance(lost.value, ConflictError)
        with pytest.raises(ConflictError) as exists:
            r.update_ref("refs/heads/main", main, None, message="create")
        assert exists.value.actual == other  # type: ignore[attr-defined]
        with pytest.raises(ConflictError) as missing:
            r.update_ref("refs/heads/nope", main, other, message="missing")
        assert missing.value.actual is None  # type: ignore[attr-defined]
        with pytest.raises(StoreError, match="full ref name"):
            r.update_ref("main", main, other, message="short")
    assert git(repo, "rev-parse", "main") == other


def test_a_repo_used_from_two_threads_at_once_refuses(repo: Path) -> None:
    import threading

    with GitRepo.open(repo) as r:
        holding = threading.Event()
        release = threading.Event()

        def hold() -> None:
            with r._busy:  # what any call does for its duration
                holding.set()
                release.wait(5)

        thread = threading.Thread(target=hold)
        thread.start()
        holding.wait(5)
        try:
            with pytest.raises(StoreError, match="two threads"):
                r.resolve("main")
        finally:
            release.set()
            thread.join()
        assert r.resolve("main") is not None


# -- StatusWriter -----------------------------------------------------------------------------


def test_write_then_read_back_and_restart(repo: Path) -> None:
    async def scenario() -> tuple[str | None, dict[Any, Any]]:
        writer = StatusWriter(repo)
        assert await writer.start() == {}
        sha = await writer.commit([task_change("hello", "-", "Pending")], spec_commit="a" * 40)
        await writer.close()
        again = StatusWriter(repo)
        docs = await again.start()
        await again.close()
        return sha, docs

    sha, docs = run(scenario())
    assert sha == git(repo, "rev-parse", "acp/status")
    assert docs == {("Task", "hello"): task_doc("hello", "Pending")}
    assert status_files(repo) == [task_path("hello")]
    assert (
        message(repo, sha) == f"Task/hello: - -> Pending\n\nSpec-Commit: {'a' * 40}\nACP-Resource: Task/hello"
    )
    assert git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>", sha) == (
        "gitops-acp <gitops-acp@localhost>|gitops-acp <gitops-acp@localhost>"
    )
    with GitRepo.open(repo) as r:
        tip, read = read_tip(r)
    assert tip == sha
    assert read == docs


def test_concurrent_checkpoints_share_group_commits(repo: Path) -> None:
    names = [f"task-{i:02d}" for i in range(50)]

    async def scenario() -> tuple[list[str | None], StatusWriter]:
        writer = StatusWriter(repo)
        await writer.start()
        shas = await asyncio.gather(
            *(
                writer.commit([task_change(name, "-", "Pending")], spec_commit=f"spec{i % 2}")
                for i, name in enumerate(names)
            )
        )
        await writer.close()
        return shas, writer

    shas, writer = run(scenario())
    commits = git(repo, "rev-list", "acp/status").splitlines()
    assert len(commits) == writer.stats.commits < 10
    assert writer.stats.checkpoints == writer.stats.resources == 50
    assert set(shas) <= set(commits)
    assert status_files(repo) == sorted(task_path(name) for name in names)
    resources: list[str] = []
    for sha in commits:
        with GitRepo.open(repo) as r:
            (info,) = r.log(sha, n=1)
        listed = info.trailer("ACP-Resource")
        resources += listed
        if len(listed) > 1:
            assert info.subject == f"checkpoint: {len(listed)} resources"
            assert info.body.splitlines() == [f"{res}: - -> Pending" for res in listed]
        assert set(info.trailer("Spec-Commit")) <= {"spec0", "spec1"}
    assert sorted(resources) == [f"Task/{name}" for name in names]


def test_two_checkpoints_of_one_resource_never_share_a_commit(repo: Path) -> None:
    async def scenario() -> list[str | None]:
        writer = StatusWriter(repo)
        await writer.start()
        shas = await asyncio.gather(
            writer.commit([task_change("t", "-", "Pending")], spec_commit="s"),
            writer.commit(
                [task_change("t", "Pending", "ReadyForLLM"), task_change("u", "-", "Pending")],
                spec_commit="s",
            ),
            writer.commit([task_change("v", "-", "Pending")], spec_commit="s"),
            writer.commit([task_change("t", "ReadyForLLM", "FinalAnswer")], spec_commit="s"),
        )
        await writer.close()
        return list(shas)

    first, second, third, fourth = run(scenario())
    assert len({first, second, fourth}) == 3
    assert third == first  # a different resource rides along with the first commit
    assert git(repo, "rev-list", "--reverse", "acp/status").splitlines() == [first, second, fourth]
    assert git(repo, "log", "--format=%s", "acp/status").splitlines() == [
        "Task/t: ReadyForLLM -> FinalAnswer",
        "checkpoint: 2 resources",
        "checkpoint: 2 resources",
    ]

    def phase_at(rev: str) -> str:
        return str(yamlio.load(git(repo, "show", f"{rev}:{task_path('t')}").encode())["status"]["phase"])

    assert phase_at(str(second)) == "ReadyForLLM"
    assert phase_at("acp/status") == "FinalAnswer"


def test_one_call_is_one_commit(repo: Path) -> None:
    pending = {"kind": "ToolCall", "status": {"phase": "Pending"}}
    changes = [
        task_change("hello", "ReadyForLLM", "ToolCallsPending"),
        Change("ToolCall", "hello-k3-tc-01", pending, "-", "Pending"),
        Change("ToolCall", "hello-k3-tc-02", pending, "-", "Pending"),
    ]

    async def scenario() -> str | None:
        writer = StatusWriter(repo)
        await writer.start()
        sha = await writer.commit(changes, spec_commit="c0ffee")
        await writer.close()
        return sha

    sha = run(scenario())
    assert git(repo, "rev-list", "--count", "acp/status") == "1"
    assert message(repo, str(sha)) == "\n".join(
        [
            "checkpoint: 3 resources",
            "",
            "Task/hello: ReadyForLLM -> ToolCallsPending",
            "ToolCall/hello-k3-tc-01: - -> Pending",
            "ToolCall/hello-k3-tc-02: - -> Pending",
            "",
            "Spec-Commit: c0ffee",
            "ACP-Resource: Task/hello",
            "ACP-Resource: ToolCall/hello-k3-tc-01",
            "ACP-Resource: ToolCall/hello-k3-tc-02",
        ]
    )
    assert status_files(repo) == sorted(
        [
            task_path("hello"),
            status_path(Kind.ToolCall, "hello-k3-tc-01"),
            status_path(Kind.ToolCall, "hello-k3-tc-02"),
        ]
    )


def test_no_op_checkpoints_write_nothing_and_deletes_remove_files(repo: Path) -> None:
    async def scenario() -> list[str | None]:
        writer = StatusWriter(repo)
        await writer.start()
        first = await writer.commit([task_change("t", "-", "Pending")], spec_commit="s")
        same = await writer.commit([task_change("t", "Pending", "Pending")], spec_commit="s")
        gone_already = await writer.commit([Change("Task", "never", None, "Pending", "-")], spec_commit="s")
        deleted = await writer.commit([Change("Task", "t", None, "Pending", "Cancelled")], spec_commit="s")
        await writer.close()
        assert writer.stats.commits == 2
        return [first, same, gone_already, deleted]

    first, same, gone_already, deleted = run(scenario())
    assert same is None
    assert gone_already is None
    assert git(repo, "rev-list", "acp/status").splitlines() == [deleted, first]
    assert status_files(repo) == []  # the empty directories went with the last file


def test_lost_race_is_retried_on_the_new_tip(repo: Path) -> None:
    async def scenario() -> tuple[str | None, str, StatusWriter]:
        writer = StatusWriter(repo)
        await writer.start()
        await writer.commit([task_change("mine", "-", "Pending")], spec_commit="s")
        theirs = move_ref_behind_back(repo, task_path("theirs"), b"kind: Task\n")
        sha = await writer.commit([task_change("mine", "Pending", "ReadyForLLM")], spec_commit="s")
        await writer.close()
        return sha, theirs, writer

    sha, theirs, writer = run(scenario())
    assert writer.stats.conflicts == 1
    assert git(repo, "rev-parse", "acp/status") == sha
    assert git(repo, "rev-parse", f"{sha}^") == theirs
    assert status_files(repo) == sorted([task_path("mine"), task_path("theirs")])
    assert "ReadyForLLM" in git(repo, "show", f"acp/status:{task_path('mine')}")


def test_a_batch_that_cannot_be_written_fails_its_callers(repo: Path) -> None:
    """A lock held by someone else is named as such after a bounded wait, never retried as a lost race."""
    lock = repo / ".git" / "refs" / "heads" / "acp" / "status.lock"

    async def scenario() -> tuple[list[Any], str | None, str | None, StatusWriter]:
        writer = StatusWriter(repo, max_attempts=3, lock_wait=0.3)
        await writer.start()
        lock.parent.mkdir(parents=True)
        lock.write_text("held by someone else")
        results = await asyncio.gather(
            writer.commit([task_change("a", "-", "Pending")], spec_commit="s"),
            writer.commit([task_change("b", "-", "Pending")], spec_commit="s"),
            return_exceptions=True,
        )
        failure = writer.failure
        lock.unlink()
        after = await writer.commit([task_change("a", "-", "Pending")], spec_commit="s")
        await writer.close()
        return list(results), after, failure, writer

    results, after, failure, writer = run(scenario())
    assert all(isinstance(result, StoreError) for result in results), results
    assert not any(isinstance(result, ConflictError) for result in results), results
    message = str(results[0])
    assert "stayed locked" in message, message
    assert "held by another process" in message, message
    assert str(lock) in message
    assert failure == message
    assert writer.failure is None  # the next commit landed
    assert writer.stats.conflicts == 0
    assert after == git(repo, "rev-parse", "acp/status")
    assert git(repo, "rev-list", "--count", "acp/status") == "1"


def test_the_owner_of_the_branch_removes_a_lock_nobody_touches(repo: Path) -> None:
    """With the branch's ServeLock (owns_branch), a lock unchanged for the whole wait was left by a kill."""
    lock = repo / ".git" / "refs" / "heads" / "acp" / "status.lock"

    async def scenario() -> str | None:
        writer = StatusWriter(repo, lock_wait=0.3, owns_branch=True)
        await writer.start()
        lock.parent.mkdir(parents=True)
        lock.write_text("0" * 40 + "\n")  # what a git update-ref killed after `prepare` leaves
        sha = await writer.commit([task_change("a", "-", "Pending")], spec_commit="s")
        await writer.close()
        return sha

    sha = run(scenario())
    assert sha == git(repo, "rev-parse", "acp/status")
    assert not lock.exists()


def test_a_lock_that_keeps_changing_is_someone_elses(repo: Path) -> None:
    """Even the branch's owner leaves alone a lock that is rewritten while it waits: a live process."""
    lock = repo / ".git" / "refs" / "heads" / "acp" / "status.lock"

    async def scenario() -> Any:
        writer = StatusWriter(repo, lock_wait=0.4, owns_branch=True)
        await writer.start()
        lock.parent.mkdir(parents=True)
        lock.write_text("one")

        async def churn() -> None:
            for i in range(20):
                await asyncio.sleep(0.05)
                # A new file each time (another inode), put in place at once: removing the lock and
                # writing it again left a moment without one, in which the writer could take it.
                fresh = repo / ".git" / f"holder-{i}"
                fresh.write_text(f"holder {i}")
                fresh.replace(lock)

        churning = asyncio.ensure_future(churn())
        try:
            result = await asyncio.gather(
                writer.commit([task_change("a", "-", "Pending")], spec_commit="s"), return_exceptions=True
            )
            await churning
            lock.unlink()
        finally:
            await writer.close()  # its `update-ref --stdin` process stopped, whatever failed
        return result[0]

    result = run(scenario())
    assert isinstance(result, StoreError), result
    assert "held by another process" in str(result), result
    assert subprocess.run(["git", "rev-parse", "--verify", "--quiet", "acp/status"], cwd=repo).returncode != 0


def test_a_cancelled_caller_still_gets_its_checkpoint_committed(repo: Path) -> None:
    async def scenario() -> None:
        writer = StatusWriter(repo)
        await writer.start()
        pending = asyncio.ensure_future(writer.commit([task_change("t", "-", "Pending")], spec_commit="s"))
        await asyncio.sleep(0)  # submitted
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        await writer.close()  # flushes what was submitted

    run(scenario())
    assert status_files(repo) == [task_path("t")]


def test_on_commit_hooks_see_each_commit_before_callers_do(repo: Path) -> None:
    seen: list[str] = []

    async def scenario() -> str | None:
        writer = StatusWriter(repo)

        async def hook(sha: str) -> None:
            seen.append(sha)

        writer.on_commit.append(hook)
        await writer.start()
        sha = await writer.commit([task_change("t", "-", "Pending")], spec_commit="s")
        assert seen == [sha]
        await writer.close()
        return sha

    assert seen == [run(scenario())]


def test_bad_input_is_refused_at_the_call(repo: Path) -> None:
    async def scenario() -> None:
        writer = StatusWriter(repo)
        with pytest.raises(StoreError, match="not running"):
            await writer.commit([task_change("t", "-", "Pending")], spec_commit="s")
        await writer.start()
        with pytest.raises(StoreError, match="unknown kind"):
            await writer.commit([Change("Pod", "p", {}, "-", "-")], spec_commit="s")
        with pytest.raises(StoreError, match="invalid resource name"):
            await writer.commit([Change("Task", "../x", {}, "-", "-")], spec_commit="s")
        with pytest.raises(ValueError, match="twice"):
            await writer.commit([task_change("t", "-", "A"), task_change("t", "A", "B")], spec_commit="s")
        await writer.close()

    run(scenario())
    assert git(repo, "branch", "--list", "acp/status") == ""


def test_the_writer_never_touches_main_the_index_or_the_work_tree(repo: Path) -> None:
    commit_files(repo, {"tasks/hello.yaml": "kind: Task\n", "notes.txt": "a\n"})
    (repo / "notes.txt").write_text("edited, not committed\n")
    (repo / "untracked.txt").write_text("new\n")
    git(repo, "add", "tasks/hello.yaml")  # a staged no-op, the index is written
    index = repo / ".git" / "index"

    def snapshot() -> tuple[object, ...]:
        # Index first, and a status that may not refresh it: the check itself must not write it.
        return (
            index.stat().st_mtime_ns,
            hashlib.sha256(index.read_bytes()).hexdigest(),
            git(repo, "--no-optional-locks", "status", "--porcelain"),
            git(repo, "rev-parse", "main"),
            sorted(p.name for p in repo.iterdir()),
        )

    before = snapshot()

    async def scenario() -> None:
        writer = StatusWriter(repo)
        await writer.start()
        for turn in range(10):
            await asyncio.gather(
                *(writer.commit([task_change(f"t{i}", "-", f"P{turn}")], spec_commit="s") for i in range(5))
            )
        await writer.close()

    run(scenario())
    assert snapshot() == before
    assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/main"
    fsck = subprocess.run(
        ["git", "fsck", "--strict", "--no-dangling"], cwd=repo, capture_output=True, text=True
    )
    assert fsck.returncode == 0, fsck.stderr
    assert fsck.stdout == ""


def test_history_events_newest_first_with_phases_and_detail(repo: Path) -> None:
    async def scenario() -> None:
        writer = StatusWriter(repo)
        await writer.start()
        await writer.commit([task_change("t", "-", "Pending")], spec_commit="s")
        await writer.commit(
            [task_change("t", "Pending", "ReadyForLLM"), task_change("u", "-", "Pending")], spec_commit="s"
        )
        await writer.commit([task_change("u", "Pending", "ReadyForLLM")], spec_commit="s")
        await writer.commit(
            [task_change("t", "ReadyForLLM", "Failed", error="HTTP 401: bad key")], spec_commit="s"
        )
        await writer.close()

    run(scenario())
    with GitRepo.open(repo) as r:
        events = history.events(r, branch="acp/status", kind="Task", name="t")
        limited = history.events(r, kind="Task", name="t", n=1)
        none = history.events(r, kind="Task", name="nobody")
    shas = git(repo, "log", "--format=%H", "acp/status", "--", status_path(Kind.Task, "t")).splitlines()
    assert [e.sha for e in events] == shas
    assert [(e.old_phase, e.new_phase, e.detail) for e in events] == [
        ("ReadyForLLM", "Failed", "now Failed; error: HTTP 401: bad key"),
        ("Pending", "ReadyForLLM", "now ReadyForLLM"),
        ("-", "Pending", "now Pending"),
    ]
    assert events[0].timestamp > 0
    assert limited == events[:1]
    assert none == []


# -- commits made for a person ----------------------------------------------------------------


def test_commit_as_user_through_the_work_tree(repo: Path) -> None:
    commit_files(repo, {"tasks/old.yaml": "kind: Task\n"})
    (repo / "elsewhere.txt").write_text("someone's unrelated, unstaged work\n")
    sha = commit_as_user(
        repo,
        files={"tasks/new.yaml": b"kind: Task\nmetadata: {name: new}\n", "tasks/old.yaml": None},
        message="Create task new",
    )
    assert sha == git(repo, "rev-parse", "main")
    assert (
        git(repo, "log", "-1", "--format=%an <%ae>|%s", sha)
        == "Test Human <human@example.com>|Create task new"
    )
    assert git(repo, "show", "--name-status", "--format=", sha).splitlines() == [
        "A\ttasks/new.yaml",
        "D\ttasks/old.yaml",
    ]
    assert git(repo, "status", "--porcelain") == "?? elsewhere.txt"
    # Same content again: nothing to commit, the tip is returned.
    assert (
        commit_as_user(repo, files={"tasks/new.yaml": b"kind: Task\nmetadata: {name: new}\n"}, message="x")
        == sha
    )


def test_commit_as_user_refuses_to_mix_in_uncommitted_changes(repo: Path) -> None:
    commit_files(repo, {"approvals/a.yaml": "decision: approved\n"})
    main = git(repo, "rev-parse", "main")
    (repo / "approvals" / "a.yaml").write_text("decision: rejected\n")
    with pytest.raises(StoreError, match=r"uncommitted changes to approvals/a.yaml"):
        commit_as_user(
            repo, files={"approvals/a.yaml": b"decision: approved\ncomment: ok\n"}, message="approve"
        )
    assert (repo / "approvals" / "a.yaml").read_text() == "decision: rejected\n"  # the person's edit survives
    git(repo, "checkout", "--", "approvals/a.yaml")
    (repo / "staged.txt").write_text("half done\n")
    git(repo, "add", "staged.txt")
    with pytest.raises(StoreError, match=r"staged changes \(staged.txt\)"):
        commit_as_user(repo, files={"approvals/b.yaml": b"x: 1\n"}, message="approve")
    git(repo, "reset", "-q", "staged.txt")
    (repo / ".git" / "MERGE_HEAD").write_text(main + "\n")
    with pytest.raises(StoreError, match="a merge is in progress"):
        commit_as_user(repo, files={"approvals/b.yaml": b"x: 1\n"}, message="approve")
    assert git(repo, "rev-parse", "main") == main
    assert not (repo / "approvals" / "b.yaml").exists()


def test_commit_as_user_on_a_bare_repository_goes_through_a_clone(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.delenv(var)  # so the repository's own config decides, as for a person
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    git(bare, "config", "user.name", "Local Config Person")
    before = git(bare, "rev-parse", "main")
    sha = commit_as_user(bare, files={"tasks/t.yaml": b"kind: Task\n"}, message="Create task t")
    assert git(bare, "rev-parse", "main") == sha
    assert git(bare, "rev-parse", f"{sha}^") == before
    assert git(bare, "show", f"{sha}:tasks/t.yaml") == "kind: Task"
    assert git(bare, "log", "-1", "--format=%an", sha) == "Local Config Person"
    # A branch that is not checked out anywhere takes the same road, even in a non-bare repository.
    side = commit_as_user(repo, files={"a.txt": b"a\n"}, message="side", branch="side")
    assert git(repo, "rev-parse", "side") == side
    assert git(repo, "status", "--porcelain") == ""
    assert not (repo / "a.txt").exists()


def test_init_repository(tmp_path: Path) -> None:
    target = tmp_path / "new"
    sha = init_repository(
        target, files={"llms/openai.yaml": b"kind: LLM\n", "README.md": b"hi\n"}, message="init"
    )
    assert git(target, "rev-parse", "main") == sha
    assert git(target, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(target, "ls-tree", "-r", "--name-only", sha).splitlines() == ["README.md", "llms/openai.yaml"]
    assert git(target, "status", "--porcelain") == ""
    with pytest.raises(StoreError, match="not an empty directory"):
        init_repository(target, files={}, message="again")


def test_init_repository_at_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sha = init_repository("demo", files={"README.md": b"hi\n"}, message="init")  # `gitops-acp init demo`
    assert git(tmp_path / "demo", "rev-parse", "main") == sha
    assert not (tmp_path / "demo" / "demo").exists()


def test_one_pack_writes_a_pack_git_reads_and_nothing_when_the_block_fails(repo: Path) -> None:
    pack_dir = repo / ".git" / "objects" / "pack"
    before = set(pack_dir.glob("*.pack"))
    with GitRepo.open(repo) as r:
        warm = r.write_blob(b"a loose object, read before the pack exists\n")
        assert r.read_blob(warm) == b"a loose object, read before the pack exists\n"
        with r.one_pack():
            small = r.write_blob(b"small\n")
            large = r.write_blob(os.urandom(70_000))  # a size that needs several header bytes
            tree = r.write_tree({"small.txt": ("100644", small), "large.bin": ("100644", large)})
            commit = r.write_commit(tree=tree, parents=[], message="packed", author=("T", "t@example.com"))
            assert not (repo / ".git" / "objects" / small[:2] / small[2:]).exists()
        r.update_ref("refs/heads/packed", commit, None, message="test")
        assert r.read_blob(small) == b"small\n"  # the running cat-file finds the new pack
        written: list[str] = []

        def failing_batch() -> None:
            with r.one_pack():
                written.append(r.write_blob(b"never written\n"))
                raise RuntimeError("the batch failed")

        with pytest.raises(RuntimeError):
            failing_batch()
        with pytest.raises(StoreError, match="do not nest"), r.one_pack(), r.one_pack():
            pass
    (pack,) = set(pack_dir.glob("*.pack")) - before
    subprocess.run(["git", "verify-pack", str(pack.with_suffix(".idx"))], cwd=repo, check=True)
    subprocess.run(["git", "fsck", "--strict", "--no-dangling"], cwd=repo, check=True, capture_output=True)
    assert git(repo, "ls-tree", "-r", "--name-only", "packed").splitlines() == ["large.bin", "small.txt"]
    assert subprocess.run(["git", "cat-file", "-e", written[0]], cwd=repo).returncode != 0


def test_maintenance_of_a_mirror_also_runs_gc(repo: Path) -> None:
    """A mirror is the reconciler's alone: `gc --auto` may pack refs and prune there."""
    # A history, for the commit-graph's chain below: 40 commits on a branch of their own.
    stream = "".join(
        f"commit refs/heads/history\ncommitter a <a@example.com> {1_700_000_000 + i} +0000\ndata 1\nx\n"
        f"M 100644 inline history.txt\ndata {len(str(i)) + 1}\n{i}\n\n"
        for i in range(40)
    )
    subprocess.run(["git", "fast-import", "--quiet"], input=stream.encode(), cwd=repo, check=True)
    mirror = repo.parent / "mirror.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(mirror)], check=True)
    subprocess.run(["git", "config", "gc.auto", "1"], cwd=mirror, check=True)
    with GitRepo.open(mirror) as r:
        for i in range(3):
            r.write_blob(f"loose {i}\n".encode())
        r.maintain(shared=False)
    assert (mirror / "packed-refs").exists()
    # The commit-graph a chain here too: gc's single file became its base, and the next run
    # adds a layer of the new commits instead of rewriting every commit of the history.
    chain = mirror / "objects" / "info" / "commit-graphs" / "commit-graph-chain"
    base = chain.read_text().split()[0]
    for i in range(5):
        commit_files(repo, {f"f{i}.txt": f"{i}\n"})
    subprocess.run(["git", "fetch", "-q", str(repo), "+refs/heads/*:refs/heads/*"], cwd=mirror, check=True)
    with GitRepo.open(mirror) as r:
        r.maintain(shared=False)
    layers = chain.read_text().split()
    assert layers[0] == base
    assert len(layers) >= 2
    assert not (mirror / "objects" / "info" / "commit-graph").exists()
    git(mirror, "commit-graph", "verify")


def test_maintenance_rolls_up_packs_and_loose_objects_and_writes_the_commit_graph(repo: Path) -> None:
    packs = lambda: len(list((repo / ".git" / "objects" / "pack").glob("*.pack")))  # noqa: E731

    async def scenario() -> None:
        writer = StatusWriter(repo)
        await writer.start()
        assert packs() == 0  # the repository's commits are loose objects
        for i in range(40):
            await writer.commit([task_change(f"t{i}", "-", "Pending")], spec_commit="a" * 40)
        with GitRepo.open(repo) as r:
            r.delete_retired_packs(older_than=0.0)  # what the roll-ups replaced, as a while later
            assert packs() == 2 + 8  # one pack per group commit, every 16 rolled into one by the writer
            r.write_blob(b"a loose object, as approval branches write them\n")
            r.maintain()  # what the manager runs in the background while the writer goes on
            assert packs() == 8 + 1 + 2  # the writer's 8 left alone; the roll-ups merged, deleted later
            r.delete_retired_packs(older_than=0.0)
        assert packs() == 8 + 1  # the 8 the writer will roll up are left alone, the rest merged
        await writer.commit([task_change("after", "-", "Pending")], spec_commit="a" * 40)
        await writer.close()

    run(scenario())
    loose = int(git(repo, "count-objects", "-v").split("count: ")[1].split("\n")[0])
    assert loose == 0  # the approval branch's loose object went into the merged pack
    # A repository people work in: a split commit-graph, whose lock `git gc` does not trip over.
    assert (repo / ".git" / "objects" / "info" / "commit-graphs" / "commit-graph-chain").exists()
    # ... and no `gc --auto`: its pack-refs would have locked (and packed) every loose ref.
    assert (repo / ".git" / "refs" / "heads" / "acp" / "status").is_file()
    with GitRepo.open(repo) as r:
        _, docs = read_tip(r)
    assert len(docs) == 41
    subprocess.run(["git", "fsck", "--strict", "--no-dangling"], cwd=repo, check=True, capture_output=True)


def test_maintenance_packs_loose_objects_and_leaves_their_folders(repo: Path) -> None:
    """The loose objects it packed are deleted, their fan-out folders kept: `git prune-packed`
    removed the folders it emptied, and a person's `git add` writing into one that moment failed
    ("unable to create temporary file")."""
    objects = repo / ".git" / "objects"
    with GitRepo.open(repo) as r:
        written = [r.write_blob(f"loose {i}\n".encode()) for i in range(40)]
        folders = {sha[:2] for sha in written}
        r.maintain(shared=True)
    assert all((objects / folder).is_dir() for folder in folders)
    assert not [path for folder in folders for path in (objects / folder).iterdir()]
    assert all(git(repo, "cat-file", "-t", sha) == "blob" for sha in written)  # in the pack now
    subprocess.run(["git", "fsck", "--strict", "--no-dangling"], cwd=repo, check=True, capture_output=True)


def test_the_background_keeps_the_writer_s_packs_below_git_s_auto_pack_limit(repo: Path) -> None:
    """Past `gc.autoPackLimit` (50) packs, a person's next `git commit` repacks the whole repository:
    the writer rolls its packs up every 16 commits, and maintenance merges the roll-ups once 32
    group commits were written, not minutes later."""
    from concurrent.futures import ThreadPoolExecutor

    from gitops_acp.reactor import background

    packs = lambda: len(list((repo / ".git" / "objects" / "pack").glob("*.pack")))  # noqa: E731
    most = 0

    async def scenario() -> None:
        nonlocal most
        writer = StatusWriter(repo)
        await writer.start()
        with GitRepo.open(repo) as opened, ThreadPoolExecutor(1) as thread:
            job = asyncio.create_task(
                background.maintain(lambda: opened, writer, thread, interval=3600.0, shared=True)
            )
            for i in range(45):  # a group commit every 0.1 s: 45 packs without maintenance
                await writer.commit([task_change(f"t{i}", "-", "Pending")], spec_commit="a" * 40)
                most = max(most, packs())
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.5)  # what maintenance merged is deleted a second or two later
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
        await writer.close()

    run(scenario())
    # The writer's last 16 at most, or 8 and the 16 its last roll-up took (PackLedger.retired), and
    # a roll-up or two.
    assert most <= 8 + 16 + 2, most
    assert packs() == 1 + 13  # the roll-ups merged by maintenance, the 13 the writer will roll up


# -- the fan-out and archiving (DESIGN §9) ----------------------------------------------------


def test_tree_editor_matches_what_git_writes(repo: Path) -> None:
    """Random edits through the editor give the tree git's own index would build from the same files."""
    import random

    rng = random.Random(7)
    files: dict[str, str] = {}
    with GitRepo.open(repo) as r:
        editor = TreeEditor(r.read_tree, None)
        for round_ in range(6):
            for _ in range(60):
                path = f"status/tasks/{rng.choice('ab')}/{rng.choice('cd')}/t{rng.randrange(40)}.yaml"
                if path in files and rng.random() < 0.4:
                    assert editor.remove(path)
                    del files[path]
                else:
                    sha = r.write_blob(f"{path} {round_}".encode())
                    editor.set(path, "100644", sha)
                    files[path] = sha
            assert not editor.remove("status/tasks/nowhere/x.yaml")
            commit = _root_commit(r, editor.write(r.write_tree) or EMPTY_TREE, "m")
            assert r.list_tree(commit) == files
            # the same tree, read back from the commit, edits the same way
            editor = TreeEditor(r.read_tree, r.tree_of(commit))
            assert {path: sha for path, _mode, sha in editor.files("")} == files
    assert git(repo, "fsck", "--no-dangling") == ""


def test_a_checkpoint_rewrites_only_the_trees_on_its_path(repo: Path) -> None:
    """A commit's new trees are those on the changed file's path, however many files the tip holds."""
    names = [f"t-{i:04d}" for i in range(600)]

    async def scenario() -> str | None:
        writer = StatusWriter(repo)
        await writer.start()
        await writer.commit([task_change(name, "-", "Pending") for name in names], spec_commit="s")
        sha = await writer.commit([task_change("t-0007", "Pending", "ReadyForLLM")], spec_commit="s")
        await writer.close()
        return sha

    sha = run(scenario())
    new_trees = git(repo, "diff-tree", "-r", "-t", "--no-commit-id", f"{sha}^", str(sha)).splitlines()
    # root, status/, tasks/, a/, b/, c/ and the file: nothing else was rewritten
    assert len(new_trees) == 6
    assert all(line.split("\t")[1] in task_path("t-0007") for line in new_trees)


def truncated_filters(repo: Path) -> tuple[int, int]:
    """(commits, commits whose changed-path Bloom filter git truncated: "maybe" for every path)
    in the repository's commit-graph (one file), read as gitformat-commit-graph describes it."""
    data = (repo / ".git" / "objects" / "info" / "commit-graph").read_bytes()
    table = [
        (data[8 + 12 * i : 12 + 12 * i], int.from_bytes(data[12 + 12 * i : 20 + 12 * i], "big"))
        for i in range(data[6] + 1)
    ]
    chunks = {name: (start, table[i + 1][1]) for i, (name, start) in enumerate(table[:-1])}
    fanout_end = chunks[b"OIDF"][1]
    commits = int.from_bytes(data[fanout_end - 4 : fanout_end], "big")
    index, filters = chunks[b"BIDX"][0], chunks[b"BDAT"][0] + 12
    truncated, previous = 0, 0
    for at in range(index, index + 4 * commits, 4):
        end = int.from_bytes(data[at : at + 4], "big")
        truncated += end - previous == 1 and data[filters + previous] == 0xFF
        previous = end
    return commits, truncated


def changed_by(repo: Path, sha: str) -> set[str]:
    """What a commit changes as git counts it for its Bloom filter: files and leading directories."""
    found: set[str] = set()
    for path in git(repo, "diff-tree", "-r", "--no-commit-id", "--name-only", sha).splitlines():
        while path:
            found.add(path)
            path = path.rpartition("/")[0]
    return found


def test_a_burst_of_checkpoints_goes_in_commits_that_keep_their_bloom_filter(repo: Path) -> None:
    """600 checkpoints at once went in one commit of ~1,700 changed paths, which any git writing
    the commit-graph (a person's `gc --auto` too) gives a truncated filter, and which every
    `history` then diffs. Now each commit stays within git's 512 (BLOOM_MAX_PATHS)."""

    async def scenario() -> None:
        writer = StatusWriter(repo)
        await writer.start()
        futures = [
            writer.submit([task_change(f"burst-{i:03d}", "-", "Pending")], spec_commit="s")
            for i in range(600)
        ]
        await asyncio.gather(*futures)
        await writer.close()

    run(scenario())
    commits = git(repo, "rev-list", "acp/status").split()
    assert len(commits) >= 4  # 600 files, their ~1,100 directories: at least four commits
    assert all(len(changed_by(repo, sha)) <= 512 for sha in commits)
    assert len(status_files(repo)) == 600
    git(repo, "commit-graph", "write", "--reachable", "--changed-paths")  # a plain git, as a person's
    assert truncated_filters(repo)[1] == 0


def test_archive_commits_keep_their_bloom_filter(repo: Path) -> None:
    """Retention packs finished groups into `archive:` commits of at most 512 changed paths (each
    file moves from status/ to archive/), so git keeps their changed-path filters too."""
    from gitops_acp.reactor.retention import Retention
    from gitops_acp.resources.lifecycle import Key

    async def scenario() -> None:
        writer = StatusWriter(repo)
        await writer.start()
        keys = [(Kind.Task, f"done-{i:03d}") for i in range(300)]
        await asyncio.gather(
            *(writer.submit([task_change(name, "-", "FinalAnswer")], spec_commit="s") for _, name in keys)
        )

        async def archive(batch: list[Key]) -> str | None:
            changes = [
                Change(kind, name, None, "FinalAnswer", "Archived", archive=True) for kind, name in batch
            ]
            return await writer.commit(changes, spec_commit="")

        observed = [(key, finished_task(key[1])) for key in keys]
        retention = Retention(
            retain=0,
            observed=lambda: observed,
            archive=archive,
            busy=lambda key: False,
            clock=lambda: 2e9,
            on_archived=lambda roots: None,
        )
        await retention.pass_once()
        await writer.close()

    run(scenario())
    archives = git(repo, "log", "--format=%H", "--grep=^archive: ", "acp/status").split()
    assert len(archives) >= 3
    assert all(len(changed_by(repo, sha)) <= 512 for sha in archives)
    assert status_files(repo) == sorted(
        status_path(Kind.Task, f"done-{i:03d}", root="archive") for i in range(300)
    )
    git(repo, "commit-graph", "write", "--reachable", "--changed-paths")
    assert truncated_filters(repo)[1] == 0


def finished_task(name: str) -> Any:
    from gitops_acp.resources.models import from_document

    return from_document(
        {
            "apiVersion": "acp.gitops.dev/v1alpha1",
            "kind": "Task",
            "metadata": {"name": name},
            "spec": {"agentRef": {"name": "a"}, "userMessage": "hi"},
            "status": {"phase": "FinalAnswer", "completionTime": "2026-01-01T00:00:00Z"},
        }
    )


def test_archiving_moves_files_in_one_commit_and_keeps_their_history(repo: Path) -> None:
    async def scenario() -> tuple[str | None, str | None]:
        writer = StatusWriter(repo)
        await writer.start()
        await writer.commit([task_change("old", "-", "Pending")], spec_commit="s")
        await writer.commit([task_change("old", "Pending", "FinalAnswer")], spec_commit="s")
        await writer.commit([task_change("live", "-", "Pending")], spec_commit="s")
        archive = [
            Change(Kind.Task, "old", None, "FinalAnswer", "Archived", archive=True),
            Change(Kind.ToolCall, "never-written", None, "-", "Archived", archive=True),
        ]
        sha = await writer.commit(archive, spec_commit="")
        again = await writer.commit(archive, spec_commit="")  # already archived: nothing to do
        docs = await StatusWriter(repo).start()
        assert set(docs) == {("Task", "live")}  # archived files are not read at start-up
        await writer.close()
        return sha, again

    sha, again = run(scenario())
    assert again is None
    assert message(repo, sha).splitlines()[:3] == [
        "archive: 1 resources",
        "",
        "Task/old: FinalAnswer -> Archived",
    ]
    assert status_files(repo) == sorted([task_path("live"), status_path(Kind.Task, "old", root="archive")])
    # the same blob moved, so the archived copy is the last checkpoint, byte for byte
    assert git(repo, "rev-parse", f"acp/status:{status_path(Kind.Task, 'old', root='archive')}") == git(
        repo, "rev-parse", f"{sha}^:{task_path('old')}"
    )
    with GitRepo.open(repo) as r:
        found = read_status_file(r, str(sha), Kind.Task, "old")
        assert found is not None
        assert found.archived
        assert b"FinalAnswer" in found.data
        assert read_status_file(r, str(sha), Kind.Task, "old", archived=False) is None
        phases = [(e.old_phase, e.new_phase) for e in history.events(r, kind="Task", name="old")]
    assert phases == [("FinalAnswer", "Archived"), ("Pending", "FinalAnswer"), ("-", "Pending")]


def test_a_flat_tip_is_fanned_out_at_start_with_nothing_lost(repo: Path) -> None:
    """A status branch written before the fan-out is moved into it by one commit, same blobs."""
    flat = {"status/tasks/a.yaml": task_doc("a", "FinalAnswer"), "status/llms/l.yaml": {"kind": "LLM"}}
    tip = None
    for path, doc in flat.items():
        tip = move_ref_behind_back(repo, path, yamlio.dump(doc)) if tip else _first_status(repo, path, doc)
    tip_before = git(repo, "log", "-1", "--format=%H", "acp/status", "--", "status/tasks/a.yaml")

    async def scenario() -> dict[Any, Any]:
        writer = StatusWriter(repo)
        docs = await writer.start()
        await writer.close()
        return docs

    docs = run(scenario())
    assert docs[("Task", "a")] == task_doc("a", "FinalAnswer")
    assert status_files(repo) == sorted([task_path("a"), "status/llms/l.yaml"])
    assert git(repo, "log", "-1", "--format=%s", "acp/status").startswith("layout: 1 status files fanned out")
    with GitRepo.open(repo) as r:
        events = history.events(r, kind="Task", name="a")
    # the layout commit, then the flat era's commit that wrote the file: one history
    assert [e.detail for e in events] == ["now FinalAnswer", "now FinalAnswer"]
    assert events[1].sha == tip_before


def _first_status(repo: Path, path: str, doc: dict[str, Any]) -> str:
    with GitRepo.open(repo) as r:
        blob = r.write_blob(yamlio.dump(doc))
        editor = TreeEditor(r.read_tree, None)
        editor.set(path, "100644", blob)
        root = editor.write(r.write_tree)
        assert root is not None
        sha = _root_commit(r, root, "old layout")
        r.update_ref(BRANCH, sha, None, message="test")
    return sha


def _root_commit(r: GitRepo, tree: str, message: str) -> str:
    """A parentless commit of `tree`, written as objects (no index, no work tree)."""
    identity = ("a", "a@x")
    return r.write_commit(
        tree=tree, parents=[], message=message + "\n", author=identity, committer=identity, timestamp=1.0
    )
