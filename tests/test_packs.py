"""The status writer's packs: rolled into one every 16 commits, merged by maintenance (store/git).

A pack per group commit is what keeps a checkpoint cheap; at 35 commits a second they piled up past
git's `gc.autoPackLimit` (50) faster than `git repack` merged them, and a person's next `git commit`
then repacked the whole repository. The writer now rolls its own packs up and deletes them, and
maintenance merges everything else (never what a writer is about to delete).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gitops_acp.store.git import GitRepo
from gitops_acp.store.git.maintenance import YOUNG_PACK_SECONDS, geometric_split
from gitops_acp.store.git.objects import RETIRE_SECONDS, ROLL_UP_AFTER, pack_ledger
from tests.conftest import git


def _git(repo: Path, *args: str, input: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, input=input, check=True, capture_output=True, text=True
    ).stdout.strip()


def _packs(repo: Path) -> set[str]:
    return {path.stem for path in (repo / ".git" / "objects" / "pack").glob("pack-*.idx")}


def _commit(r: GitRepo, parent: str, n: int, *, shared: bytes) -> tuple[str, list[str]]:
    """One group commit in a pack of its own: a blob of its own, one every commit shares, a tree."""
    with r.one_pack():
        own = r.write_blob(f"status of commit {n}\n".encode() * 50)
        same = r.write_blob(shared)  # the same object in every pack: rolled up once
        tree = r.write_tree({"own.yaml": ("100644", own), "same.yaml": ("100644", same)})
        sha = r.write_commit(tree=tree, parents=[parent], message=f"c{n}", author=("bot", "bot@example.com"))
    r.update_ref("refs/heads/acp/status", sha, parent if n else None, message="test")
    return sha, [own, same, tree, sha]


def test_the_writer_rolls_its_packs_into_one_and_every_object_stays_readable(repo: Path) -> None:
    before = _packs(repo)
    parent = git(repo, "rev-parse", "HEAD")
    written: list[str] = []
    with GitRepo.open(repo) as r:
        for n in range(ROLL_UP_AFTER - 1):
            parent, shas = _commit(r, parent, n, shared=b"the same in every pack\n")
            written += shas
            assert not r.roll_up_packs()  # fewer than 16: nothing to do
        assert r.read_blob(written[0]) == b"status of commit 0\n" * 50  # the persistent cat-file knows them
        parent, shas = _commit(r, parent, ROLL_UP_AFTER - 1, shared=b"the same in every pack\n")
        written += shas
        small = _packs(repo) - before
        assert len(small) == ROLL_UP_AFTER
        assert pack_ledger(repo / ".git" / "objects").owned >= small
        assert r.roll_up_packs()
        (rolled,) = _packs(repo) - before - small
        ledger = pack_ledger(repo / ".git" / "objects")
        assert not (ledger.owned & small)
        assert rolled in ledger.handed
        # Rolled up, not deleted yet: a reader that listed the folder before the roll-up's index
        # was renamed in still finds every object where it looks next (PackLedger.retired).
        assert small <= _packs(repo)
        assert set(ledger.retired) == small
        r.delete_retired_packs(older_than=60.0)  # not yet their time: kept
        with GitRepo.open(repo):  # another GitRepo of this process (the HTTP API's) closes: its own only
            pass
        assert small <= _packs(repo)
        time.sleep(RETIRE_SECONDS)
        more: list[str] = []
        parent, shas = _commit(r, parent, ROLL_UP_AFTER, shared=b"the same in every pack\n")
        more += shas
        assert not (small & _packs(repo))  # deleted by the next group commit once their time came
        assert not ledger.retired
        for n in range(ROLL_UP_AFTER + 1, 2 * ROLL_UP_AFTER):
            parent, shas = _commit(r, parent, n, shared=b"the same in every pack\n")
            more += shas
        assert r.roll_up_packs()
        assert len(_packs(repo) - before) == ROLL_UP_AFTER + 2  # two roll-ups and the packs of the second
        # The running cat-file had the deleted packs open or finds the roll-up: every object reads.
        assert r.read_blob(written[0]) == b"status of commit 0\n" * 50
        assert r.read_blob(written[-3]) == b"the same in every pack\n"
    assert len(_packs(repo) - before) == 2  # closed: the packs of its last roll-up went too
    assert not ledger.retired
    idx = repo / ".git" / "objects" / "pack" / f"{rolled}.idx"
    verified = git(repo, "verify-pack", "-v", str(idx))
    listed = [line.split()[0] for line in verified.splitlines() if len(line.split()) >= 5]
    assert sorted(listed) == sorted(set(written))  # each object once, the shared blob included
    subprocess.run(["git", "fsck", "--strict", "--no-dangling"], cwd=repo, check=True, capture_output=True)
    for sha in set(written + more):
        assert subprocess.run(["git", "cat-file", "-e", sha], cwd=repo).returncode == 0


def test_a_kill_between_the_roll_up_and_the_deletes_leaves_every_object_twice_and_maintenance_merges(
    repo: Path,
) -> None:
    script = f"""
import sys
from gitops_acp.store.git import GitRepo
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from tests.test_packs import _commit
r = GitRepo.open({str(repo)!r})
parent = r.resolve("HEAD")
for n in range(16):
    parent, shas = _commit(r, parent, n, shared=b"shared\\n")
    print(" ".join(shas), flush=True)
