"""Git objects in and out: loose objects and packs written in-process, objects read through cat-file.

The bottom half of ``GitRepo`` (``repo.py`` holds one `ObjectWriter` and one `ObjectReader`); trees
and refs are built on top. What is used for what was measured (``GIT-NOTES.md``):

- objects are written as loose objects in-process, in git's format (zlib of "<type> <size>\\0"
  + data, named by its sha1): GitPython's ``repo.odb.store`` spawns a ``git hash-object`` per
  object, and gitdb's ``LooseObjectDB`` streams through Python-level chunked copies that cost a
  fifth of the reconciler's CPU at 1000 tasks; one ``zlib.compress`` and one ``hashlib.sha1``
  (both in C, releasing the GIL) do the same;
- inside `ObjectWriter.one_pack` they go to one pack and its index instead (the status writer's
  group commits), encoded here as well, stored uncompressed and hashed without letting go of the
  GIL (`_KEEP_GIL`); maintenance compresses them;
- objects are read through GitPython's persistent ``git cat-file --batch`` (0.13 ms per read),
  which also resolves ``<commit>:<path>`` in one round trip.

Neither class is thread-safe; ``GitRepo`` guards them.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from gitops_acp import faults
from gitops_acp.errors import StoreError

__all__ = ["ObjectWriter", "PackLedger", "blob_sha", "commit_data", "pack_ledger"]

#: What a pack is made of besides its `.pack`: all go together, the `.idx` first (git finds packs
#: by their index, which must never name a missing pack).
_PACK_FILES = (".idx", ".pack", ".rev", ".bitmap", ".mtimes")

#: Seconds a pack stays after its objects were written into a newer one (`PackLedger.retired`):
#: thousands of times what a reader takes from listing the folder to opening what it listed (a
#: reader would have to be held off the CPU that long in between). Not longer: the writer's packs
#: of those seconds pile up beside them (at 60 group commits a second, 0.25 s held up to 40 packs
#: in all, near git's `gc.autoPackLimit` of 50; 0.1 s, 31).
RETIRE_SECONDS = 0.1

_PACK_TYPES = {b"commit": 1, b"tree": 2, b"blob": 3}  # object type codes in pack entries
# The status writer's thread packs every object of every commit while the reconciler's thread
# wants the GIL: each release handed it over, and taking it back waited for that thread's switch
# interval (up to 5 ms). zlib.compress releases it on every call (it was ~200 us an object, the
# larger part of a commit); hashlib for 2,048 bytes or more; zlib's checksums above 5 KiB. So the
# pack path hashes in pieces too small to release and does not compress (`_stored_zlib`).
_KEEP_GIL = 2047
#: A writer's packs rolled up into one once there are this many (`ObjectWriter.roll_up`).
ROLL_UP_AFTER = 16


def _sha1(data: bytes | bytearray) -> bytes:
    """SHA-1 of `data`, without letting go of the GIL (see `_KEEP_GIL`)."""
    if len(data) <= _KEEP_GIL:
        return hashlib.sha1(data).digest()
    digest = hashlib.sha1()
    view = memoryview(data)
    for start in range(0, len(data), _KEEP_GIL):
        digest.update(view[start : start + _KEEP_GIL])
    return digest.digest()


def blob_sha(data: bytes) -> str:
    """The sha git gives a blob of `data` (computed without letting go of the GIL)."""
    return _sha1(b"blob %d\0" % len(data) + data).hex()


def _crc32(data: bytes) -> int:
    """zlib.crc32 of `data`, without letting go of the GIL (see `_KEEP_GIL`)."""
    crc = 0
    view = memoryview(data)
    for start in range(0, len(data), 4096):
        crc = zlib.crc32(view[start : start + 4096], crc)
    return crc


def _stored_zlib(data: bytes) -> bytes:
    """`data` as a zlib stream of stored (uncompressed) deflate blocks: RFC 1950/1951, no zlib call.

    Any zlib reader inflates it, git's included. What it saves is the GIL (`_KEEP_GIL`), not
    bytes: the packs of the last commits are larger until maintenance repacks them (in git's C, a
    niced process: store/git/maintenance.py), which stores them as compressed deltas. Measured on
    10,000 tasks' history: 76 packs, 18.8 MB, repacked into 7.9 MB; the same with `repack -F`
    (every object compressed again, 3.5 times the time) and 7.7 MB repacking everything.
    """
    view = memoryview(data)
    parts: list[bytes | memoryview] = [b"\x78\x01"]  # deflate, 32 KiB window, no dictionary
    if not data:
        parts.append(b"\x01\x00\x00\xff\xff")  # one final, empty stored block
    for start in range(0, len(data), 65535):  # a stored block holds at most 65,535 bytes
        block = view[start : start + 65535]
        final = start + len(block) == len(data)
        parts.append(struct.pack("<BHH", final, len(block), len(block) ^ 0xFFFF))
        parts.append(block)
    adler = 1
    for start in range(0, len(data), 4096):
        adler = zlib.adler32(view[start : start + 4096], adler)
    parts.append(struct.pack(">I", adler))
    return b"".join(parts)


class PackLedger:
    """Which packs of one repository this process's writers still roll up themselves (and delete).

    The status writer writes a pack per group commit and rolls every `ROLL_UP_AFTER` of them into
    one (`ObjectWriter`); until then they are its own, and maintenance (`maintenance.maintain`)
    must not roll up what the writer is about to delete: it takes the packs that are not `owned`.
    A pack is owned before its files appear and until after they are gone, under `lock`, so a
    listing of the folder taken under `lock` minus `owned` never names a pack a writer deletes.
    `handed`: the roll-ups this process wrote, maintenance's at once, however young (a pack of
    another process is left alone while it is young: its writer may still roll it up).

    `retired`: packs whose objects are in place in a newer pack (a roll-up's, or maintenance's
    merge), never merged again, and deleted once they have been retired `RETIRE_SECONDS` (`sweep`:
    at the writer's next group commit, at maintenance's next run, at the background's next look
    a second later). Not at once: git finds packs by listing the folder, then looks at each
    `.pack` it listed, and lists again only once per missing object; a reader whose listing was
    taken just before a roll-up's index was renamed in, and who looked for the rolled packs just
    after they were deleted, found an object in neither (a test's reader, once in CI).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owned: set[str] = set()  # pack names (pack-<sha>) a writer here will roll up and delete
        self.handed: set[str] = set()  # roll-ups written here (maintenance forgets them once gone)
        # In a newer pack already -> (when, time.monotonic; who retired it: a writer, or None)
        self.retired: dict[str, tuple[float, object]] = {}

    def retire(self, names: Iterable[str], by: object = None) -> None:
        """`names` are in a newer pack now: nobody merges them again; `sweep` deletes them later."""
        now = time.monotonic()
        names = list(names)
        with self.lock:
            self.retired.update(dict.fromkeys(names, (now, by)))
            self.owned.difference_update(names)

    def sweep(self, folder: str | Path, *, older_than: float = RETIRE_SECONDS, by: object = None) -> None:
        """Delete from the pack folder `folder` the packs retired at least `older_than` seconds ago,
        or, given `by`, all that `by` retired (the index of each first: git finds packs by their
        index). A few file calls, or none."""
        if not self.retired:
            return
        until = time.monotonic() - older_than
        with self.lock:
            due = [
                name
                for name, (when, who) in self.retired.items()
                if (who is by if by is not None else when <= until)
            ]
        for name in due:
            for suffix in _PACK_FILES:
                # Gone already (a person's `git gc` took it) or not removable: git's then.
                with contextlib.suppress(OSError):
                    os.unlink(f"{folder}/{name}{suffix}")
        with self.lock:  # still retired until gone: maintenance never lists one as its own
            for name in due:
                self.retired.pop(name, None)


_LEDGERS: dict[str, PackLedger] = {}
_LEDGERS_LOCK = threading.Lock()


def pack_ledger(objects_dir: str | Path) -> PackLedger:
    """The one `PackLedger` of the object folder `objects_dir` in this process."""
    key = os.path.realpath(objects_dir)
    with _LEDGERS_LOCK:
        return _LEDGERS.setdefault(key, PackLedger())


class _Pack:
    """A pack this writer wrote and will roll up: its entries as written, and its index's rows."""

    __slots__ = ("entries", "name", "rows")

    def __init__(self, name: str, entries: bytes, rows: list[tuple[bytes, int, int]]) -> None:
        self.name = name  # pack-<sha>
        self.entries = entries  # the pack without its 12-byte header and its checksum
        self.rows = rows  # (sha, crc32, offset in the pack), in the order written


def _write_new_file(path: str, *contents: bytes | bytearray | memoryview) -> None:
    """Create `path` (it must not exist) read-only, holding `contents` one after the other: how
    objects and packs are written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    try:
        for content in contents:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _signature(who: tuple[str, str], when: float) -> str:
    name, email = who
    for part in (name, email):
        if any(c in part for c in "<>\n\0"):
            raise StoreError(f"invalid identity {name!r} <{email}>: no '<', '>', newline or NUL allowed")
    seconds = int(when)
    offset = time.localtime(seconds).tm_gmtoff // 60
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset), 60)
    return f"{name} <{email}> {seconds} {sign}{hours:02d}{minutes:02d}"


def commit_data(
    *,
    tree: str,
    parents: Sequence[str],
    message: str,
    author: tuple[str, str],
    committer: tuple[str, str] | None,
    timestamp: float | None,
) -> bytes:
    """Return the content of a commit object; `timestamp` defaults to now (see `GitRepo.write_commit`)."""
    when = time.time() if timestamp is None else timestamp
    lines = [f"tree {tree}"]
    lines += [f"parent {parent}" for parent in parents]
    lines.append(f"author {_signature(author, when)}")
    lines.append(f"committer {_signature(committer or author, when)}")
    text = "\n".join(lines) + "\n\n" + message.rstrip("\n") + "\n"
    return text.encode("utf-8")


def with_signature(data: bytes, signature: bytes) -> bytes:
    """A commit's content with `signature` as its `gpgsig` header (after the committer line)."""
    head, _, message = data.partition(b"\n\n")
    lines = signature.strip(b"\n").split(b"\n")
    header = b"gpgsig " + b"\n ".join(lines)
    return head + b"\n" + header + b"\n\n" + message


class ObjectWriter:
    """Writes objects into a repository: one loose file each, or one pack per `one_pack()` block."""

    def __init__(self, common_dir: Path) -> None:
        """Write into the `objects/` folder of `common_dir`."""
        self._common_dir = common_dir
        self._objects_dir = str(common_dir / "objects")
        self._object_folders: set[str] = set()  # objects/<xx> folders known to exist
        self._tmp_names = itertools.count()
        self._pack: dict[str, tuple[int, bytes]] | None = None  # objects of an open `one_pack()`
        self._ledger = pack_ledger(self._objects_dir)
        self._recent: list[_Pack] = []  # packs written and not yet rolled up

    def close(self) -> None:
        """The packs not rolled up are this writer's no more: maintenance merges them (`PackLedger`).

        The packs its roll-ups retired are deleted now, however recent: a reader in another
        process could miss an object there once, as it could with `git repack -d`; left in place,
        they would stay until another process's maintenance merged them again.
        """
        self._hand_over()
        self._ledger.sweep(f"{self._objects_dir}/pack", by=self)

    def _hand_over(self) -> None:
        """Give the packs not rolled up to maintenance, however young (`PackLedger.handed`)."""
        packs, self._recent = self._recent, []
        with self._ledger.lock:
            self._ledger.owned.difference_update(pack.name for pack in packs)
            self._ledger.handed.update(pack.name for pack in packs)

    def store(self, kind: bytes, data: bytes, known: str | None = None) -> str:
        """Write one loose object (unless it exists) and return its sha.

        As git does: a temporary file in the object's folder renamed into place (readers never see
        half an object), read-only, no fsync (git does not fsync loose objects by default either).
        Compression uses level 1 (core.looseCompression's default) with a 4 KiB window: for
        status files of a few KB, setting up zlib's default 32 KiB window cost more than
        compressing (0.09 ms against 0.03 ms a checkpoint). Any zlib reader, git's included,
        inflates it. Plain `os` calls: this runs once per object of every checkpoint.
        """
        raw = kind + b" " + str(len(data)).encode() + b"\0" + data
        sha = known or _sha1(raw).hex()
        if self._pack is not None:
            self._pack[sha] = (_PACK_TYPES[kind], data)
            return sha
        folder = f"{self._objects_dir}/{sha[:2]}"
        path = f"{folder}/{sha[2:]}"
        if os.path.exists(path):
            return sha
        compressor = zlib.compressobj(1, zlib.DEFLATED, 12, 4)
        payload = compressor.compress(raw) + compressor.flush()
        # The name carries the writer's pid: start-up recovery (store/recovery.py) removes ours.
        tmp = f"{folder}/tmp_obj_{os.getpid()}_{threading.get_ident()}_{next(self._tmp_names)}"
        try:
            if sha[:2] not in self._object_folders:
                os.makedirs(folder, exist_ok=True)
                self._object_folders.add(sha[:2])
            try:
                _write_new_file(tmp, payload)
            except FileNotFoundError:
                # `git prune-packed` (run by a person's `gc`; maintain() keeps them) removes the
                # fan-out folders it empties, ones this writer made included: make it again, as git does.
                os.makedirs(folder, exist_ok=True)
                _write_new_file(tmp, payload)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StoreError(f"cannot write a {kind.decode()} object in {self._common_dir}: {exc}") from exc
        return sha

    @contextlib.contextmanager
    def one_pack(self) -> Iterator[None]:
        """Objects written inside the block go to one new pack file at its end, not a file each.

        For the status writer's group commits: creating a file per object was the larger part of
        a checkpoint's cost on ext4 (0.1-0.5 ms each, every object of every checkpoint), against
        one pack and its index per commit. The pack lands before the block returns, so a ref may
        point at its objects right after; if the block raises, nothing is written (nothing can
        refer to those objects yet).

        Every `ROLL_UP_AFTER` packs, the writer writes their objects again as one pack and deletes
        them (`roll_up`, called once the commit's ref moved): at 35 group commits a second, packs
        piled up faster than maintenance's `git repack` merged them, past git's `gc.autoPackLimit`
        (50), and then every `git commit` a person made started a repack of the whole repository
        (docs/growth.md).
        """
        if self._pack is not None:
            raise StoreError("one_pack() blocks do not nest")
        self._pack = {}
        try:
            yield
            objects = self._pack
        finally:
            self._pack = None
        if objects:
            self._write_pack(objects)

    def _write_pack(self, objects: Mapping[str, tuple[int, bytes]]) -> None:
        """Write a version-2 pack of whole (undeltified, uncompressed) objects and its version-2 index.

        Run on the status writer's thread: nothing here lets go of the GIL but the file calls
        (see `_KEEP_GIL`).
        """
        body = bytearray()
        rows: list[tuple[bytes, int, int]] = []  # (sha, crc32, offset), as the index lists them
        for sha, (type_code, data) in objects.items():
            offset = 12 + len(body)
            size = len(data)
            header = bytearray()
            byte = (type_code << 4) | (size & 0x0F)
            size >>= 4
            while size:
                header.append(byte | 0x80)
                byte = size & 0x7F
                size >>= 7
            header.append(byte)
            record = bytes(header) + _stored_zlib(data)
            rows.append((bytes.fromhex(sha), _crc32(record), offset))
            body += record
        if len(body) >= (1 << 31) - 12:
            raise StoreError("one commit's objects exceed 2 GiB, too large for a pack without 64-bit offsets")
        entries = bytes(body)
        name = self._land([entries], rows, owned=True)
        self._recent.append(_Pack(name, entries, rows))
        self._ledger.sweep(f"{self._objects_dir}/pack")  # the retired packs whose time has come

    def roll_up(self, *, at_least: int = ROLL_UP_AFTER) -> bool:
        """Write the objects of this writer's recent packs as one pack; retire them (deleted later).

        Only once there are `at_least` of them; True if it rolled them up. A failure raises
        `StoreError` with every pack still in place and still this writer's (tried again next time).

        Their entries are copied as they are (whole objects: no entry refers to another), an object
        in two of them once. The new pack is in place long before any of them goes (`PackLedger.
        retired`), so every object stays readable; a kill in between leaves its objects twice,
        which git allows (and start-up's recovery removes a pack whose index is gone). The index
        of each goes first: git finds packs by their index. Maintenance takes the roll-up
        (`PackLedger.handed`).
        """
        if len(self._recent) < max(at_least, 2):
            return False
        packs = self._recent
        parts: list[memoryview] = []  # runs of entries as they are in the packs
        rows: list[tuple[bytes, int, int]] = []
        seen: set[bytes] = set()
        offset = 12
        for pack in packs:
            view = memoryview(pack.entries)
            run = -1  # where the run being collected starts in `view` (-1: none)
            ends = [row[2] for row in pack.rows[1:]] + [12 + len(pack.entries)]
            for (sha, crc, start), end in zip(pack.rows, ends, strict=True):
                if sha in seen:  # an object in an earlier pack too: the run ends before it
                    if run >= 0:
                        parts.append(view[run : start - 12])
                        run = -1
                    continue
                seen.add(sha)
                if run < 0:
                    run = start - 12
                rows.append((sha, crc, offset))
                offset += end - start
            if run >= 0:
                parts.append(view[run:])
        if offset >= 1 << 31:  # too large for 32-bit offsets: maintenance's
            self._hand_over()
            return False
        # Hashed in one piece, letting go of the GIL: a few MB at a time, 16 times rarer than a
        # commit's pack, and the reconciler's thread runs meanwhile.
        rolled = self._land(parts, rows, owned=False, hold_gil=False)
        self._recent = []
        faults.reached("packs-rolled-up")
        # A roll-up of one pack's objects in the same order is that same pack: never deleted.
        self._ledger.retire((pack.name for pack in packs if pack.name != rolled), by=self)
        with self._ledger.lock:
            self._ledger.owned.difference_update(pack.name for pack in packs)
        return True

    def _land(
        self,
        parts: Sequence[bytes | memoryview],
        rows: list[tuple[bytes, int, int]],
        *,
        owned: bool,
        hold_gil: bool = True,
    ) -> str:
        """Write the pack of `parts` (its entries, as `rows` list them) and its index; its name.

        `owned`: the writer rolls it up later (`PackLedger`); else maintenance may take it at once.
        `hold_gil`: hash without letting go of the GIL (`_KEEP_GIL`).
        """
        head = b"PACK" + struct.pack(">II", 2, len(rows))
        body: list[bytes | memoryview]
        if hold_gil:
            whole = head + b"".join(parts)
            body = [whole]
            checksum = _sha1(whole)
        else:  # a roll-up: its parts are long runs of the packs it rolls up, never copied
            body = [head, *parts]
            digest = hashlib.sha1()
            for part in body:
                digest.update(part)
            checksum = digest.digest()
        body.append(checksum)
        entries_sorted = sorted(rows)
        counts = [0] * 256
        for sha_bytes, _, _ in entries_sorted:
            counts[sha_bytes[0]] += 1
        fanout = list(itertools.accumulate(counts))
        index = bytearray(b"\xfftOc" + struct.pack(">I", 2) + struct.pack(">256I", *fanout))
        index += b"".join(sha_bytes for sha_bytes, _, _ in entries_sorted)
        index += struct.pack(f">{len(entries_sorted)}I", *(crc for _, crc, _ in entries_sorted))
        index += struct.pack(f">{len(entries_sorted)}I", *(offset for _, _, offset in entries_sorted))
        index += checksum
        index += _sha1(index) if hold_gil else hashlib.sha1(index).digest()
        # As git does: both files under temporary names, then the pack renamed into place before
        # its index (readers find packs by their index, which must never name a missing pack).
        # The temporary names must not end in .pack or .idx: git takes any *.idx in the folder for
        # a pack (a concurrent `repack` failed on one), and names its own tmp_pack_* / tmp_idx_*.
        folder = f"{self._objects_dir}/pack"
        name = f"{folder}/pack-{checksum.hex()}"
        unique = f"{os.getpid()}_{threading.get_ident()}_{next(self._tmp_names)}"
        files: list[tuple[str, Sequence[bytes | bytearray | memoryview], str]] = [
            (f"{folder}/tmp_pack_{unique}", body, name + ".pack"),
            (f"{folder}/tmp_idx_{unique}", [index], name + ".idx"),
        ]
        with self._ledger.lock:  # before its files appear: maintenance never lists it as its own
            (self._ledger.owned if owned else self._ledger.handed).add(f"pack-{checksum.hex()}")
        try:
            if "pack" not in self._object_folders:
                os.makedirs(folder, exist_ok=True)
                self._object_folders.add("pack")
            for temporary, content, _ in files:
                _write_new_file(temporary, *content)
            faults.reached("objects-written")
            for temporary, _, final in files:
                os.replace(temporary, final)
                faults.reached("pack-renamed" if final.endswith(".pack") else "pack-written")
        except OSError as exc:
            for temporary, _, _ in files:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
            if not os.path.exists(name + ".idx"):  # never in place: nobody's to roll up
                with self._ledger.lock:
                    (self._ledger.owned if owned else self._ledger.handed).discard(f"pack-{checksum.hex()}")
            raise StoreError(f"cannot write a pack in {self._common_dir}: {exc}") from exc
        return f"pack-{checksum.hex()}"
