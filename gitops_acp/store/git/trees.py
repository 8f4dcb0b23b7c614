"""Git trees: the tree object codec, `TreeBuilder` for edited levels, and listing a commit's files.

Trees sit between objects and everything above the store: the status writer edits its branch's
tree level by level with `TreeBuilder` (``store/status.py``, ``humans/branches.py``), and the
desired-state reader lists ``main``'s files (``store/desired.py``, through ``GitRepo.list_tree``).
Reading goes through the same cat-file as every other object (``objectreader.ObjectReader``).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from gitops_acp.errors import StoreError
from gitops_acp.store.git import process
from gitops_acp.store.git.objectreader import ObjectReader, parse_tree

__all__ = ["EMPTY_TREE", "TREE_MODE", "TreeBuilder", "TreeEditor", "TreeReader"]

# The well-known id of the empty tree (git knows it without storing it).
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
TREE_MODE = "40000"
_VALID_MODES = frozenset({"100644", "100755", "120000", TREE_MODE, "160000"})
_RESERVED_NAMES = frozenset({".", "..", ".git"})
# Above this many directories one `git ls-tree -r` beats walking trees via cat-file (list_tree).
_WALK_MAX_TREES = 16


def _entry(record: bytes) -> tuple[str, str]:
    """The (mode, sha) of one serialized tree entry."""
    return record[: record.index(b" ")].decode("ascii"), record[-20:].hex()


def _tree_record(name: str, mode: str, sha: str) -> tuple[str, bytes, bytes]:
    """Check one tree entry; return its normalized mode, its sort key and its serialized record."""
    if mode not in _VALID_MODES:
        if mode != "040000":  # git writes trees without the leading 0
            raise StoreError(f"invalid tree entry {name!r}: mode {mode!r}")
        mode = TREE_MODE
    if not name or "/" in name or "\0" in name or name in _RESERVED_NAMES:
        raise StoreError(f"invalid tree entry name {name!r}")
    try:
        binsha = bytes.fromhex(sha)
    except ValueError:
        binsha = b""
    if len(binsha) != 20:
        raise StoreError(f"invalid tree entry {name!r}: sha {sha!r}")
    raw = name.encode("utf-8", "surrogateescape")
    # git compares a directory as if its name ended in "/" (so "a.b" sorts before "a/").
    key = raw + b"/" if mode == TREE_MODE else raw
    return mode, key, mode.encode() + b" " + raw + b"\0" + binsha


class TreeBuilder:
    """One tree level kept in git's serialized form, sorted, ready to be written again.

    The status writer rewrites a few levels on every checkpoint with one or two entries changed
    (before the fan-out, all of `status/tasks/`). Checking and encoding every entry again cost
    ~2.5 µs each (1.3 ms per commit at 500 files); keeping the records makes a rewrite one join.

    A level read as git's bytes (`raw`) stays so until it has been edited `RAW_EDITS` times:
    an archive commit adds a file or two to each of ~80 directories of `archive/`, read for it
    and forgotten after (`TreeEditor.unload`), and splitting every record of a directory of the
    archive cost ~1.2 µs an entry, ~300 µs a directory at 1,000,000 archived files (half of an
    archive commit's time). An edit of the bytes walks the records up to its place (~0.3 µs each,
    stopping there) and splices its record in. Only `archive/` is read so (`TreeEditor.preload`):
    a directory of the tip's `status/` is edited again and again, and there two walks an edit
    before splitting cost more than splitting at once (`bench_checkpoint.py`, 100,000 in the
    tip: 0.41 ms a checkpoint against 0.38). Not thread-safe, like everything here.
    """

    #: Edits made on git's bytes before the records are split into the map (a level edited this
    #: often is a live one: the tip's directories of `status/`, edited at every checkpoint).
    RAW_EDITS = 4

    def __init__(self, entries: Mapping[str, tuple[str, str]] | None = None) -> None:
        """Start from `entries` (name -> (mode, sha)), or empty."""
        # sort key (the name's bytes, and "/" after a directory's) -> serialized entry. Nothing
        # else per entry: the status writer holds one for every file of the tip (`_key`).
        self._records: dict[bytes, bytes] = {}
        self._order: list[bytes] | None = None  # sorted keys; None until first needed
        self._raw: bytes | None = None  # git's bytes, not split yet (`raw`)
        self._raw_edits = 0
        for name, (mode, sha) in (entries or {}).items():
            self.set(name, mode, sha)

    @classmethod
    def parse(cls, data: bytes) -> TreeBuilder:
        """Start from a raw tree object as git stored it: its records kept as they are.

        An archive commit reads ~1,600 directories of `archive/` and adds a file or two to each;
        checking and encoding every entry again (`set`) cost ~3.5 µs each, so the commit grew
        with the archive (at 50,000 archived tasks, the largest share of the writer's time).
        Slicing git's records costs ~1 µs, in git's order already.
        """
        builder = cls()
        builder._split(data)
        return builder

    @classmethod
    def raw(cls, data: bytes) -> TreeBuilder:
        """Start from a raw tree object as git stored it, kept as those bytes until edited often
        (see the class). A malformed object is found when first used (StoreError)."""
        builder = cls()
        builder._raw = data
        return builder

    def _split(self, data: bytes) -> None:
        records = self._records
        order: list[bytes] = []
        pos, end = 0, len(data)
        try:
            while pos < end:
                space = data.index(b" ", pos)
                nul = data.index(b"\0", space)
                if nul + 21 > end:
                    raise ValueError("cut short")
                mode, raw = data[pos:space], data[space + 1 : nul]
                key = raw + b"/" if mode in (b"40000", b"040000") else raw  # old gits padded it
                records[key] = data[pos : nul + 21]
                order.append(key)
                pos = nul + 21
        except ValueError:
            raise StoreError("malformed tree object") from None
        self._order = order

    def _expand(self) -> None:
        """Split git's bytes into the map, if not done yet."""
        if self._raw is not None:
            data, self._raw = self._raw, None
            self._split(data)

    def _locate(self, raw: bytes, key: bytes) -> tuple[int, int, int]:
        """In git's bytes: where the record named `raw` (a file's or a directory's) starts and
        ends (-1, -1 if none), and where a record with sort key `key` goes once that one is
        gone; one walk, which stops past where either could be (~0.3 µs a record)."""
        data = self._raw
        assert data is not None
        last = max(raw + b"/", key)  # a directory named `raw` sorts as this: nothing named so comes later
        found, found_end, place = -1, -1, -1
        pos, end = 0, len(data)
        try:
            while pos < end:
                nul = data.index(b"\0", pos)
                # a directory's mode is "40000" (or old gits' "040000"), a file's six digits from "1"
                space = pos + 5 if data[pos] == 0x34 else pos + 6
                if data[space] != 0x20 or nul <= space or nul + 21 > end:
                    raise ValueError("not a record")
                name = data[space + 1 : nul]
                if name == raw:
                    found, found_end = pos, nul + 21
                elif place < 0 and (name + b"/" if data[pos] != 0x31 else name) > key:
                    place = pos
                if name > last:
                    break
                pos = nul + 21
        except (ValueError, IndexError):
            raise StoreError("malformed tree object") from None
        if place < 0:
            place = pos
        if found >= 0 and found < place:
            place -= found_end - found
        return found, found_end, place

    def __len__(self) -> int:
        self._expand()
        return len(self._records)

    def __bool__(self) -> bool:
        """Whether it holds any entry (git's bytes left unsplit)."""
        return bool(self._raw) if self._raw is not None else bool(self._records)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def _key(self, name: str) -> bytes | None:
        """The sort key entry `name` is held under (a file's or a directory's), or None."""
        raw = name.encode("utf-8", "surrogateescape")
        if raw in self._records:
            return raw
        raw += b"/"
        return raw if raw in self._records else None

    def get(self, name: str) -> tuple[str, str] | None:
        """Return the (mode, sha) of entry `name`, or None."""
        if self._raw is not None:
            raw = name.encode("utf-8", "surrogateescape")
            start, end, _ = self._locate(raw, raw)
            return None if start < 0 else _entry(self._raw[start:end])
        key = self._key(name)
        return None if key is None else _entry(self._records[key])

    def entries(self) -> dict[str, tuple[str, str]]:
        """Return a copy of the entries as name -> (mode, sha)."""
        self._expand()
        return {
            key.removesuffix(b"/").decode("utf-8", "surrogateescape"): _entry(record)
            for key, record in self._records.items()
        }

    def set(self, name: str, mode: str, sha: str) -> None:
        """Add or replace entry `name`."""
        mode, key, record = _tree_record(name, mode, sha)
        if self._raw is not None and self._raw_edits < self.RAW_EDITS:
            self._raw_edits += 1
            data = self._raw
            start, end, at = self._locate(name.encode("utf-8", "surrogateescape"), key)
            if start >= 0:  # replaced, perhaps elsewhere (a file that became a directory)
                data = data[:start] + data[end:]
            self._raw = data[:at] + record + data[at:]
            return
        self._expand()
        old_key = self._key(name)
        if old_key != key:
            if old_key is not None:
                self._drop_key(old_key)
            if self._order is not None:
                bisect.insort(self._order, key)
        self._records[key] = record

    def remove(self, name: str) -> bool:
        """Remove entry `name`; return False if there was none."""
        if self._raw is not None and self._raw_edits < self.RAW_EDITS:
            raw = name.encode("utf-8", "surrogateescape")
            start, end, _ = self._locate(raw, raw)
            if start < 0:
                return False
            self._raw_edits += 1
            self._raw = self._raw[:start] + self._raw[end:]
            return True
        self._expand()
        key = self._key(name)
        if key is None:
            return False
        self._drop_key(key)
        return True

    def _drop_key(self, key: bytes) -> None:
        del self._records[key]
        if self._order is not None:
            del self._order[bisect.bisect_left(self._order, key)]

    def data(self) -> bytes:
        """Return the tree object's content, entries in git's order."""
        if self._raw is not None:
            return self._raw
        if self._order is None:
            self._order = sorted(self._records)
        return b"".join(map(self._records.__getitem__, self._order))


class _Node:
    """One directory of a TreeEditor: its entries once read, the subdirectories opened so far."""

    __slots__ = ("builder", "children", "dirty", "sha")

    def __init__(self, sha: str | None) -> None:
        self.sha = sha  # the tree as last read or written; None: new
        self.builder: TreeBuilder | None = None  # read on first use
        self.children: dict[str, _Node] = {}
        self.dirty = False


class TreeEditor:
    """A tree edited by path: each level read when first needed, rewritten only along changed paths.

    The status writer keeps its branch's tip as one of these. A checkpoint of
    `status/tasks/a/b/c/x.yaml` rewrites that file's five directories and the root, whatever
    else the tree holds: the cost of a commit does not grow with the number of files (DESIGN §9).
    `read` returns a tree's entries by sha (None if missing); `write` stores a level and returns
    its sha. Empty directories disappear, as git has none. Not thread-safe.
    """

    def __init__(self, read: Callable[[str], Mapping[str, tuple[str, str]] | None], sha: str | None) -> None:
        """Edit the tree `sha` (None: start empty), reading levels with `read`."""
        self._read = read
        self._root = _Node(sha)

    def _level(self, node: _Node) -> TreeBuilder:
        if node.builder is None:
            entries = self._read(node.sha) if node.sha is not None else {}
            if entries is None:
                raise StoreError(f"tree {node.sha} is missing")
            node.builder = TreeBuilder(entries)
        return node.builder

    def _child(self, node: _Node, name: str, *, create: bool) -> _Node | None:
        child = node.children.get(name)
        if child is not None:
            return child
        entry = self._level(node).get(name)
        if entry is None:
            if not create:
                return None
            child = _Node(None)
        elif entry[0] != TREE_MODE:
            if not create:
                return None
            raise StoreError(f"{name} is a file, not a directory")
        else:
            child = _Node(entry[1])
        node.children[name] = child
        return child

    def _path(self, parts: list[str], *, create: bool) -> list[_Node] | None:
        """The nodes from the root to directory `parts`, or None if it does not exist."""
        nodes = [self._root]
        for part in parts:
            child = self._child(nodes[-1], part, create=create)
            if child is None:
                return None
            nodes.append(child)
        return nodes

    def get(self, path: str) -> tuple[str, str] | None:
        """The (mode, sha) of the entry at `path`, or None."""
        *parents, name = path.split("/")
        nodes = self._path(parents, create=False)
        return None if nodes is None else self._level(nodes[-1]).get(name)

    def set(self, path: str, mode: str, sha: str) -> None:
        """Add or replace the entry at `path` (a file, or a subtree by its sha)."""
        *parents, name = path.split("/")
        nodes = self._path(parents, create=True)
        assert nodes is not None
        level = self._level(nodes[-1])
        level.set(name, mode, sha)
        nodes[-1].children.pop(name, None)  # a subtree set by sha replaces an opened one
        for node in nodes:
            node.dirty = True

    def remove(self, path: str) -> bool:
        """Remove the entry at `path`; False if there was none."""
        *parents, name = path.split("/")
        nodes = self._path(parents, create=False)
        if nodes is None or not self._level(nodes[-1]).remove(name):
            return False
        nodes[-1].children.pop(name, None)
        for node in nodes:
            node.dirty = True
        return True

    def listdir(self, path: str = "") -> dict[str, tuple[str, str]]:
        """The entries of directory `path` as name -> (mode, sha); empty if it does not exist."""
        nodes = self._path(path.split("/") if path else [], create=False)
        return {} if nodes is None else self._level(nodes[-1]).entries()

    def files(self, path: str) -> Iterator[tuple[str, str, str]]:
        """Every file under directory `path`, recursively (depth first), as (path, mode, sha)."""
        nodes = self._path(path.split("/") if path else [], create=False)
        if nodes is None:
            return
        stack = [(path, nodes[-1])]
        while stack:
            prefix, node = stack.pop()
            subdirs: list[tuple[str, _Node]] = []
            for name, (mode, sha) in sorted(self._level(node).entries().items()):
                if mode == TREE_MODE:
                    child = self._child(node, name, create=False)
                    assert child is not None
                    subdirs.append((f"{prefix}/{name}" if prefix else name, child))
                elif mode != "160000":
                    yield (f"{prefix}/{name}" if prefix else name), mode, sha
            stack.extend(reversed(subdirs))

    def preload(
        self,
        paths: Iterable[str],
        read_many: Callable[[list[str]], Mapping[str, bytes]],
        *,
        raw_under: str | None = None,
    ) -> None:
        """Read the levels down to each directory of `paths` not read yet, one `read_many` per depth.

        `read_many` returns raw tree objects by sha (`GitRepo.read_trees`). Levels under the
        top directory `raw_under` are kept as git's bytes (`TreeBuilder.raw`): the status writer's
        `archive/`, edited once or twice and forgotten after (`unload`).

        What `get`, `set` and `remove` would read one tree at a time: an archive commit of 2,000
        tasks needs ~2,000 directories of `archive/`, read in five calls instead of 2,000 round
        trips. A directory that does not exist is skipped (`set` creates it).
        """
        level = [
            (self._root, parts, bool(parts) and parts[0] == raw_under)
            for parts in {tuple(part for part in path.split("/") if part) for path in paths}
        ]
        depth = 0
        while level:
            unread = sorted({n.sha for n, _, _ in level if n.builder is None and n.sha is not None})
            if unread:
                trees = read_many(unread)
                for node, _, raw in level:
                    if node.builder is None and node.sha is not None:
                        data = trees.get(node.sha)
                        if data is None:
                            raise StoreError(f"tree {node.sha} is missing")
                        node.builder = TreeBuilder.raw(data) if raw and depth else TreeBuilder.parse(data)
            deeper: dict[tuple[int, tuple[str, ...]], tuple[_Node, tuple[str, ...], bool]] = {}
            for node, parts, raw in level:
                child = self._child(node, parts[0], create=False) if parts else None
                if child is not None:
                    deeper.setdefault((id(child), parts[1:]), (child, parts[1:], raw))
            level = list(deeper.values())
            depth += 1

    def unload(self, path: str) -> None:
        """Forget what was read under directory `path` (written first): it is read again when needed.

        The status writer unloads `archive/` after each archive commit, so the archive's levels,
        which only ever grow, are not all kept in memory.
        """
        nodes = self._path(path.split("/"), create=False) if path else [self._root]
        if nodes is None:
            return
        node = nodes[-1]
        if node.dirty:
            raise StoreError(f"{path}: written changes must be stored before it is unloaded")
        node.builder = None
        node.children = {}

    def write(self, store: Callable[[TreeBuilder], str]) -> str | None:
        """Store the changed levels (deepest first) with `store`; the root's sha, None if empty."""
        return self._write(self._root, store)

    def _write(self, node: _Node, store: Callable[[TreeBuilder], str]) -> str | None:
        if not node.dirty:
            return None if node.builder is not None and not node.builder else node.sha
        level = self._level(node)
        for name, child in list(node.children.items()):
            if not child.dirty:
                continue
            sha = self._write(child, store)
            if sha is None:
                level.remove(name)
                del node.children[name]
            else:
                level.set(name, TREE_MODE, sha)
        node.dirty = False
        node.sha = store(level) if level else None
        return node.sha


class TreeReader:
    """Reads trees of one repository: one level at a time, or a whole commit's files."""

    def __init__(self, reader: ObjectReader, git_dir: Path) -> None:
        """Read trees through `reader`; `git_dir` runs `git ls-tree` and names the repository in errors."""
        self._reader = reader
        self._git_dir = git_dir
        self._prefer_ls_tree = False

    def read(self, treeish: str, path: str = "") -> dict[str, tuple[str, str]] | None:
        """Return one level of a tree as name -> (mode, sha); None if `path` is not in `treeish`."""
        return self._reader.level(treeish, path)

    def files(self, commit: str) -> dict[str, str]:
        """Return every file of `commit` as path -> blob sha (recursive; submodules left out).

        Measured (benchmarks/bench_checkpoint.py): walking the trees through the persistent
        cat-file costs ~0.2 ms per directory, one `git ls-tree -r` ~3.5 ms whatever the shape. So
        trees with few directories are walked, and once a repository shows more than
        `_WALK_MAX_TREES` directories this object switches to ls-tree (tree shapes are stable).
        """
        if not self._prefer_ls_tree:
            walked = self.walk(commit)
            if walked is not None:
                return walked
            self._prefer_ls_tree = True
        return self.ls_tree(commit)

    def walk(self, commit: str, max_trees: int = _WALK_MAX_TREES) -> dict[str, str] | None:
        """List `commit`'s files by reading its trees one by one; None past `max_trees` directories."""
        root = self._reader.cat(f"{commit}^{{tree}}")
        if root is None:
            raise StoreError(f"no commit {commit} in {self._git_dir}")
        files: dict[str, str] = {}
        stack: list[tuple[str, bytes]] = [("", root[2])]
        trees = 0
        while stack:
            prefix, data = stack.pop()
            for name, (mode, sha) in parse_tree(data).items():
                if mode == TREE_MODE:
                    trees += 1
                    if trees > max_trees:
                        return None
                    sub = self._reader.cat(sha)
                    if sub is None:
                        raise StoreError(f"tree {sha} missing in {self._git_dir}")
                    stack.append((f"{prefix}{name}/", sub[2]))
                elif mode != "160000":
                    files[prefix + name] = sha
        return files

    def ls_tree(self, commit: str, path: str = "") -> dict[str, str]:
        """List `commit`'s files (under directory `path`) with one `git ls-tree -r`."""
        args: tuple[str, ...] = ("ls-tree", "-r", "-z", "--full-tree", "--end-of-options", commit)
        if path:
            args += ("--", f"{path.rstrip('/')}/")
        out = process.in_repo(self._git_dir, *args).stdout
        files: dict[str, str] = {}
        for record in out.split(b"\0"):
            if not record:
                continue
            meta, _tab, name = record.partition(b"\t")
            _mode, kind, sha = meta.split(b" ")
            if kind == b"blob":
                files[name.decode("utf-8", "surrogateescape")] = sha.decode("ascii")
        return files

    def changed_files(self, old: str, new: str, path: str = "") -> dict[str, str | None]:
        """The files that differ between commits `old` and `new` (under directory `path`): path ->
        blob sha in `new`, or None where `new` has none (one `git diff-tree -r`: the cost is the
        change, not the tree)."""
        args: tuple[str, ...] = ("diff-tree", "-r", "-z", "--no-renames", "--end-of-options", old, new)
        if path:
            args += ("--", f"{path.rstrip('/')}/")
        out = process.in_repo(self._git_dir, *args).stdout
        changed: dict[str, str | None] = {}
        fields = out.split(b"\0")
        for meta, name in zip(fields[0::2], fields[1::2], strict=False):
            if not meta.startswith(b":"):
                continue
            _old_mode, new_mode, _old_sha, new_sha, status = meta[1:].split(b" ")
            path = name.decode("utf-8", "surrogateescape")
            if status.startswith(b"D") or new_mode == b"160000":  # deleted, or a submodule
                changed[path] = None
            else:
                changed[path] = new_sha.decode("ascii")
        return changed