r.roll_up_packs()
print("not killed", flush=True)
"""
    before = _packs(repo)
    env = {**os.environ, "GITOPS_ACP_CRASH_AT": "packs-rolled-up"}
    killed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert killed.returncode == -9, killed.stderr
    written = set(killed.stdout.split())
    assert len(written) == 4 * 16 - 15  # the shared blob is one object
    after = _packs(repo) - before
    assert len(after) == ROLL_UP_AFTER + 1  # the 16 and the roll-up: nothing deleted yet
    subprocess.run(["git", "fsck", "--strict", "--no-dangling"], cwd=repo, check=True, capture_output=True)
    for path in (repo / ".git" / "objects" / "pack").glob("pack-*"):  # another process's: old enough
        os.utime(path, (time.time() - 2 * YOUNG_PACK_SECONDS,) * 2)
    with GitRepo.open(repo) as r:
        r.maintain(shared=True)
        assert len(_packs(repo)) == ROLL_UP_AFTER + 2  # merged; what it merged goes a while later
        r.delete_retired_packs(older_than=0.0)
    assert len(_packs(repo)) == 1
    subprocess.run(["git", "fsck", "--strict", "--no-dangling"], cwd=repo, check=True, capture_output=True)
    for sha in written:
        assert subprocess.run(["git", "cat-file", "-e", sha], cwd=repo).returncode == 0, sha


def test_maintenance_leaves_a_writer_s_packs_and_another_process_s_young_packs_alone(repo: Path) -> None:
    parent = git(repo, "rev-parse", "HEAD")
    folder = repo / ".git" / "objects" / "pack"
    with GitRepo.open(repo) as ours:
        for n in range(3):  # this process's writer: its own until it rolls them up
            parent, _ = _commit(ours, parent, n, shared=b"ours\n")
        owned = _packs(repo)
        # Three packs another process wrote: two old enough to take, one its writer may still roll up.
        others: list[Path] = []
        for n in range(3):
            blob = _git(repo, "hash-object", "-w", "--stdin", input=f"theirs {n}\n" * 40)
            name = _git(repo, "pack-objects", "-q", str(folder / "pack"), input=blob + "\n")
            others.append(folder / f"pack-{name}.pack")
        for path in others[:2]:
            os.utime(path, (time.time() - 2 * YOUNG_PACK_SECONDS,) * 2)
        taken = {path.stem for path in others[:2]}
        with GitRepo.open(repo) as maintenance:
            maintenance.maintain(shared=True)
            assert set(pack_ledger(folder.parent).retired) == taken  # merged; deleted a while later
            maintenance.delete_retired_packs(older_than=60.0)  # the background's look: too soon
            assert taken <= _packs(repo)
            maintenance.delete_retired_packs(older_than=0.0)
        left = _packs(repo)
        assert owned <= left  # not one of the writer's was read or deleted
        assert others[2].stem in left  # young and not ours: left for its writer
        assert not (taken & left)  # merged (with the loose objects)
        assert len(left) == len(owned) + 2
    for path in folder.glob("pack-*"):  # closed: the writer's packs are maintenance's now
        os.utime(path, (time.time() - 2 * YOUNG_PACK_SECONDS,) * 2)
    with GitRepo.open(repo) as maintenance:
        maintenance.maintain(shared=True)
        maintenance.delete_retired_packs(older_than=0.0)
    assert len(_packs(repo)) == 1
    subprocess.run(["git", "fsck", "--strict", "--no-dangling"], cwd=repo, check=True, capture_output=True)


@pytest.mark.parametrize(
    ("sizes", "merged"),
    [
        ([], 0),
        ([10], 0),
        ([10, 10], 2),  # two alike: merged
        ([10, 25], 0),  # already a progression
        ([10, 25, 60, 61], 4),  # the top pair breaks it: everything below the top goes, and the top
        ([1, 1, 1, 100], 3),  # the small ones; the big one stays
        ([5, 5, 12, 100], 3),
        ([40, 41, 100, 1000], 3),  # 40 + 41 is not under half of 100: 100 goes too
    ],
)
def test_maintenance_merges_packs_as_git_repack_geometric(sizes: list[int], merged: int) -> None:
    assert geometric_split(sizes) == merged


def test_a_reader_never_misses_an_object_while_the_writer_rolls_its_packs_up(repo: Path) -> None:
    """git's own reader (`cat-file --batch`, as every reader of the reconciler and the CLI uses) keeps
    finding every object while packs it knows are deleted under it, roll-up after roll-up."""
    parent = git(repo, "rev-parse", "HEAD")
    written: list[str] = []
    done = threading.Event()
    problems: list[str] = []
    rounds: list[int] = []

    def read() -> None:
        command = ["git", "cat-file", "--batch-check"]
        with subprocess.Popen(
            command, cwd=repo, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ) as reader:
            assert reader.stdin is not None
            assert reader.stdout is not None
            seen = 0
            while not done.is_set() or seen < len(written):
                batch = written[:]
                for sha in batch:
                    reader.stdin.write(sha + "\n")
                    reader.stdin.flush()
                    answer = reader.stdout.readline()
                    if "missing" in answer or not answer:
                        problems.append(f"{sha}: {answer!r}")
                seen = len(batch)
                rounds.append(seen)

    with GitRepo.open(repo) as r:
        parent, shas = _commit(r, parent, 0, shared=b"shared\n")
        written += shas
        thread = threading.Thread(target=read)
        thread.start()
        try:
            for n in range(1, 5 * ROLL_UP_AFTER):
                parent, shas = _commit(r, parent, n, shared=b"shared\n")
                written += shas
                r.roll_up_packs()
        finally:
            done.set()
            thread.join(timeout=60)
    assert not problems, problems[:5]
    assert len(rounds) > 10  # it read while the packs changed, not once at the end
    assert len(_packs(repo)) < ROLL_UP_AFTER + 5
