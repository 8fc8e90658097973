"""``DiskStorage``: etcd's raft ``Storage`` contract over a Dgraph-compatible WAL directory.

A write is a generator of steps (``steps``) so that the same code serves the synchronous API and the asyncio
writer: file changes go through the page cache, and each blocking call it needs is yielded for the driver to run
(at once here, off the event loop in ``AsyncDiskStorage``). ``commit_steps`` is the one place that orders a save's
durability: the log, then the HardState with the durable mark, then ``wal.meta`` when term or vote changed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self

from aiowal import checks, readonly
from aiowal.errors import (
    CompactedError,
    CorruptionError,
    SnapOutOfDateError,
    StorageClosedError,
    StorageError,
    StorageFailedError,
    StorageIOError,
    UnavailableError,
)
from aiowal.format import KEY_REGISTRY_NAME, META_NAME
from aiowal.fs import DEFAULT_FS, FS
from aiowal.keyregistry import KeyRegistry, check_key
from aiowal.meta import META_TMP_NAME, Meta, MetaInfo, NewMetaFile, full_hard_state, full_snapshot
from aiowal.raftpb import ConfState, Entry, HardState, Snapshot
from aiowal.steps import Call, FdSync, Steps, SyncStep
from aiowal.wal import Wal

log = logging.getLogger(__name__)


class SavePlan:
    """A checked save: the entries left after trimming, the snapshot to install, the HardState to write, and the
    log's last index and term once it is written."""

    __slots__ = ("entries", "hard_state", "last_index", "last_term", "snapshot")

    def __init__(
        self,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        hard_state: HardState | None,
        last_index: int,
        last_term: int,
    ) -> None:
        self.entries = entries
        self.snapshot = snapshot
        self.hard_state = hard_state
        self.last_index = last_index
        self.last_term = last_term

    def appends_after(self, last_index: int) -> bool:
        """Whether the plan only appends right after ``last_index`` (so it can be written together with others)."""
        return self.snapshot is None and (not self.entries or self.entries[0].index == last_index + 1)

    @classmethod
    def merged(cls, plans: Sequence[SavePlan]) -> SavePlan:
        """One plan writing the entries of ``plans`` (appends, each right after the one before) back to back."""
        entries = [e for plan in plans for e in plan.entries]
        return cls(entries, None, None, plans[-1].last_index, plans[-1].last_term)


