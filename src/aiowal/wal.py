"""The ordered set of log files of one directory: discovery and recovery on open, append with Dgraph's rotation
rule, truncation for overwrites, deletion of files below a snapshot, reads across files, and which files a sync
must cover.

Files are kept sorted by their first index; the last one is the *current* file that receives appends. What open
keeps of a damaged or torn log is decided by ``recovery`` (see docs/durability.md).
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Callable, Generator, Sequence

from aiowal import recovery
from aiowal.errors import CorruptionError, EncryptionKeyError
from aiowal.format import ENC_OFFSET, KEY_REGISTRY_NAME, LOG_FILE_SIZE, UNLIMITED, log_file_name, parse_log_file_name
from aiowal.fs import FS
from aiowal.keyregistry import KeyRegistry
from aiowal.logfile import LogFile
from aiowal.raftpb import Entry
from aiowal.steps import FdSync, Steps, SyncStep, Unlink

log = logging.getLogger(__name__)


class Wal:
    """Log files sorted by first index (``files[-1]`` is current) and the files written since the last sync."""

    def __init__(
        self,
        fs: FS,
        directory: str,
        writable: bool,
        registry: Callable[[], KeyRegistry] | None,
        keyless: bool = False,
    ) -> None:
        self.fs = fs
        self._keyless = keyless  # read-only, no key: encrypted files are checked but not decrypted
        self.dir = directory
        self.writable = writable
        self._registry = registry  # None: no encryption key was given
        self.files: list[LogFile] = []
        self.max_fid = 0
        # Written since the last completed sync (the tracking is cleared only once a sync succeeded).
        self._dirty: set[LogFile] = set()
        self._dir_dirty = False
        self.repairs: list[str] = []
        self.bytes_written = 0  # data-record bytes appended since open

    # --- opening ----------------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        fs: FS,
        directory: str,
        *,
        writable: bool,
        registry: Callable[[], KeyRegistry] | None,
        floor_fid: int,
        snapshot_index: int,
        durable_index: int | None,
        keyless: bool = False,
    ) -> Wal:
        """Open the log files of ``directory``, applying the recovery rule (``recovery``); a writable open makes
        its repairs durable, a read-only one only shows what they would keep."""
        wal = cls(fs, directory, writable, registry, keyless)
        try:
            wal._discover(floor_fid, snapshot_index, durable_index)
        except BaseException:
            wal.close()
            raise
        return wal

    def _discover(self, floor_fid: int, snapshot_index: int, durable: int | None) -> None:
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
            self._attach_key(lf)  # a key id no registry explains is damage, whatever else the file holds
        firsts = {lf: lf.peek_first_index() for lf in found}
        live = sorted((lf for lf in found if firsts[lf]), key=lambda lf: firsts[lf])
        empty = [lf for lf in found if not firsts[lf]]
        for lf, check in zip(live, recovery.needs_record_check(live, durable), strict=True):
            lf.load(validate_records=check)
        cut = recovery.find_cut(live, snapshot_index)
        current = self._current_among(empty, live)
        suspects = [lf.empty_reason() for lf in empty if lf is not current]
        if current is not None:
            current.load(validate_records=False)
            if current.problem is not None:  # used slots behind an empty slot 0: a crash's, or damage (the mark says)
                suspects.append(current.problem)
        recovery.check_cut(cut, live, durable, snapshot_index, suspects)
        if cut is not None:
            self._cut(live, cut, dead)
            live = live[: cut.pos + 1] if cut.keep else live[: cut.pos]
        current = self._current_among(empty, live)
        if current is not None:
            current.load(validate_records=False)
            if current.problem is not None:
                self._drop_stale_slots(current)
        for lf in empty:
            if lf is not current:
                dead.append(lf.path)
                lf.close()
        self.files = [*live, current] if current is not None else live
        if self.files and self.current.data_key is not None:
            # Data past the last slot may have reached the disk before a crash: new data never goes where it
            # might have been, so an encrypted log starts a new file at its first append after open.
            self.current.sealed = True
        if self.writable:
            for path in dead:
                log.info("removing %s: empty, past a torn tail, or discarded by a snapshot", path)
                self.fs.unlink(path)
                self._dir_dirty = True
            if not self.files:
                self._create_file()
            for step in self.sync_steps():
                step()

    def _current_among(self, empty: list[LogFile], live: list[LogFile]) -> LogFile | None:
        """The newest empty file, if it is newer than every live file and complete: a rotation or snapshot made it
        and nothing was written yet. (A file cut short while it was being created, or one without a key header when
        a key is given, is not: it is removed, so that no entry is ever written unencrypted.)"""
        if not empty:
            return None
        newest = max(empty, key=lambda lf: lf.fid)
        if newest.mm is None or newest.short or any(lf.fid > newest.fid for lf in live):
            return None
        if self._registry is not None and newest.data_key is None:
            return None
        return newest

    def _cut(self, live: list[LogFile], cut: recovery.Cut, dead: list[str]) -> None:
        """Drop what follows the valid log: the slots of ``live[cut.pos]`` from ``cut.keep`` on and the later
        files (only in memory when read-only)."""
        msg = f"{cut.reason}: a torn tail: the log ends at {cut.index - 1}; what follows no sync covered is dropped"
        self.repairs.append(msg)
        lf = live[cut.pos]
        if lf.data_key is not None:
            lf.sealed = True  # the cut region's keystream was used: never write there again
        doomed = live[cut.pos + 1 :] if cut.keep else live[cut.pos :]
        for later in doomed:
            dead.append(later.path)
            later.close()
        if not cut.keep:
            return
        if not self.writable:
            lf.forget_from(cut.keep)
            return
        log.warning("%s", msg)
        lf.cut_to(cut.keep)
        self._dirty.add(lf)

    def _drop_stale_slots(self, lf: LogFile) -> None:
        """The current file has no entry in slot 0 but used slots after it: a later slot write reached the disk and
        the one of slot 0 did not, so no sync covered either. They are cleared: the next append fills slot 0, and
        would otherwise bring them back after it."""
        msg = f"{lf.problem}: a torn tail: a log file with no entry in slot 0 holds none; its slots are cleared"
        self.repairs.append(msg)
        if self.writable:
            log.warning("%s", msg)
            lf.cut_to(0)
            self._dirty.add(lf)

    def _attach_key(self, lf: LogFile) -> None:
        key_id, base_iv = lf.header_key_id()
        if key_id == 0:
            return
        registry_path = os.path.join(self.dir, KEY_REGISTRY_NAME)
        where = f"{lf.path}: offset {ENC_OFFSET}"
        if self._registry is None:
            if self._keyless:
                lf.key_id = key_id
                return
            if not self.fs.exists(registry_path):
                raise CorruptionError(
                    f"{where}: key id {key_id} in the encryption header, but the directory has no {KEY_REGISTRY_NAME}:"
                    " a damaged log file (or a lost key registry)"
                )
            raise EncryptionKeyError(f"{lf.path}: Logfile is encrypted but encryption key is nil")
        registry = self._registry()
        if not registry.exists:
            raise CorruptionError(f"{registry_path}: missing, but {lf.path} is encrypted with data key {key_id}")
        if not registry.has(key_id):
            raise CorruptionError(
                f"{where}: data key {key_id} is not in {registry_path} (the key registry or this file is damaged)"
            )
        lf.key_id = key_id
        lf.data_key = registry.data_key(key_id)
        lf.base_iv = base_iv

    def limit_view(self, last: int) -> None:
        """Read-only: show no entry past ``last``."""
        for lf in self.files:
            if lf.count and lf.last > last:
                lf.forget_from(lf.slot_ge(last + 1))

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

    def last_term(self) -> int:
        for lf in reversed(self.files):
            if lf.count:
                return lf.last_term
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
    def append_steps(self, entries: Sequence[Entry], durable: bool) -> Steps:
        """Write ``entries``; the first may overwrite the log from its index on (the caller checked gaps and made
        the cut durable first when it must be). Rotations yield their syncs for the caller to run."""
        if not entries:
            return
        first = entries[0].index
        if self.files and first <= self.last_index():
            yield from self.truncate_from(first)
        i = 0
        while i < len(entries):
            cur = self.files[-1] if self.files else None
            if cur is None or cur.sealed:
                cur = yield from self.rotate_steps(durable)
            before = cur.data_end
            stop = cur.append(entries, i)
            if stop == i:
                yield from self.rotate_steps(durable)
                continue
            self.bytes_written += cur.data_end - before
            self._dirty.add(cur)
            i = stop

    def rotate_steps(self, durable: bool) -> Generator[SyncStep, None, LogFile]:
        """Close the current file at its data end and start a new current file. With ``durable`` the full file is
        synced first (as Dgraph does): the write's final sync would cover it anyway, this only keeps a file
        followed by another from ever being torn. Without it nothing is synced for a plain log (recovery checks
        every file past the durable mark, and a new file cut short holds nothing it would keep); an encrypted new
        file's key header is always synced before any record goes there (see ``_create_file``)."""
        if self.files:
            old = self.files[-1]
            if old.count == 0:
                self.files.pop()
                yield self._forget([old])
            else:
                if old.size != old.data_end:
                    old.resize(old.data_end)
                if durable:
                    yield from self._sync_files([old])
        lf = self._create_file()
        if durable or lf.data_key is not None:
            yield from self._sync_files([lf])
        return lf

    def _create_file(self) -> LogFile:
        """Create the next log file and make it current. An encrypted file's header must reach the disk before
        any record does (the caller syncs it): a crash could otherwise leave encrypted records in a file whose key
        id reads 0, which would be read as plaintext. With durability the size is synced too, so that a file
        holding acknowledged entries is never shorter than its header."""
        self.max_fid += 1
        path = os.path.join(self.dir, log_file_name(self.max_fid))
        if self._registry is not None:
            dk = self._registry().latest_data_key()
            lf = LogFile.create(self.fs, path, self.max_fid, dk.key_id, dk.key)
        else:
            lf = LogFile.create(self.fs, path, self.max_fid)
        self.files.append(lf)
        self._dirty.add(lf)
        self._dir_dirty = True
        return lf

    def truncate_from(self, index: int) -> Steps:
        """Discard every entry with index >= ``index``: later files are deleted, the file holding ``index`` keeps
        what precedes it. Nothing is synced here: a caller that needs the cut durable syncs next."""
        pos = yield from self.drop_files_after(index)
        lf = self.files[pos]
        lf.truncate_from(lf.slot_ge(index))
        if lf.data_key is not None:
            lf.sealed = True  # new data must not reuse this file's keystream
        self._dirty.add(lf)
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

    def start_fresh_file(self) -> Generator[SyncStep, None, LogFile]:
        """Start a fresh current file for a log that a snapshot discards (its header sync is yielded); the old
        files stay until ``drop_older_than`` (after the snapshot is committed in wal.meta)."""
        lf = self._create_file()
        yield from self._sync_files([lf])
        return lf

    def drop_older_than(self, fid: int) -> Steps:
        dead = [lf for lf in self.files if lf.fid < fid]
        self.files = [lf for lf in self.files if lf.fid >= fid]
        if dead:
            yield self._forget(dead)

    def _forget(self, dead: list[LogFile]) -> Unlink:
        """Close files already taken out of ``files``; the step unlinks them in the given order (slow for big
        files, so it is a step: the asyncio writer runs it off the loop)."""
        for lf in dead:
            self._dirty.discard(lf)
            lf.close()
        self._dir_dirty = True
        return Unlink(self.fs, [lf.path for lf in dead])

    def drop_data_until(self, index: int) -> Steps:
        """truncate_entries_until: drop the data of Normal entries below ``index``. Each record first gets the
        dropped-data mark in its slot, which is synced before any length is zeroed, with or without durability:
        a length that reached the disk before its mark would fail its record check. A marked slot accepts its
        record's data whole or none without checking it, so records no sync covered yet (written without
        durability) are synced before any mark is written."""
        yield from self._sync_files([lf for lf in self.files if lf.count and lf.first < index and lf in self._dirty])
        touched: list[tuple[LogFile, int]] = []
        for lf in self.files:
            for s in range(lf.count):
                if lf.index_at(s) >= index:
                    break
                if lf.drop_data(s):
                    touched.append((lf, s))
        files = list(dict.fromkeys(lf for lf, _ in touched))
        self._dirty.update(files)
        yield from self._sync_files(files)
        for lf, s in touched:
            lf.zero_length(s)
            if lf.data_key is not None and s == lf.count - 1:
                lf.sealed = True
        self._dirty.update(files)

    # --- syncing ----------------------------------------------------------------------------------------------
    def sync_steps(self) -> Steps:
        """One ``FdSync`` over every file written since the last sync, and the directory if files came or went.
        The tracking is cleared only after the step ran: a failed sync leaves the files to be synced."""
        files = list(self._dirty)
        dir_dirty = self._dir_dirty
        if not files and not dir_dirty:
            return
        yield FdSync(self.fs, [lf.fd for lf in files], self.dir if dir_dirty else None)
        self._dirty.difference_update(files)
        if dir_dirty:
            self._dir_dirty = False

    def dir_sync_steps(self) -> Steps:
        """A sync of the directory alone, if files came or went since the last one."""
        if self._dir_dirty:
            yield FdSync(self.fs, [], self.dir)
            self._dir_dirty = False

    def sync_all_steps(self) -> Steps:
        """A sync of every live file, written by this process or not (to start a durable mark in a directory that
        has none), and of the directory."""
        yield FdSync(self.fs, [lf.fd for lf in self.files], self.dir)
        self._dirty.clear()
        self._dir_dirty = False

    def _sync_files(self, files: Sequence[LogFile]) -> Steps:
        if files:
            yield FdSync(self.fs, [lf.fd for lf in files])
            self._dirty.difference_update(files)

    @property
    def written_since_sync(self) -> bool:
        return bool(self._dirty) or self._dir_dirty

    def close(self) -> None:
        for lf in self.files:
            lf.close()
        self.files = []
