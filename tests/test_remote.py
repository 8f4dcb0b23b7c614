"""The mirror of a remote (store/mirror.py) and its sync (reactor/remote.py), against real bare remotes.

The remote here is a bare repository on disk reached by path (git's local transport: the same
fetch and push protocol as over the network, minus the network); the end-to-end tests in
tests/e2e/test_remote.py use `git daemon` on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import pytest

from gitops_acp.errors import RemoteError, StoreError
from gitops_acp.reactor.manager import Manager, ServeOptions
from gitops_acp.reactor.remote import RemoteOptions, RemoteSync
from gitops_acp.resources.meta import Kind, status_path
from gitops_acp.secrets import SecretResolver
from gitops_acp.store.git import GitRepo, redact_url
from gitops_acp.store.mirror import Mirror, cache_dir, prepare_mirror, refresh_view
from gitops_acp.store.status import StatusWriter
from tests.conftest import commit_files, git
from tests.fakes import FakeLLM
from tests.test_store import run, task_change

IDENTITY = ("gitops-acp", "gitops-acp@localhost")
STATUS = "refs/heads/acp/status"


@pytest.fixture
def origin(repo: Path, tmp_path: Path) -> Path:
    """A bare remote holding `main` (one commit), and a human's clone of it at tmp_path/human."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    git(tmp_path, "clone", "-q", str(bare), "human")
    return bare


def open_mirror(tmp_path: Path, origin: Path | str) -> tuple[GitRepo, Mirror]:
    path = tmp_path / "cache" / "mirror.git"
    prepare_mirror(path, str(origin))
    repo = GitRepo.open(path)
    return repo, Mirror(repo, main="main", status_branch="acp/status", identity=IDENTITY)


def status_commit(repo: GitRepo, parent: str | None, text: str) -> str:
    """A commit on the mirror's status branch (as the writer makes them), moved by CAS."""
    tree = repo.write_tree({"note.txt": ("100644", repo.write_blob(text.encode()))})
    sha = repo.write_commit(tree=tree, parents=[parent] if parent else [], message=text, author=IDENTITY)
    repo.update_ref(STATUS, sha, parent, message=text)
    return sha


def remote_ref(origin: Path, ref: str) -> str | None:
    out = subprocess.run(
        ["git", "rev-parse", "-q", "--verify", ref], cwd=origin, capture_output=True, text=True
    )
    return out.stdout.strip() or None


def test_fetch_follows_main_and_never_clobbers_an_unpushed_status_branch(
    tmp_path: Path, origin: Path
) -> None:
    repo, mirror = open_mirror(tmp_path, origin)
    with repo:
        mirror.fetch()
        assert repo.resolve("refs/heads/main") == remote_ref(origin, "refs/heads/main")
        first = status_commit(repo, None, "one")
        mirror.push()
        ours = status_commit(repo, first, "two")  # not pushed
        human = tmp_path / "human"
        new_main = commit_files(human, {"tasks/t.yaml": "x: 1\n"})
        git(human, "push", "-q", "origin", "main")
        result = mirror.fetch()
        assert result.main_moved
        assert repo.resolve("refs/heads/main") == new_main
        assert repo.resolve(STATUS) == ours  # ahead of the remote, untouched
        assert mirror.unpushed() == 1
        assert mirror.push().pushed == {STATUS: ours}
        assert remote_ref(origin, STATUS) == ours
        assert mirror.unpushed() == 0


def test_a_mirror_behind_the_remote_catches_up_instead_of_merging(tmp_path: Path, origin: Path) -> None:
    repo, mirror = open_mirror(tmp_path, origin)
    with repo:
        mirror.fetch()
        old = status_commit(repo, None, "old")
        newer = status_commit(repo, old, "newer")
        mirror.push()
        repo.update_ref(STATUS, old, newer, message="restored from an old copy of the mirror")
        mirror.fetch()  # while serving: ours stays, to be merged
        assert repo.resolve(STATUS) == old
        mirror.fetch(catch_up=True)  # at start
        assert repo.resolve(STATUS) == newer
        assert mirror.push().merged is None