class DiskStorage:
    """A Raft log in a Dgraph ``raftwal`` directory. Thread-safe; see ``docs/api.md``."""

    def __init__(self, path: str, meta: Meta, wal: Wal, lock_fd: int | None, fs: FS, hard_sync: bool) -> None:
        self.path = path
        self._meta = meta
        self._wal = wal
        self._lock_fd = lock_fd
        self._fs = fs
        self.hard_sync = hard_sync
        self.read_only = lock_fd is None
        self._mutex = threading.RLock()
        self._closed = False
        self._failed: str | None = None
        self._commit_clamp: int | None = None
        # Read-only, beside a live writer: the mark's count of lowerings when the view was taken (see _check_view).
        self._view_mark: int | None = None
        self.repairs: list[str] = [*meta.repairs, *wal.repairs]

    # --- opening and closing ----------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        key: bytes | None = None,
        hard_sync: bool = True,
        read_only: bool = False,
        fs: FS | None = None,
    ) -> DiskStorage:
        """Open (creating if missing) the WAL directory at ``path``; see ``docs/api.md``."""
        path = checks.check_path(path)
        checks.check_flag(hard_sync, "hard_sync")
        checks.check_flag(read_only, "read_only")
        if fs is not None and not isinstance(fs, FS):
            raise TypeError(f"fs must be an aiowal.fs.FS, not {type(fs).__name__}")
        fs = fs or DEFAULT_FS
        master = check_key(key)
        if os.path.exists(path) and not os.path.isdir(path):
            raise StorageError(f"{path}: not a directory")
        if not read_only:
            fs.makedirs(path)
            return cls._open_once(path, master, hard_sync, fs, fs.lock_dir(path))
        if not os.path.isdir(path):
            raise StorageError(f"{path}: no such WAL directory")
        return cls._open_read_only(path, master, fs, keyless=False)

    @classmethod
    def open_without_key(cls, path: str | os.PathLike[str], *, fs: FS | None = None) -> DiskStorage:
        """A read-only open that needs no key: encrypted log files are checked as open checks them (a record's
        checksum covers its stored bytes) and ``record_problems`` works, but their entries cannot be read
        (``EncryptionKeyError``). For ``aiowal verify`` without ``--key-file``."""
        path = checks.check_path(path)
        if not os.path.isdir(path):
            raise StorageError(f"{path}: no such WAL directory")
        return cls._open_read_only(path, None, fs or DEFAULT_FS, keyless=True)

    @classmethod
    def _open_read_only(cls, path: str, master: bytes | None, fs: FS, keyless: bool) -> DiskStorage:
        return readonly.open_consistent(path, lambda: cls._open_once(path, master, False, fs, None, keyless))

    @classmethod
    def _open_once(
        cls, path: str, master: bytes | None, hard_sync: bool, fs: FS, lock_fd: int | None, keyless: bool = False
    ) -> DiskStorage:
        read_only = lock_fd is None
        meta: Meta | None = None
        wal: Wal | None = None
        try:
            registry_cache: list[KeyRegistry] = []

            def registry() -> KeyRegistry:
                if not registry_cache:
                    assert master is not None
                    registry_cache.append(KeyRegistry(fs, path, master))
                return registry_cache[0]

            if master is not None and os.path.exists(os.path.join(path, KEY_REGISTRY_NAME)):
                registry()  # a wrong key fails here, before anything is read or written
            meta_path = os.path.join(path, META_NAME)
            has_logs = any(n.endswith(".wal") for n in fs.listdir(path))
            if not read_only and os.path.exists(os.path.join(path, META_TMP_NAME)):
                fs.unlink(os.path.join(path, META_TMP_NAME))  # an unfinished snapshot rewrite: the old meta stands
            if os.path.exists(meta_path) and os.path.getsize(meta_path) > 0:
                meta = Meta.open(fs, path, writable=not read_only)
            elif has_logs:
                raise CorruptionError(f"{meta_path}: offset 0: wal.meta is missing or empty beside log files")
            elif read_only:
                raise StorageError(f"{path}: not a WAL directory (no wal.meta)")
            else:
                meta = Meta.create(fs, path)
            wal = Wal.open(
                fs,
                path,
                writable=not read_only,
                registry=registry if master else None,
                floor_fid=meta.floor_fid,
                snapshot_index=meta.snapshot_index,
                durable_index=meta.durable_index,
                keyless=keyless,
            )
            st = cls(path, meta, wal, lock_fd, fs, hard_sync)
            if read_only and meta.durable_index is not None and fs.dir_in_use(path):
                st._follow_writer(meta.durable_index, meta.mark_lowered)
            st._recover()
            return st
        except BaseException:
            if wal is not None:
                wal.close()
            if meta is not None:
                meta.close()
            if lock_fd is not None:
                fs.unlock_dir(lock_fd)
            raise

    def _follow_writer(self, durable: int, lowered: int) -> None:
        """A read-only view of a directory a writer has open shows what that writer had made durable (entries up to
        the durable mark) and checks after each read that the writer has not since overwritten any of it."""
        self._view_mark = lowered
        self._wal.limit_view(max(durable, self._meta.snapshot_index))

    def _check_view(self) -> None:
        """After a read of a read-only view beside a live writer: the entries it returned are still the log's, or
        ``StorageError`` says the writer replaced them (the view must be reopened)."""
        if self._view_mark is None:
            return
        durable, lowered = self._meta.read_durable_mark()
        if durable is None or lowered != self._view_mark:
            raise StorageError(
                f"{self.path}: the writer replaced entries (an overwrite, or a snapshot through save) since this"
                " read-only view was taken; reopen it to read the current log"
            )

    def _recover(self) -> None:
        """Dgraph's clean-up on open (delete files below the snapshot) plus aiowal's repairs, logged."""
        if not self.read_only:
            self._meta.repair()
            si = self._meta.snapshot_index
            if si:
                before = len(self._wal.files)
                self._run(self._wal.delete_before(si))
                if len(self._wal.files) != before:
                    log.info("%s: removed %d log files below snapshot %d", self.path, before - len(self._wal.files), si)
                    self._run(self._wal.dir_sync_steps())
        hs = self._meta.hard_state
        top = self._last_index()
        if hs.commit > top:
            # Dgraph #9111, or a power cut without hard_sync: a commit index past the durable log. Raft cannot start
            # from it; the true commit is re-learned from the leader, so the log's end is stored in its place.
            msg = f"{self._meta.path}: HardState commit {hs.commit} is past the last index {top}; commit set to {top}"
            self.repairs.append(msg)
            if self.read_only:
                self._commit_clamp = top
            else:
                log.warning("%s", msg)
                self._meta.store_hard_state(HardState(term=hs.term, vote=hs.vote, commit=top), None)
                self._run(self._meta_sync_steps())

    def close(self) -> None:
        """Sync, release the mappings, files and the directory lock. Idempotent."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            try:
                if not self.read_only and self._failed is None:
                    self._run(self._sync_steps())
            finally:
                self._release()

    def _release(self) -> None:
        self._wal.close()
        self._meta.close()
        if self._lock_fd is not None:
            lock_fd, self._lock_fd = self._lock_fd, None
            self._fs.unlock_dir(lock_fd)

    def __del__(self) -> None:
        if getattr(self, "_closed", True):
            return
        warnings.warn(f"unclosed DiskStorage {self.path!r}", ResourceWarning, stacklevel=2, source=self)
        with contextlib.suppress(Exception):
            self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def fs(self) -> FS:
        """The file-system seam every call of this storage goes through."""
        return self._fs

    @property
    def failed(self) -> bool:
        """Whether a write failed: further writes are refused until the storage is reopened."""
        return self._failed is not None

    @property
    def bytes_written(self) -> int:
        """Bytes of data records (length prefixes included) appended since open."""
        return self._wal.bytes_written

    # --- guards -----------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosedError(f"{self.path}: storage is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise StorageError(f"{self.path}: opened read-only")
        if self._failed is not None:
            raise StorageFailedError(f"{self.path}: {self._failed}; reopen the storage to continue")

    def fail(self, exc: BaseException) -> None:
        """Refuse further writes: an I/O error left the files (or the page cache) in a state we cannot trust."""
        if self._failed is None:
            self._failed = f"an earlier write failed ({exc})"
            log.error("%s: writes disabled until reopen: %s", self.path, exc)

    def advance(self, steps: Steps) -> SyncStep | None:
        """Run a write up to its next blocking step, under the storage's lock; None once the write is done. The
        caller runs the step (where it likes) and calls ``fail`` if it raised."""
        with self._mutex:
            try:
                return next(steps)
            except StopIteration:
                return None
            except StorageIOError as exc:
                self.fail(exc)
                raise

    def _run(self, steps: Steps) -> None:
        """Drive a write's steps, running each at once (the synchronous API)."""
        try:
            while (step := self.advance(steps)) is not None:
                try:
                    step()
                except StorageIOError as exc:
                    self.fail(exc)
                    raise
        finally:
            steps.close()

    # --- reads ------------------------------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        with self._mutex:
            self._check_open()
            cs = ConfState()
            cs.CopyFrom(self._meta.snapshot.metadata.conf_state)
            return self.hard_state(), cs

    def hard_state(self) -> HardState:
        with self._mutex:
            self._check_open()
            hs = full_hard_state(self._meta.hard_state)
            if self._commit_clamp is not None and hs.commit > self._commit_clamp:
                hs.commit = self._commit_clamp
            # Never below the snapshot: a snapshot holds only committed entries (Raft cannot start otherwise). An
            # empty HardState stays empty, as Dgraph returns it: Raft does not load one (etcd's IsEmptyHardState).
            if hs.term or hs.vote or hs.commit:
                hs.commit = max(hs.commit, self._meta.snapshot_index)
            return hs

    def first_index(self) -> int:
        with self._mutex:
            self._check_open()
            return self._first_index()

    def _first_index(self) -> int:
        si = self._meta.snapshot_index
        return si + 1 if si else max(self._wal.first_index(), 1)

    def last_index(self) -> int:
        with self._mutex:
            self._check_open()
            return self._last_index()

    def _last_index(self) -> int:
        return max(self._wal.last_index(), self._meta.snapshot_index)

    def term(self, i: int) -> int:
        """The term of entry ``i``, for ``first_index() - 1 <= i <= last_index()``."""
        checks.check_index(i, "i")
        with self._mutex:
            self._check_open()
            term = self._term(i)
            self._check_view()
            return term

    def _term(self, i: int) -> int:
        si = self._meta.snapshot_index
        if i == si:
            return self._meta.snapshot_term
        if i < si:
            raise CompactedError()
        t = self._wal.term(i)
        if t is not None:
            return t
        if i > self._last_index():
            raise UnavailableError()
        if i < self._first_index():
            raise CompactedError()
        raise UnavailableError(f"no entry at index {i} (a gap in the log)")

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)``: at least one if any, then as many as fit in ``max_size`` bytes."""
        checks.check_index(lo, "lo")
        checks.check_index(hi, "hi")
        if max_size is not None:
            checks.check_index(max_size, "max_size")
        if lo > hi:
            raise ValueError(f"invalid range: lo {lo} > hi {hi}")
        with self._mutex:
            self._check_open()
            if lo < self._first_index():
                raise CompactedError()
            if hi > self._last_index() + 1:
                raise UnavailableError(f"entries up to {hi - 1} requested, last index is {self._last_index()}")
            out = self._wal.entries(lo, hi, max_size)
            self._check_view()
            return out

    def snapshot(self) -> Snapshot:
        with self._mutex:
            self._check_open()
            snap = Snapshot()
            snap.CopyFrom(self._meta.snapshot)
            return snap

    def uint(self, info: MetaInfo) -> int:
        info = checks.check_info(info)
        with self._mutex:
            self._check_open()
            return self._meta.uints[info]

    def checkpoint(self) -> int:
        return self.uint(MetaInfo.CHECKPOINT_INDEX)

    def num_entries(self) -> int:
        """Entries physically present in the log files (Dgraph's NumEntries)."""
        with self._mutex:
            self._check_open()
            return self._wal.num_entries()

    def num_log_files(self) -> int:
        """Log files other than the current one (Dgraph's NumLogFiles)."""
        with self._mutex:
            self._check_open()
            return self._wal.num_log_files()

    def durable_index(self) -> int | None:
        """The durable mark: every entry up to it was covered by a completed sync (None: the directory has none)."""
        with self._mutex:
            self._check_open()
            return self._meta.durable_index

    def log_files(self) -> list[dict[str, Any]]:
        """A description of each log file (for ``aiowal info``)."""
        with self._mutex:
            self._check_open()
            out = []
            for lf in self._wal.files:
                st = os.fstat(lf.fd)  # (the writer of a live directory may have deleted the file since)
                out.append(
                    {
                        "name": os.path.basename(lf.path),
                        "fid": lf.fid,
                        "first": lf.first,
                        "last": lf.last,
                        "entries": lf.count,
                        "data_end": lf.data_end,
                        "apparent_size": st.st_size,
                        "allocated_size": st.st_blocks * 512,
                        "encrypted": lf.data_key is not None or lf.key_id != 0,
                    }
                )
            return out

    def record_problems(self, progress: Callable[[int], None] | None = None) -> list[str]:
        """Every record whose bounds or checksum are wrong, in every log file (``aiowal verify``'s deep check;
        open checks only the files a crash can have torn). ``progress`` is told each file's entry count."""
        with self._mutex:
            self._check_open()
            out = []
            for lf in self._wal.files:
                out.extend(lf.record_problems())
                if progress is not None:
                    progress(lf.count)
            return out

    # --- saves ------------------------------------------------------------------------------------------------
    def save(
        self,
        hard_state: HardState | None = None,
        entries: Iterable[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        """Persist one Raft ``Ready``: snapshot, then entries, then HardState (see ``docs/api.md``)."""
        with self._mutex:
            plan = self.plan_save(hard_state, entries, snapshot)
            self._run(self.save_steps(plan))

    def plan_save(
        self,
        hard_state: HardState | None,
        entries: Iterable[Entry],
        snapshot: Snapshot | None,
        after: SavePlan | None = None,
    ) -> SavePlan:
        """Check a save against the current state, or against the state once ``after`` (an append planned
        earlier and not yet written) is written. Nothing is written; every error is raised here."""
        if hard_state is not None and not isinstance(hard_state, HardState):
            raise TypeError(f"hard_state must be a raftpb.HardState, not {type(hard_state).__name__}")
        if snapshot is not None and not isinstance(snapshot, Snapshot):
            raise TypeError(f"snapshot must be a raftpb.Snapshot, not {type(snapshot).__name__}")
        ents = entries if isinstance(entries, list) else list(entries)
        checks.check_entries(ents)
        with self._mutex:
            self._check_writable()
            si = self._meta.snapshot_index
            snap = snapshot if snapshot is not None and snapshot.metadata.index else None
            if snap is not None:
                if snap.metadata.index <= si:
                    raise SnapOutOfDateError()
                floor, floor_term = snap.metadata.index, snap.metadata.term
                last, last_term = floor, floor_term
            else:
                floor, floor_term = si, self._meta.snapshot_term
                if after is not None:
                    last, last_term = after.last_index, after.last_term
                else:
                    last, last_term = self._last_index(), self._last_term()
            if ents and ents[0].index <= floor:
                ents = ents[floor - ents[0].index + 1 :]
            if ents:
                first = ents[0].index
                if first > last + 1:
                    raise ValueError(f"entries start at {first}, past last index {last} + 1: a gap")
                if first == last + 1:
                    prev_term = last_term
                else:
                    prev_term = floor_term if first == floor + 1 else self._term(first - 1)
                checks.check_terms(ents, prev_term, floor_term)
                last, last_term = ents[-1].index, ents[-1].term
            hs = hard_state if hard_state is not None and checks.nonempty(hard_state) else None
            if hs is not None and hs.commit > last:
                raise ValueError(f"HardState commit {hs.commit} is past the last index {last} after this save")
            return SavePlan(ents, snap, hs, last, last_term)

    def _last_term(self) -> int:
        if self._wal.last_index() >= self._meta.snapshot_index and self._wal.last_index():
            return self._wal.last_term()
        return self._meta.snapshot_term

    def save_steps(self, plan: SavePlan) -> Steps:
        """All of one save: its log part, then its commit."""
        yield from self.write_steps(plan)
        yield from self.commit_steps([plan])

    def write_steps(self, plan: SavePlan) -> Steps:
        """The log part of a save: install its snapshot (discarding the log) and write its entries. Nothing is
        durable yet: ``commit_steps`` follows."""
        self._check_writable()
        durable = self.hard_sync
        yield from self._start_mark_steps()
        if plan.snapshot is not None:
            fresh = yield from self._wal.start_fresh_file()
            if durable:
                yield from self._wal.sync_steps()
            yield from self._switch_snapshot(plan.snapshot, fresh.fid)
            yield from self._wal.drop_older_than(fresh.fid)
        if plan.entries:
            first = plan.entries[0].index
            if first <= self._wal.last_index():
                yield from self._overwrite_steps(first)
            yield from self._wal.append_steps(plan.entries, durable)

    def _overwrite_steps(self, first: int) -> Steps:
        """Before entries from ``first`` on are replaced: the durable mark goes below ``first`` (synced: the new
        entries are not covered by any sync yet), and the cut is on disk before new data lands, with or without
        durability, so that a crash never shows old entries beside new ones (a log Raft's matching rule would
        trust). Later files go first (their deletion synced): the cut of the file holding ``first`` can never
        reach the disk while they are still there, leaving a gap. Overwrites are rare (a new leader's), so the
        non-durable mode pays these syncs too."""
        mark = self._meta.durable_index
        if mark is not None and first <= mark:
            self._meta.store_hard_state(None, first - 1)
            yield from self._meta_sync_steps()
        yield from self._wal.drop_files_after(first)
        yield from self._wal.sync_steps()
        yield from self._wal.truncate_from(first)
        yield from self._wal.sync_steps()

    def commit_steps(self, plans: Sequence[SavePlan]) -> Steps:
        """Make saves whose log part is written durable, in the one order that keeps a crash safe: the log (one
        sync for all of them), then the last HardState with the durable mark in one sector, then ``wal.meta``'s
        sync when term or vote changed (a change of commit alone waits for the next one: etcd's ``MustSync``).
        Refuses with ``StorageFailedError`` if any write or sync failed since: the saves never became durable."""
        self._check_writable()
        hs = next((p.hard_state for p in reversed(plans) if p.hard_state is not None), None)
        cur = self._meta.hard_state
        changed = hs is not None and (hs.term, hs.vote, hs.commit) != (cur.term, cur.vote, cur.commit)
        must_sync = hs is not None and (hs.term, hs.vote) != (cur.term, cur.vote)
        if not self.hard_sync:
            if changed:
                self._store_hard_state(hs, None)
            return
        yield from self._wal.sync_steps()
        last = self._last_index()
        if changed or self._meta.durable_index != last:
            self._store_hard_state(hs if changed else None, last)
        if must_sync:
            yield from self._meta_sync_steps()

    def _store_hard_state(self, hs: HardState | None, durable_index: int | None) -> None:
        self._meta.store_hard_state(hs, durable_index)
        if hs is not None:
            self._commit_clamp = None

    def _start_mark_steps(self) -> Steps:
        """A directory without a durable mark (written by Dgraph) gets one before aiowal's first write to it:
        every live file synced, then the mark at the log's end. Recovery can then tell a torn tail in any file."""
        if self._meta.durable_index is None:
            yield from self._wal.sync_all_steps()
            self._meta.store_hard_state(None, self._last_index())
            yield from self._meta_sync_steps()

    def _switch_snapshot(self, snap: Snapshot, floor: int | None) -> Steps:
        """Switch wal.meta to one holding ``snap``: the new file is written (a step: it may be large), synced, and
        renamed over the old one; the switch in memory follows, then the directory's sync, with or without
        ``hard_sync``: a snapshot is durable when it returns (a later ``sync()`` syncs the directory only if log files
        came or went), and a save's entries after its snapshot never reach the disk before the switch (they would
        follow the old log)."""
        meta = self._meta
        written: Call[NewMetaFile] = Call(lambda: meta.write_snapshot_file(snap, floor))
        yield written
        new = written.result
        try:
            yield FdSync(self._fs, [new.fd])
            yield Call(meta.install)
        except BaseException:
            self._fs.close(new.fd)
            raise
        meta.adopt(new)  # here, not in a step: a reader sees the old snapshot or the new, never a mix
        yield FdSync(self._fs, [], self.path)

    def _meta_sync_steps(self) -> Steps:
        yield FdSync(self._fs, [self._meta.fd])

    def _sync_steps(self) -> Steps:
        """Everything written so far durable: the log files, then the durable mark at the log's end with
        wal.meta's sync."""
        yield from self._wal.sync_steps()
        last = self._last_index()
        if self._meta.durable_index is not None and self._meta.durable_index != last:
            self._meta.store_hard_state(None, last)
        yield from self._meta_sync_steps()

    # --- other writes -----------------------------------------------------------------------------------------
    def create_snapshot(self, i: int, conf_state: ConfState | None, data: bytes | None) -> None:
        """Store a snapshot at ``i`` and delete the log files wholly below it."""
        with self._mutex:
            self._run(self.create_snapshot_steps(i, conf_state, data))

    def create_snapshot_steps(self, i: int, conf_state: ConfState | None, data: bytes | None) -> Steps:
        checks.check_index(i, "i")
        if conf_state is not None and not isinstance(conf_state, ConfState):
            raise TypeError(f"conf_state must be a raftpb.ConfState, not {type(conf_state).__name__}")
        if data is not None and not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        self._check_writable()
        if i < self._first_index() or i <= self._meta.snapshot_index:
            raise SnapOutOfDateError()
        if i > self._last_index():
            raise UnavailableError(f"snapshot index {i} is past the last index {self._last_index()}")
        term = self._wal.term(i)
        if term is None:
            raise CompactedError(f"no entry at index {i} to snapshot")
        snap = full_snapshot(bytes(data) if data is not None else None, i, term, conf_state or ConfState())
        yield from self._switch_snapshot(snap, None)
        yield from self._wal.delete_before(i)
        if self.hard_sync:
            yield from self._wal.dir_sync_steps()

    def truncate_entries_until(self, i: int) -> None:
        """Drop the data of Normal entries below ``i`` (their index, term and type stay)."""
        with self._mutex:
            self._run(self.truncate_steps(i))

    def truncate_steps(self, i: int) -> Steps:
        checks.check_index(i, "i")
        self._check_writable()
        yield from self._start_mark_steps()
        yield from self._wal.drop_data_until(i)
        if self.hard_sync:
            yield from self._wal.sync_steps()

    def set_uint(self, info: MetaInfo, value: int) -> None:
        with self._mutex:
            self._run(self.set_uint_steps(info, value))

    def set_uint_steps(self, info: MetaInfo, value: int) -> Steps:
        info = checks.check_info(info)
        checks.check_index(value, "value")
        if value > checks.U64_MAX:
            raise ValueError(f"value {value} does not fit in 64 bits")
        if info in (MetaInfo.SNAPSHOT_INDEX, MetaInfo.SNAPSHOT_TERM):
            raise ValueError(f"{info.name} is kept by snapshots; use save() or create_snapshot()")
        self._check_writable()
        self._meta.set_uint(info, value)
        if self.hard_sync:
            yield from self._meta_sync_steps()

    def sync(self) -> None:
        """Make everything written so far durable: log files, then wal.meta."""
        with self._mutex:
            self._run(self.sync_steps())

    def sync_steps(self) -> Steps:
        self._check_writable()
        return self._sync_steps()
