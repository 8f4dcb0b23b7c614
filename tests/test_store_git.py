"""The public face of `gitops_acp.store.git`: callers import from the package, never its modules."""

from __future__ import annotations

import hashlib
import importlib
import os
import pkgutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

import gitops_acp.store.git as package
from gitops_acp.errors import StoreError
from tests.conftest import commit_files, git


def test_the_package_all_is_exactly_its_public_names() -> None:
    # Names are imported from their modules on first use (`__getattr__`): dir() lists them all.
    public = {
        name
        for name in dir(package)
        if not name.startswith("_")
        and not isinstance(getattr(package, name), ModuleType)
        and name != "TYPE_CHECKING"  # the constant type checkers read (gitops_acp/tuples.py)
    }
    assert sorted(package.__all__) == sorted(public)
    assert set(package.__all__) == {
        "EMPTY_TREE",
        "TREE_MODE",
        "ZERO_OID",
        "CommitInfo",
        "GitRepo",
        "PushUpdate",
        "ReadOnlyRepo",
        "Reader",
        "RefConflictError",
        "TreeBuilder",
        "TreeEditor",
        "blob_sha",
        "init_bare",
        "is_url",
        "redact_url",
    }


def test_every_module_all_names_what_it_defines() -> None:
    modules = [info.name for info in pkgutil.iter_modules(package.__path__)]
    assert modules, "no modules found under store/git/"
    for name in modules:
        module = importlib.import_module(f"{package.__name__}.{name}")
        missing = [item for item in module.__all__ if not hasattr(module, item)]
        assert not missing, f"{module.__name__}.__all__ names {missing}, which it does not define"
        for item in module.__all__:
            value = getattr(module, item)
            home = getattr(value, "__module__", module.__name__)
            assert home == module.__name__, f"{module.__name__}.__all__ re-exports {item} from {home}"


# -- the Reader protocol, the same reads through GitRepo and through ReadOnlyRepo ---------------

OPENERS = {"GitRepo": package.GitRepo.open, "ReadOnlyRepo": package.ReadOnlyRepo.open}


def _where(repo: Path, tmp_path: Path, shape: str) -> Path:
    """`repo` opened as a work tree, through its `.git`, as a bare clone or a linked worktree."""
    if shape == "work tree":
        return repo
    if shape == ".git":
        return repo / ".git"
    if shape == "bare":
        git(tmp_path, "clone", "-q", "--bare", str(repo), "bare.git")
        return tmp_path / "bare.git"
    git(repo, "worktree", "add", "-q", str(tmp_path / "linked"), "-b", "elsewhere")
    return tmp_path / "linked"


@pytest.mark.parametrize("shape", ["work tree", ".git", "bare", "linked worktree"])
@pytest.mark.parametrize("backend", sorted(OPENERS))
def test_both_readers_read_the_same(repo: Path, tmp_path: Path, backend: str, shape: str) -> None:
    first = commit_files(repo, {"a/one.yaml": "one: 1\n", "two words.txt": "2"}, "first")
    second = commit_files(repo, {"a/one.yaml": "one: 2\n"}, "second\n\nTask/x: A -> B")
    git(repo, "branch", "acp/status-0-of-2", first)
    reader: package.Reader
    with OPENERS[backend](_where(repo, tmp_path, shape)) as reader:
        assert reader.resolve("refs/heads/main") == second
        assert reader.resolve("refs/heads/nowhere") is None
        assert reader.read_file(second, "a/one.yaml") == b"one: 2\n"
        assert reader.read_file(first, "two words.txt") == b"2"
        assert reader.read_file(second, "a/missing.yaml") is None
        assert reader.read_file("0" * 40, "a/one.yaml") is None
        blob = git(repo, "rev-parse", f"{first}:a/one.yaml")
        assert reader.read_blob(blob) == b"one: 1\n"
        assert reader.commit_time(second) == float(git(repo, "log", "-1", "--format=%ct", second))
        assert reader.refs("refs/heads/acp/status-*-of-*") == {"refs/heads/acp/status-0-of-2": first}
        log = reader.log("refs/heads/main", path=["a/one.yaml", "nowhere"], n=5)
        assert [(c.sha, c.subject, c.body.strip()) for c in log] == [
            (second, "second", "Task/x: A -> B"),
            (first, "first", ""),
        ]
        with pytest.raises(StoreError):
            reader.read_file(second, "a")  # a directory, not a file
        # What a list reads (`get KIND` goes through a ReadOnlyRepo since 2026-12-06)
        files = {path: git(repo, "rev-parse", f"{second}:{path}") for path in ("a/one.yaml", "two words.txt")}
        assert reader.list_tree(second) == files
        assert reader.list_tree(second, "a") == {"a/one.yaml": files["a/one.yaml"]}
        level = reader.read_tree(second)
        assert level is not None
        assert (level["a"][0], level["two words.txt"][0]) == ("40000", "100644")
        assert reader.read_tree(second, "nowhere") is None
        assert reader.read_blobs([blob, files["a/one.yaml"]]) == {
            blob: b"one: 1\n",
            files["a/one.yaml"]: b"one: 2\n",
        }
        assert reader.files_present(second, ["a/one.yaml", "a", "nowhere"]) == {"a/one.yaml"}
        assert reader.changed_files(first, second) == {"a/one.yaml": files["a/one.yaml"]}