def test_a_rejected_push_is_merged_with_theirs_and_pushed_keeping_both_histories(
    tmp_path: Path, origin: Path
) -> None:
    repo, mirror = open_mirror(tmp_path, origin)
    with repo:
        mirror.fetch()
        base = status_commit(repo, None, "base")
        mirror.push()
        # Someone else pushes to acp/status; we commit on our side without having fetched.
        human = tmp_path / "human"
        git(human, "fetch", "-q", "origin")
        git(human, "checkout", "-q", "-b", "theirs", "origin/acp/status")
        theirs = commit_files(human, {"intruder.txt": "hello\n"}, "theirs")
        git(human, "push", "-q", "origin", "theirs:acp/status")
        ours = status_commit(repo, base, "ours")

        refused = mirror.push()  # the lease (the last value we saw: base) protects their commit
        assert STATUS in refused.rejected
        assert remote_ref(origin, STATUS) == theirs
        mirror.fetch()
        merged = mirror.push()
        assert merged.merged is not None
        assert merged.pushed == {STATUS: merged.merged}
        tip = remote_ref(origin, STATUS)
        assert tip == merged.merged == repo.resolve(STATUS)
        assert git(origin, "log", "-1", "--format=%P", tip).split() == [ours, theirs]
        assert git(origin, "rev-parse", f"{tip}^{{tree}}") == git(origin, "rev-parse", f"{ours}^{{tree}}")


def test_branches_deleted_on_the_remote_go_and_never_pushed_ones_are_pushed(
    tmp_path: Path, origin: Path
) -> None:
    repo, mirror = open_mirror(tmp_path, origin)
    with repo:
        mirror.fetch()
        main = repo.resolve("refs/heads/main")
        assert main is not None
        repo.update_ref("refs/heads/acp/approvals/a", main, None, message="propose")
        repo.update_ref("refs/heads/acp/questions/q", main, None, message="ask")  # any reconciler branch
        assert set(mirror.push().pushed) == {"refs/heads/acp/approvals/a", "refs/heads/acp/questions/q"}
        repo.update_ref("refs/heads/acp/approvals/b", main, None, message="propose")  # not pushed yet
        git(tmp_path / "human", "push", "-q", "origin", "--delete", "acp/approvals/a")
        result = mirror.fetch()
        assert result.deleted == ("refs/heads/acp/approvals/a",)
        assert repo.resolve("refs/heads/acp/approvals/a") is None
        assert repo.resolve("refs/heads/acp/approvals/b") == main  # never pushed: not mistaken for deleted
        assert mirror.push().pushed == {"refs/heads/acp/approvals/b": main}
        assert remote_ref(origin, "refs/heads/acp/approvals/a") is None  # stays deleted


def test_a_proposal_edited_on_the_remote_is_followed_not_overwritten(tmp_path: Path, origin: Path) -> None:
    repo, mirror = open_mirror(tmp_path, origin)
    with repo:
        mirror.fetch()
        main = repo.resolve("refs/heads/main")
        assert main is not None
        repo.update_ref("refs/heads/acp/approvals/a", main, None, message="propose")
        mirror.push()
        human = tmp_path / "human"
        git(human, "fetch", "-q", "origin")
        git(human, "checkout", "-q", "-b", "edit", "origin/acp/approvals/a")
        edited = commit_files(human, {"approvals/a.yaml": "decision: rejected\n"}, "reject")
        git(human, "push", "-q", "origin", "edit:acp/approvals/a")
        mirror.fetch()
        assert repo.resolve("refs/heads/acp/approvals/a") == edited
        assert mirror.push().pushed == {}
        assert remote_ref(origin, "refs/heads/acp/approvals/a") == edited


