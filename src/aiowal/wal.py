"""The ordered set of log files of one directory: discovery and recovery on open, append with Dgraph's rotation
rule, truncation for overwrites, deletion of files below a snapshot, and reads across files.

Files are kept sorted by their first index; the last one is the *current* file that receives appends. Every
structural change that a later write depends on is made durable first when the caller asks for durability, so a
crash never leaves old entries after new ones (see docs/durability.md).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
from collections.abc import Callable, Generator, Sequence

from aiowal.errors import CorruptionError, EncryptionKeyError
from aiowal.format import LOG_FILE_SIZE, SLOT_SIZE, UNLIMITED, log_file_name, parse_log_file_name
from aiowal.fs import FS
from aiowal.keyregistry import KeyRegistry
from aiowal.logfile import LogFile
from aiowal.raftpb import Entry
from aiowal.steps import Steps, SyncStep

log = logging.getLogger(__name__)


class Wal:
    """Log files sorted by first index (``files[-1]`` is current) and the set of files written since the last
    sync."""

    def __init__(self, fs: FS, directory: str, writable: bool, registry: Callable[[], KeyRegistry] | None) -> None:
        self.fs = fs
        self.dir = directory
        self.writable = writable
        self._registry = registry  # None: no encryption key was given
        self.files: list[LogFile] = []
        self.max_fid = 0
        self.dirty: set[LogFile] = set()
        self.dir_dirty = False
        self.repairs: list[str] = []
        self.bytes_written = 0  # data-record bytes appended since open

    # --- opening ----------------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        fs: FS,
        directory: str,
        writable: bool,
        registry: Callable[[], KeyRegistry] | None,
        floor_fid: int,
        snapshot_index: int = 0,
    ) -> Wal:
        wal = cls(fs, directory, writable, registry)
        try:
            wal._discover(floor_fid, snapshot_index)
        except BaseException:
            wal.close()
            raise
        return wal

    def _discover(self, floor_fid: int, snapshot_index: int) -> None:
        found: list[LogFile] = []
        self.files = found  # so that close() releases what was opened if anything below fails
        dead: list[str] = []
        # New files must get ids at or above the floor even when every file was deleted: a file numbered below it
        # would be taken for one discarded by the snapshot at the next open, and deleted with what it holds.
        self.max_fid = max(self.max_fid, floor_fid - 1)
        for name in sorted(self.fs.listdir(self.dir)):
            fid = parse_log_file_name(name)
            path = os.path.join(self.dir, name)
            if fid is None:
                if name.endswith(".wal"):
                    log.warning("%s: not a canonical log file name; ignored", path)
                continue
            if not os.path.isfile(path):
                continue
            self.max_fid = max(self.max_fid, fid)
            if fid < floor_fid:
                dead.append(path)  # discarded by a snapshot that arrived through save()
                continue
            lf = LogFile.open(self.fs, path, fid, self.writable)
            found.append(lf)
            self._attach_key(lf)
        firsts = {lf: lf.peek_first_index() for lf in found}
        nonempty = [lf for lf in found if firsts[lf]]
        empty = [lf for lf in found if lf not in nonempty]
        nonempty.sort(key=lambda lf: firsts[lf])
        current: LogFile | None = None
        newest_empty = max(empty, key=lambda lf: lf.fid) if empty else None
        if (
            newest_empty is not None
            and newest_empty.mm is not None
            and newest_empty.fid == max(f.fid for f in found)
            and (self._registry is None or newest_empty.data_key is not None)
        ):
            # The newest file is empty: a rotation or snapshot made it and nothing was written yet. (A file of
            # size 0, cut short by a crash while it was being created, has no header: it is removed instead; so is
            # an empty file without a key header when a key is given, so that no entry is written unencrypted.)
            current = newest_empty
        for lf in empty:
            if lf is not current:
                dead.append(lf.path)
                lf.close()
        files = [*nonempty, current] if current is not None else nonempty
        torn: tuple[LogFile, int] | None = None
        for pos, lf in enumerate(files):
            is_current = pos == len(files) - 1
            good = lf.load(validate_records=is_current)
            if not lf.clean:
                if not is_current:
                    raise CorruptionError(f"{lf.path}: offset {good * SLOT_SIZE}: invalid slot {good}")
                torn = (lf, good)
        # Check the files against each other before anything is repaired or deleted: a damaged older file must
        # not be mistaken for a torn current file (or an empty one) and lose acknowledged entries.
        live = [lf for lf in files if lf.count]
        suspects = [lf.path for lf in empty if lf is not current] + ([torn[0].path] if torn else [])
        hint = f" (damaged or empty: {', '.join(suspects)})" if suspects else ""
        if live and live[0].first > snapshot_index + 1:
            raise CorruptionError(
                f"{live[0].path}: offset 0: the log starts at {live[0].first}, but the snapshot is at "
                f"{snapshot_index}{hint}"
            )
        for prev, nxt in itertools.pairwise(live):
            if nxt.first <= prev.last or nxt.term_at(0) < prev.last_term:
                raise CorruptionError(
                    f"{nxt.path}: offset 0: first entry {nxt.first} does not follow {prev.path}'s last {prev.last}"
                )
            if nxt.first > max(prev.last, snapshot_index) + 1:
                raise CorruptionError(
                    f"{nxt.path}: offset 0: first entry {nxt.first} leaves a gap after {prev.path}'s last "
                    f"{prev.last}{hint}"
                )
        if torn is not None:
            self._repair_tail(*torn)
        self.files = files
        if self.files and self.current.data_key is not None:
            # Data past the last slot may have reached the disk before a crash: new data never goes where it
            # might have been, so an encrypted log starts a new file at its first append after open.
            self.current.sealed = True
        if self.writable:
            for path in dead:
                log.info("removing %s: empty or discarded by a snapshot", path)
                self.fs.unlink(path)
                self.dir_dirty = True
            if not self.files:
                self._new_file()
            self.sync()

    def _attach_key(self, lf: LogFile) -> None:
        key_id, base_iv = lf.header_key_id()
        if key_id == 0:
            return
        if self._registry is None:
            raise EncryptionKeyError("Logfile is encrypted but encryption key is nil")
        lf.key_id = key_id
        lf.data_key = self._registry().data_key(key_id)
        lf.base_iv = base_iv

    def _repair_tail(self, lf: LogFile, good: int) -> None:
        msg = f"{lf.path}: torn tail: keeping {good} entries, dropping the slots after them"
        self.repairs.append(msg)
        if lf.data_key is not None:
            lf.sealed = True  # the cut region's keystream was used: never write there again
        if self.writable:
            log.warning(msg)
            lf.cut_to(good)
            self.dirty.add(lf)

    # --- shape ------------------------------------------------------------------------------------------------
    @property
    def current(self) -> LogFile:
        return self.files[-1]

    def first_index(self) -> int:
        """Index in slot 0 of the oldest file (0 when the log is empty)."""
        for lf in self.files:
            if lf.count:
                return lf.first
        return 0

    def last_index(self) -> int:
        for lf in reversed(self.files):
            if lf.count:
                return lf.last
        return 0

    def num_entries(self) -> int:
        return sum(lf.count for lf in self.files)

    def num_log_files(self) -> int:
        return max(len(self.files) - 1, 0)

    def _file_pos(self, index: int) -> int:
        """Position of the last non-empty file whose first index is <= ``index`` (-1 if none)."""
        firsts = [lf.first for lf in self.files if lf.count]
        return bisect.bisect_right(firsts, index) - 1

    def locate(self, index: int) -> tuple[LogFile, int] | None:
        """The file and slot holding ``index``, or None."""
        pos = self._file_pos(index)
        if pos < 0:
            return None
        lf = self.files[pos]
        s = lf.slot_of(index)
        return (lf, s) if s >= 0 else None

    def term(self, index: int) -> int | None:
        found = self.locate(index)
        return None if found is None else found[0].term_at(found[1])

    def entries(self, lo: int, hi: int, max_size: int | None) -> list[Entry]:
        """Entries with ``lo <= index < hi``, at least one if any, within ``max_size`` of protobuf size."""
        out: list[Entry] = []
        if lo >= hi:
            return out
        pos = max(self._file_pos(lo), 0)
        budget = UNLIMITED if max_size is None else max_size
        files = self.files
        s = files[pos].slot_ge(lo) if files else 0
        while pos < len(files):
            lf = files[pos]
            if lf.count:
                before = len(out)
                budget = lf.read(s, lf.count, hi, budget, out)
                if budget < 0 or (len(out) - before < lf.count - s):
                    break
            pos += 1
            s = 0
        return out

    # --- writing ----------------------------------------------------------------------------------------------
    def append_steps(self, entries: Sequence[Entry]) -> Steps:
        """Write ``entries``; the first may overwrite the log from its index on (the caller checked gaps). Each
        rotation yields its syncs (the full file, the new file's header) for the caller to run: off the event loop
        in ``AsyncDiskStorage``."""
        if not entries:
            return
        first = entries[0].index
        if self.files and first <= self.last_index():
            yield from self.truncate_from(first)
        i = 0
        while i < len(entries):
            cur = self.files[-1] if self.files else None
            if cur is None or cur.sealed:
                cur = yield from self.rotate_steps()
            before = cur.data_end
            stop = cur.append(entries, i)
            if stop == i:
                yield from self.rotate_steps()
                continue
            self.bytes_written += cur.data_end - before
            self.dirty.add(cur)
            i = stop

    def rotate_steps(self) -> Generator[SyncStep, None, LogFile]:
        """Close the current file at its data end and start a new current file, each synced by a yielded step.
        The full file is durable before the new one exists (as Dgraph does): a file followed by another is never
        torn, which is what open relies on to check only the last one's records."""
        if self.files:
            old = self.files[-1]
            if old.count == 0:
                self.files.pop()
                yield self._forget([old])
            else:
                if old.size != old.data_end:
                    old.resize(old.data_end)
                self.dirty.discard(old)
                fs, fd = self.fs, old.fd
                yield lambda: fs.fdatasync(fd)
        lf = self._create_file()
        fs = self.fs
        yield lambda: fs.fdatasync(lf.fd)
        return lf

    def _new_file(self) -> LogFile:
        """A new current file, its header synced at once (on open, where no event loop is waiting)."""
        lf = self._create_file()
        self.fs.fdatasync(lf.fd)
        return lf

    def _create_file(self) -> LogFile:
        """Create the next log file and make it current. Its size and encryption header must reach the disk
        before any record does (the caller syncs it): otherwise a crash could leave records in a file too short
        to be a log file, or encrypted records in a file without its key id."""
        self.max_fid += 1
        path = os.path.join(self.dir, log_file_name(self.max_fid))
        if self._registry is not None:
            dk = self._registry().latest_data_key()
            lf = LogFile.create(self.fs, path, self.max_fid, dk.key_id, dk.key)
        else:
            lf = LogFile.create(self.fs, path, self.max_fid)
        self.files.append(lf)
        self.dirty.add(lf)
        self.dir_dirty = True
        return lf

    def truncate_from(self, index: int) -> Steps:
        """Discard every entry with index >= ``index``: later files are deleted, the file holding ``index`` keeps
        what precedes it. Nothing is synced here: a caller that needs the cut durable syncs next."""
        pos = yield from self.drop_files_after(index)
        lf = self.files[pos]
        lf.truncate_from(lf.slot_ge(index))
        if lf.data_key is not None:
            lf.sealed = True  # new data must not reuse this file's keystream
        self.dirty.add(lf)
        if lf.count == 0 and lf.sealed:
            self.files.pop()
            yield self._forget([lf])
        elif not lf.sealed and lf.size < LOG_FILE_SIZE:
            lf.resize(LOG_FILE_SIZE)

    def drop_files_after(self, index: int) -> Generator[SyncStep, None, int]:
        """Delete the files wholly after the one holding ``index``, newest first, so that a crash part-way leaves a
        prefix of the log and never a gap; returns the position of the file holding ``index``."""
        pos = max(self._file_pos(index), 0)
        dead = self.files[pos + 1 :]
        del self.files[pos + 1 :]
        if dead:
            yield self._forget(dead[::-1])
        return pos

    def delete_before(self, index: int) -> Steps:
        """Dgraph's deleteBefore: delete the files wholly below the file that holds ``index``."""
        pos = self._file_pos(index)
        if pos <= 0:
            return
        pos = min(pos, len(self.files) - 1)
        dead = self.files[:pos]
        del self.files[:pos]
        yield self._forget(dead)

    def discard_all_but_new_file(self) -> Generator[SyncStep, None, LogFile]:
        """Start a fresh current file for a log that a snapshot discards (its header sync is yielded); the old
        files stay until ``drop_older_than`` (after the snapshot is committed in wal.meta)."""
        lf = self._create_file()
        fs = self.fs
        yield lambda: fs.fdatasync(lf.fd)
        return lf

    def drop_older_than(self, fid: int) -> Steps:
        dead = [lf for lf in self.files if lf.fid < fid]
        self.files = [lf for lf in self.files if lf.fid >= fid]
        if dead:
            yield self._forget(dead)

    def _forget(self, dead: list[LogFile]) -> SyncStep:
        """Close files already taken out of ``files``; the step unlinks them in the given order (slow for big
        files, so it is a step: the asyncio writer runs it off the loop)."""
        for lf in dead:
            self.dirty.discard(lf)
            lf.close()
        self.dir_dirty = True
        fs, paths = self.fs, [lf.path for lf in dead]

        def step() -> None:
            for path in paths:
                fs.unlink(path)

        return step

    def drop_data_until(self, index: int, durable: bool) -> Steps:
        """truncate_entries_until: drop the data of Normal entries below ``index``. With ``durable`` the marks
        are synced (a yielded step) before any length is zeroed."""
        touched: list[tuple[LogFile, int]] = []
        for lf in self.files:
            for s in range(lf.count):
                if lf._index_at(s) >= index:
                    break
                if lf.drop_data(s):
                    touched.append((lf, s))
        files = {lf for lf, _ in touched}
        if durable and files:
            fs, fds = self.fs, [lf.fd for lf in files]

            def step() -> None:
                for fd in fds:
                    fs.fdatasync(fd)

            yield step
        for lf, s in touched:
            lf.zero_length(s)
            if lf.data_key is not None and s == lf.count - 1:
                lf.sealed = True
        self.dirty.update(files)

    def sync(self) -> None:
        """fdatasync every file written since the last sync, then the directory if files came or went."""
        for lf in list(self.dirty):
            self.fs.fdatasync(lf.fd)
            self.dirty.discard(lf)
        if self.dir_dirty:
            self.fs.fsync_dir(self.dir)
            self.dir_dirty = False

    def close(self) -> None:
        for lf in self.files:
            lf.close()
        self.files = []