@pytest.mark.parametrize("backend", sorted(OPENERS))
def test_both_readers_refuse_what_is_not_a_repository(tmp_path: Path, backend: str) -> None:
    (tmp_path / "plain").mkdir()
    for path in (tmp_path / "plain", tmp_path / "missing"):
        with pytest.raises(StoreError, match="not a git repository"):
            OPENERS[backend](path)


def test_refs_from_the_ref_files_are_what_for_each_ref_lists(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    second = commit_files(repo, {"x": "x"}, "second")
    for name in ("acp/status", "acp/status-0-of-2", "acp/status-1-of-2", "acp/status-x/deeper", "acp/other"):
        git(repo, "branch", name, first)
    git(repo, "pack-refs", "--all")  # packed at `first` ...
    git(repo, "update-ref", "refs/heads/acp/status-1-of-2", second)  # ... one loose again, newer
    git(repo, "branch", "acp/status-2-of-3", second)  # and one only loose
    patterns = [
        ("refs/heads/acp/status", "refs/heads/acp/status-*-of-*"),
        ("refs/heads/acp/",),
        ("refs/heads/acp/status-?-of-2",),
        ("refs/heads/nothing", "refs/tags/"),
    ]
    with package.GitRepo.open(repo) as full, package.ReadOnlyRepo.open(repo) as light:
        for prefixes in patterns:
            assert light.refs(*prefixes) == full.refs(*prefixes), prefixes
        assert light.refs("refs/heads/acp/status-*-of-*") == {
            "refs/heads/acp/status-0-of-2": first,
            "refs/heads/acp/status-1-of-2": second,
            "refs/heads/acp/status-2-of-3": second,
        }
        git(repo, "symbolic-ref", "refs/heads/acp/status-3-of-4", "refs/heads/main")  # git resolves it
        assert light.refs("refs/heads/acp/") == full.refs("refs/heads/acp/")


def test_a_loose_object_lands_after_prune_packed_removed_its_folder(repo: Path) -> None:
    """`git repack -d` (maintenance) runs prune-packed, which removes the fan-out folders it empties,
    ones the writer already made included: the next object for that folder is still written."""
    from gitops_acp.store.git.objects import ObjectWriter

    def blob_sha(data: bytes) -> str:
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    writer = ObjectWriter(repo / ".git")
    # A blob whose fan-out folder holds nothing else (the fixture's commit, made now, has a sha
    # of its own each run: one in the same folder once made this test fail to remove it).
    taken = {path.name for path in (repo / ".git" / "objects").iterdir()}
    alone = next(d for i in range(100_000) if blob_sha(d := f"first {i}\n".encode())[:2] not in taken)
    first = writer.store(b"blob", alone)
    folder = repo / ".git" / "objects" / first[:2]
    (folder / first[2:]).unlink()  # packed elsewhere, then pruned with its folder
    folder.rmdir()
    data = next(d for i in range(100_000) if blob_sha(d := f"again {i}\n".encode())[:2] == first[:2])
    second = writer.store(b"blob", data)
    assert second[:2] == first[:2]
    assert git(repo, "cat-file", "-p", second) == data.decode().strip()


@pytest.mark.parametrize("size", [0, 1, 2047, 2048, 65535, 65536, 200_001])
def test_a_stored_zlib_stream_inflates_to_its_data_and_hashes_agree(size: int) -> None:
    import zlib

    from gitops_acp.store.git.objects import _crc32, _sha1, _stored_zlib, blob_sha

    data = bytes((i * 7919) % 251 for i in range(size))
    assert zlib.decompress(_stored_zlib(data)) == data
    assert _sha1(data) == hashlib.sha1(data).digest()
    assert _crc32(data) == zlib.crc32(data)
    assert blob_sha(data) == hashlib.sha1(b"blob %d\0" % size + data).hexdigest()


def test_a_pack_is_written_without_compressing_and_maintenance_compresses_it(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's thread packs without zlib's compressor (it lets go of the GIL on every call,
    and taking it back waited on the reconciler's thread); `repack` stores the objects as
    compressed deltas. Status files of one shape, as the status branch holds them."""
    import zlib

    from gitops_acp.store.git import GitRepo

    def no_compressing(*args: object, **kwargs: object) -> object:
        raise AssertionError("the pack path called zlib's compressor")

    opened = GitRepo.open(repo)
    try:
        parents = [git(repo, "rev-parse", "HEAD")]
        with monkeypatch.context() as patched:
            patched.setattr(zlib, "compress", no_compressing)
            patched.setattr(zlib, "compressobj", no_compressing)
            for commit in range(32):  # the writer rolls every 16 into one: two roll-ups to merge
                with opened.one_pack():
                    entries = {}
                    for i in range(40):
                        name = f"t{commit}-{i}"
                        text = f"kind: Task\nmetadata:\n  name: {name}\nstatus:\n  phase: FinalAnswer\n"
                        text += "".join(f"  - content: answer {n} of {name}\n" for n in range(60))
                        entries[f"{name}.yaml"] = ("100644", opened.write_blob(text.encode()))
                    tree = opened.write_tree(entries)
                    sha = opened.write_commit(
                        tree=tree,
                        parents=parents,
                        message=f"checkpoint {commit}",
                        author=("bot", "bot@example.com"),
                        committer=("bot", "bot@example.com"),
                        timestamp=1_700_000_000.0 + commit,
                    )
                parents = [sha]
                opened.roll_up_packs()  # as the status writer does after each commit
        opened.update_ref("refs/heads/acp/status", parents[0], None, message="test")
        assert git(repo, "show", "acp/status:t31-39.yaml").startswith("kind: Task")

        def packed_kb() -> int:
            counts = dict(line.split(": ") for line in git(repo, "count-objects", "-v").splitlines())
            return int(counts["size-pack"])

        before = packed_kb()
        opened.maintain(shared=True)
        opened.delete_retired_packs(older_than=0.0)  # what the roll-ups and the merge replaced
    finally:
        opened.close()
    after = packed_kb()
    assert after < before / 4, (before, after)
    git(repo, "fsck", "--no-dangling")


@pytest.mark.parametrize("shared", [True, False])
def test_maintenance_gives_commits_of_many_paths_a_bloom_filter(repo: Path, shared: bool) -> None:
    """A group commit changes hundreds of paths; git gives such a commit no changed-path filter
    unless told (maintenance.BLOOM_ENV), and every path-limited log (`history`) then diffs it."""
    for i in range(600):  # one commit of 600 files in their own directories: >512 changed paths
        (repo / "wide" / f"d{i:03d}").mkdir(parents=True)
        (repo / "wide" / f"d{i:03d}" / "file.yaml").write_text(f"n: {i}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "wide")
    for i in range(3):
        commit_files(repo, {"narrow/one.yaml": f"n: {i}\n"}, f"narrow {i}")
    from gitops_acp.store.git import GitRepo

    with GitRepo.open(repo) as opened:
        opened.maintain(shared=shared)
    log = subprocess.run(
        ["git", "log", "--format=%H", "--", "narrow/one.yaml"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GIT_TRACE2_PERF": "1"},
    )
    (stats,) = [line for line in log.stderr.splitlines() if '"false_positive"' in line]
    assert len(log.stdout.split()) == 3
    # The wide commit (and the first, the fixture's) are ruled out by their filters, not diffed.
    assert '"filter_not_present":0' in stats, stats
    assert '"false_positive":0' in stats, stats