def test_errors_never_show_the_credentials_of_a_url(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://robot:s3cr3t-token@127.0.0.1:{port}/acp.git"
    assert "s3cr3t" not in redact_url(f"fatal: unable to access '{url}/'")
    repo, mirror = open_mirror(tmp_path, url)
    with repo, pytest.raises(RemoteError) as caught:
        mirror.fetch()
    assert "s3cr3t" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
    assert "s3cr3t" not in str(cache_dir(url))


def test_a_checkpoint_returns_only_once_the_remote_has_its_commit(tmp_path: Path, origin: Path) -> None:
    mirror = tmp_path / "cache" / "mirror.git"
    options = RemoteOptions(url=str(origin), mirror=mirror, fetch_interval=3600)

    def on_remote(sha: str) -> bool:
        check = subprocess.run(["git", "merge-base", "--is-ancestor", sha, STATUS], cwd=origin)
        return check.returncode == 0

    async def scenario() -> tuple[int, int]:
        sync = RemoteSync(
            options, main="main", status_branch="acp/status", identity=IDENTITY, on_change=lambda: None
        )
        await sync.start()
        writer = StatusWriter(mirror)
        writer.confirm = sync.pushed
        await writer.start()

        async def resource(name: str) -> None:
            for step in range(4):
                sha = await writer.commit([task_change(name, str(step), str(step + 1))], spec_commit="s")
                assert sha is not None
                # Returned: the remote has this commit (is an ancestor of its status branch).
                assert on_remote(sha), f"{name} step {step}: {sha[:12]} not on the remote"

        await asyncio.gather(*(resource(f"t{i}") for i in range(20)))
        await writer.close()
        await sync.close()
        return writer.stats.commits, sync.stats.pushes

    commits, pushes = run(scenario())
    assert 4 <= pushes <= commits  # a push per group, never one per checkpoint
    assert git(origin, "rev-list", "--count", STATUS) == str(commits)


def test_poke_fetches_at_once_and_a_moved_main_is_read(tmp_path: Path, origin: Path) -> None:
    mirror = tmp_path / "cache" / "mirror.git"
    options = ServeOptions(
        repo=mirror,
        remote=RemoteOptions(url=str(origin), mirror=mirror, fetch_interval=3600),
        poll_interval=3600,
    )
    human = tmp_path / "human"

    async def scenario() -> None:
        manager = Manager(options, llm=FakeLLM(), secrets=SecretResolver(None))
        serving = asyncio.create_task(manager.run())
        for _ in range(200):
            if manager.spec_commit:
                break
            await asyncio.sleep(0.02)
        new = commit_files(human, {"README.md": "moved\n"})
        git(human, "push", "-q", "origin", "main")
        await asyncio.sleep(0.3)
        assert manager.spec_commit != new  # an hour-long interval: nothing fetched by itself
        manager.poke()
        for _ in range(200):
            if manager.spec_commit == new:
                break
            await asyncio.sleep(0.02)
        assert manager.spec_commit == new
        manager.stop()
        assert await serving == 0

    run(scenario())


def test_a_rejected_push_while_serving_is_recovered_and_the_checkpoint_returns(
    tmp_path: Path, origin: Path
) -> None:
    mirror = tmp_path / "cache" / "mirror.git"
    options = RemoteOptions(url=str(origin), mirror=mirror, fetch_interval=3600)  # no fetch by itself
    human = tmp_path / "human"

    async def scenario() -> tuple[str, str]:
        sync = RemoteSync(
            options, main="main", status_branch="acp/status", identity=IDENTITY, on_change=lambda: None
        )
        await sync.start()
        writer = StatusWriter(mirror)
        writer.confirm = sync.pushed
        await writer.start()
        first = await writer.commit([task_change("t", "-", "Pending")], spec_commit="s")
        assert first is not None
        git(human, "fetch", "-q", "origin")
        git(human, "checkout", "-q", "-b", "theirs", "origin/acp/status")
        theirs = commit_files(human, {"intruder.txt": "hello\n"}, "theirs")
        git(human, "push", "-q", "origin", "theirs:acp/status")
        ours = await writer.commit([task_change("t", "Pending", "ReadyForLLM")], spec_commit="s")
        assert ours is not None
        # Another checkpoint after the merge: the writer re-applies on the merge commit.
        last = await writer.commit([task_change("t", "ReadyForLLM", "FinalAnswer")], spec_commit="s")
        assert last is not None
        await writer.close()
        await sync.close()
        assert sync.stats.rejected >= 1
        assert sync.stats.merges == 1
        return theirs, last

    theirs, last = run(scenario())
    tip = git(origin, "rev-parse", STATUS)
    assert tip == last
    for sha in (theirs, last):
        git(origin, "merge-base", "--is-ancestor", sha, tip)
    assert git(origin, "show", f"{STATUS}:{status_path(Kind.Task, 't')}").count("FinalAnswer") >= 1


def test_a_remote_that_keeps_refusing_is_retried_with_backoff_and_reported_once(
    tmp_path: Path, origin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hook = origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n")
    hook.chmod(0o755)
    mirror = tmp_path / "cache" / "mirror.git"
    options = RemoteOptions(url=str(origin), mirror=mirror, fetch_interval=1.0)

    async def scenario() -> int:
        sync = RemoteSync(
            options, main="main", status_branch="acp/status", identity=IDENTITY, on_change=lambda: None
        )
        await sync.start()
        writer = StatusWriter(mirror)
        writer.confirm = sync.pushed
        await writer.start()
        pending = asyncio.ensure_future(writer.commit([task_change("t", "-", "Pending")], spec_commit="s"))
        await asyncio.sleep(2.0)
        assert not pending.done()  # never reported done while the remote refuses it
        await writer.close()
        await sync.close(timeout=2)
        with pytest.raises(StoreError):
            await pending
        return sync.stats.rejected

    rejected = run(scenario())
    assert 4 <= rejected <= 12  # a few at once, then backoff (0.25 s doubling): no tight loop
    refusals = [r for r in caplog.records if "checkpoints wait" in r.getMessage()]
    assert len(refusals) == 1  # one line for the outage, not one per retry
    assert "keeps refusing the push of refs/heads/acp/status" in refusals[0].getMessage()
    assert "pre-receive hook declined" in refusals[0].getMessage()


def test_start_pushes_what_was_left_unpushed_first_merging_what_others_pushed(
    tmp_path: Path, origin: Path
) -> None:
    repo, mirror = open_mirror(tmp_path, origin)
    with repo:
        mirror.fetch()
        base = status_commit(repo, None, "base")
        mirror.push()
        left = status_commit(repo, base, "left unpushed by a killed serve")
    human = tmp_path / "human"
    git(human, "fetch", "-q", "origin")
    git(human, "checkout", "-q", "-b", "theirs", "origin/acp/status")
    theirs = commit_files(human, {"intruder.txt": "hello\n"}, "theirs")
    git(human, "push", "-q", "origin", "theirs:acp/status")
    options = RemoteOptions(url=str(origin), mirror=tmp_path / "cache" / "mirror.git", fetch_interval=3600)

    async def scenario() -> None:
        sync = RemoteSync(
            options, main="main", status_branch="acp/status", identity=IDENTITY, on_change=lambda: None
        )
        await sync.start()  # returns once the remote has everything
        tip = remote_ref(origin, STATUS)
        assert tip is not None
        assert git(origin, "log", "-1", "--format=%P", tip).split() == [left, theirs]
        await sync.close()

    run(scenario())


def test_a_shard_follows_the_other_shards_status_branch_and_never_pushes_it(
    tmp_path: Path, origin: Path
) -> None:
    path = tmp_path / "cache" / "mirror.git"
    prepare_mirror(path, str(origin))
    other = "refs/heads/acp/status-1-of-2"
    with GitRepo.open(path) as repo:
        mirror = Mirror(repo, main="main", status_branch="acp/status-0-of-2", identity=IDENTITY)
        mirror.fetch()
        theirs = remote_ref(origin, "refs/heads/main")
        assert theirs is not None
        git(origin, "update-ref", other, theirs)  # shard 1 pushed its branch (any commit will do)
        tree = repo.write_tree({"note.txt": ("100644", repo.write_blob(b"ours"))})
        mirror.fetch()
        assert repo.resolve(other) == theirs  # followed: the start-up layout check reads it
        # Even a copy the remote no longer agrees with (a moved or stale ref) is never pushed.
        stale = repo.write_commit(tree=tree, parents=[theirs], message="stale", author=IDENTITY)
        repo.update_ref(other, stale, theirs, message="a stale copy")
        repo.update_ref("refs/remotes/origin/acp/status-1-of-2", stale, theirs, message="forgotten")
        git(origin, "update-ref", "-d", other)
        repo.delete_ref("refs/remotes/origin/acp/status-1-of-2", stale)
        ours = repo.write_commit(tree=tree, parents=[], message="ours", author=IDENTITY)
        repo.update_ref("refs/heads/acp/status-0-of-2", ours, None, message="ours")
        assert mirror.push().pushed == {"refs/heads/acp/status-0-of-2": ours}
        assert remote_ref(origin, other) is None


def test_a_readers_view_recovers_from_a_reader_killed_mid_fetch(
    origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`get --repo URL` fetches into a view in the cache dir; a killed reader's locks don't break the next."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = f"file://{origin}"
    view = refresh_view(url)
    left = [view / "refs" / "heads" / "main.lock", view / "shallow.lock", view / "packed-refs.lock"]
    for lock in left:
        lock.write_text("left by a kill\n")
    human = tmp_path / "human"
    commit_files(human, {"more.yaml": "a: 1\n"}, "more")
    git(human, "push", "-q", "origin", "main")
    assert refresh_view(url) == view  # would fail on main.lock without recovery
    assert not any(lock.exists() for lock in left)
    assert git(view, "rev-parse", "main") == git(human, "rev-parse", "HEAD")
