"""``DiskStorage``: etcd's raft ``Storage`` contract over a Dgraph-compatible WAL directory.

A write is split into steps so that the same code serves the synchronous API and the asyncio writer: each step
changes files through the page cache, and every ``fdatasync`` it needs is handed out as a ``SyncStep`` that the
caller runs (at once here, in its sync thread in ``AsyncDiskStorage``). Durability order inside a save: snapshot,
entries, HardState; a HardState never reaches the disk before the entries its commit index covers.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import Any, Self

from aiowal import speedups
from aiowal.errors import (
    CompactedError,
    CorruptionError,
    StorageClosedError,
    StorageError,
    StorageFailedError,
    StorageIOError,
    UnavailableError,
)
from aiowal.errors import SnapOutOfDateError as SnapOutOfDateError
from aiowal.format import META_NAME
from aiowal.fs import DEFAULT_FS, FS
from aiowal.keyregistry import KeyRegistry, check_key
from aiowal.meta import META_TMP_NAME, Meta, MetaInfo, NewMetaFile, full_hard_state, full_snapshot
from aiowal.raftpb import ConfState, Entry, HardState, Snapshot
from aiowal.steps import FdSync, Steps, SyncStep
from aiowal.wal import Wal

log = logging.getLogger(__name__)

_U64_MAX = (1 << 64) - 1
_INDEX = attrgetter("index")


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
        self.repairs: list[str] = [*meta.repairs, *wal.repairs]

    # --- opening and closing ----------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        key: bytes | None = None,
        hard_sync: bool = False,
        read_only: bool = False,
        fs: FS | None = None,
    ) -> DiskStorage:
        """Open (creating if missing) the WAL directory at ``path``; see ``docs/api.md``."""
        fs = fs or DEFAULT_FS
        path = os.fspath(path)
        master = check_key(key)
        if read_only:
            if not os.path.isdir(path):
                raise StorageError(f"{path}: no such WAL directory")
        else:
            fs.makedirs(path)
        lock_fd = None if read_only else fs.lock_dir(path)
        meta: Meta | None = None
        wal: Wal | None = None
        try:
            registry_cache: list[KeyRegistry] = []

            def registry() -> KeyRegistry:
                if not registry_cache:
                    assert master is not None
                    registry_cache.append(KeyRegistry(fs, path, master))
                return registry_cache[0]

            if master is not None and os.path.exists(os.path.join(path, "KEYREGISTRY")):
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
                meta = Meta.create(fs, path, durable=True)
            wal = Wal.open(
                fs,
                path,
                writable=not read_only,
                registry=registry if master else None,
                floor_fid=meta.floor_fid,
                snapshot_index=meta.snapshot_index,
            )
            st = cls(path, meta, wal, lock_fd, fs, hard_sync)
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

    def _recover(self) -> None:
        """Dgraph's clean-up on open (delete files below the snapshot) plus aiowal's repairs, logged."""
        if not self.read_only:
            self._meta.repair()
            si = self._meta.snapshot_index
            if si:
                before = len(self._wal.files)
                for step in self._wal.delete_before(si):
                    step()
                if len(self._wal.files) != before:
                    log.info(
                        "%s: removed %d log files below snapshot %d",
                        self.path,
                        before - len(self._wal.files),
                        si,
                    )
                    self._wal.sync()
        hs = self._meta.hard_state
        top = max(self._wal.last_index(), self._meta.snapshot_index)
        if hs.commit > top:
            # Dgraph #9111: a commit index past the durable log (Dgraph does not order its syncs). Raft cannot
            # start from it; the true commit is re-learned from the leader, so report what the log holds.
            msg = f"HardState commit {hs.commit} is past the last index {top}; reporting commit {top}"
            log.warning("%s: %s", self.path, msg)
            self.repairs.append(msg)
            self._commit_clamp = top

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
                self._wal.close()
                self._meta.close()
                if self._lock_fd is not None:
                    self._fs.unlock_dir(self._lock_fd)
                    self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

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

    def _run(self, steps: Steps) -> None:
        """Drive a write's steps, running each sync at once (the synchronous API)."""
        try:
            for step in steps:
                step()
        except StorageIOError as exc:
            self.fail(exc)
            raise

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
        _check_index(i, "i")
        with self._mutex:
            self._check_open()
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
        _check_index(lo, "lo")
        _check_index(hi, "hi")
        if max_size is not None:
            _check_index(max_size, "max_size")
        if lo > hi:
            raise ValueError(f"invalid range: lo {lo} > hi {hi}")
        with self._mutex:
            self._check_open()
            if lo < self._first_index():
                raise CompactedError()
            if hi > self._last_index() + 1:
                raise UnavailableError(f"entries up to {hi - 1} requested, last index is {self._last_index()}")
            return self._wal.entries(lo, hi, max_size)

    def snapshot(self) -> Snapshot:
        with self._mutex:
            self._check_open()
            snap = Snapshot()
            snap.CopyFrom(self._meta.snapshot)
            return snap

    def uint(self, info: MetaInfo) -> int:
        info = _check_info(info)
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

    def log_files(self) -> list[dict[str, Any]]:
        """A description of each log file (for ``aiowal info``)."""
        with self._mutex:
            self._check_open()
            out = []
            for lf in self._wal.files:
                st = os.stat(lf.path)
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

    # --- writes -----------------------------------------------------------------------------------------------
    def save(
        self,
        hard_state: HardState | None = None,
        entries: Iterable[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        """Persist one Raft ``Ready``: snapshot, then entries, then HardState (see ``docs/api.md``)."""
        with self._mutex:
            plan = self.prepare_save(hard_state, entries, snapshot)
            self._run(self.save_steps(plan))

    def prepare_save(
        self,
        hard_state: HardState | None,
        entries: Iterable[Entry],
        snapshot: Snapshot | None,
        last_index: int | None = None,
    ) -> SavePlan:
        """Check a save's arguments against the current state; nothing is written. ``last_index`` stands for the
        log's last index when appends checked earlier are still to be written (the async writer's batches)."""
        self._check_writable()
        if hard_state is not None and not isinstance(hard_state, HardState):
            raise TypeError(f"hard_state must be a raftpb.HardState, not {type(hard_state).__name__}")
        if snapshot is not None and not isinstance(snapshot, Snapshot):
            raise TypeError(f"snapshot must be a raftpb.Snapshot, not {type(snapshot).__name__}")
        ents = entries if isinstance(entries, list) else list(entries)
        _check_entries(ents)
        snap = snapshot if snapshot is not None and snapshot.metadata.index else None
        if snap is not None and snap.metadata.index <= self._meta.snapshot_index:
            raise SnapOutOfDateError()
        if snap is not None:
            floor, last = snap.metadata.index, snap.metadata.index
        else:
            floor = self._meta.snapshot_index
            last = self._last_index() if last_index is None else last_index
        if ents and ents[0].index <= floor:
            ents = ents[floor - ents[0].index + 1 :]
        if ents and ents[0].index > last + 1:
            raise ValueError(f"entries start at {ents[0].index}, past last index {last} + 1: a gap")
        hs = (
            hard_state if hard_state is not None and (hard_state.term or hard_state.vote or hard_state.commit) else None
        )
        return SavePlan(ents, snap, hs)

    def save_steps(self, plan: SavePlan) -> Steps:
        """All of one save: its log part, a sync, then its HardState part."""
        yield from self.log_steps(plan)
        if self.hard_sync:
            step = self.log_sync_step()
            if step is not None:
                yield step
        if self.apply_hard_state(plan) and self.hard_sync:
            yield self.meta_sync_step()

    def log_steps(self, plan: SavePlan) -> Steps:
        """Install the plan's snapshot (discarding the log) and write its entries, without the final sync."""
        durable = self.hard_sync
        self._check_writable()
        if plan.snapshot is not None:
            fresh = yield from self._wal.discard_all_but_new_file()
            if durable:
                yield self.log_sync_step() or _noop
            yield from self._meta_rewrite(plan.snapshot, fresh.fid, durable)
            yield from self._wal.drop_older_than(fresh.fid)
        if plan.entries:
            if plan.entries[0].index <= self._wal.last_index() and durable:
                # An overwrite: the cut must be on disk before new data lands, so that a crash never shows old
                # entries after new ones. Later files go first (their deletion synced), so that the cut of the file
                # holding the index can never reach the disk while they are still there: that would be a gap.
                yield from self._wal.drop_files_after(plan.entries[0].index)
                step = self.log_sync_step()
                if step is not None:
                    yield step
                yield from self._wal.truncate_from(plan.entries[0].index)
                yield self.log_sync_step() or _noop
            yield from self._wal.append_steps(plan.entries)

    def _meta_rewrite(self, snap: Snapshot, floor: int | None, durable: bool) -> Steps:
        """Switch wal.meta to one holding ``snap``: the file work (temp file, its sync, rename) is one blocking step,
        the switch in memory follows it, and with ``durable`` the directory sync is a second step."""
        meta = self._meta
        written: list[NewMetaFile] = []
        yield lambda: written.append(meta.write_snapshot_file(snap, floor))
        meta.adopt(written[0])  # here, not in the step: a reader sees the old snapshot or the new, never a mix
        if durable:
            fs, path = self._fs, self.path
            yield lambda: fs.fsync_dir(path)

    def apply_hard_state(self, plan: SavePlan) -> bool:
        """Write the plan's HardState in place; returns whether it must be synced (term or vote changed)."""
        hs = plan.hard_state
        if hs is None:
            return False
        cur = self._meta.hard_state
        if (hs.term, hs.vote, hs.commit) == (cur.term, cur.vote, cur.commit):
            return False
        must_sync = hs.term != cur.term or hs.vote != cur.vote
        self._meta.store_hard_state(hs)
        self._commit_clamp = None
        return must_sync

    def log_sync_step(self) -> SyncStep | None:
        """A step that makes every log write so far durable, or None if there is nothing to sync."""
        wal = self._wal
        files = [lf.fd for lf in wal.dirty]
        dir_dirty = wal.dir_dirty
        if not files and not dir_dirty:
            return None
        wal.dirty.clear()
        wal.dir_dirty = False
        fs, path = self._fs, self.path
        data = FdSync(fs, files)
        if not dir_dirty:
            return data

        def step() -> None:
            data()
            fs.fsync_dir(path)

        return step

    def meta_sync_step(self) -> SyncStep:
        return FdSync(self._fs, [self._meta.fd])

    def _sync_steps(self) -> Steps:
        step = self.log_sync_step()
        if step is not None:
            yield step
        yield self.meta_sync_step()

    def create_snapshot(self, i: int, conf_state: ConfState | None, data: bytes | None) -> None:
        """Store a snapshot at ``i`` and delete the log files wholly below it."""
        with self._mutex:
            self._run(self.create_snapshot_steps(i, conf_state, data))

    def create_snapshot_steps(self, i: int, conf_state: ConfState | None, data: bytes | None) -> Steps:
        _check_index(i, "i")
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
        yield from self._meta_rewrite(snap, None, self.hard_sync)
        yield from self._wal.delete_before(i)
        if self.hard_sync and self._wal.dir_dirty:
            self._wal.dir_dirty = False
            fs, path = self._fs, self.path
            yield lambda: fs.fsync_dir(path)

    def truncate_entries_until(self, i: int) -> None:
        """Drop the data of Normal entries below ``i`` (their index, term and type stay)."""
        with self._mutex:
            self._run(self.truncate_steps(i))

    def truncate_steps(self, i: int) -> Steps:
        _check_index(i, "i")
        self._check_writable()
        yield from self._wal.drop_data_until(i, durable=self.hard_sync)
        if self.hard_sync:
            step = self.log_sync_step()
            if step is not None:
                yield step

    def set_uint(self, info: MetaInfo, value: int) -> None:
        with self._mutex:
            self._run(self.set_uint_steps(info, value))

    def set_uint_steps(self, info: MetaInfo, value: int) -> Steps:
        info = _check_info(info)
        _check_index(value, "value")
        if value > _U64_MAX:
            raise ValueError(f"value {value} does not fit in 64 bits")
        if info in (MetaInfo.SNAPSHOT_INDEX, MetaInfo.SNAPSHOT_TERM):
            raise ValueError(f"{info.name} is kept by snapshots; use save() or create_snapshot()")
        self._check_writable()
        self._meta.set_uint(info, value)
        if self.hard_sync:
            yield self.meta_sync_step()

    def sync(self) -> None:
        """Make everything written so far durable: log files, then wal.meta."""
        with self._mutex:
            self._check_writable()
            self._run(self._sync_steps())

    def sync_steps(self) -> Steps:
        self._check_writable()
        return self._sync_steps()


class SavePlan:
    """A checked save: the entries left after trimming, the snapshot to install, the HardState to write."""

    __slots__ = ("entries", "hard_state", "snapshot")

    def __init__(self, entries: Sequence[Entry], snapshot: Snapshot | None, hard_state: HardState | None) -> None:
        self.entries = entries
        self.snapshot = snapshot
        self.hard_state = hard_state


def _noop() -> None:
    return None


def _check_index(v: object, name: str) -> None:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{name} must be an int, not {type(v).__name__}")
    if v < 0:
        raise ValueError(f"{name} must not be negative (got {v})")


def _check_info(info: object) -> MetaInfo:
    if isinstance(info, bool) or not isinstance(info, int):
        raise TypeError(f"info must be a MetaInfo, not {type(info).__name__}")
    try:
        return MetaInfo(info)
    except ValueError:
        raise ValueError(f"Invalid info: {info}") from None


def _check_entries(ents: Sequence[Entry]) -> None:
    """Every item a ``raftpb.Entry``, indexes contiguous and not 0: C-level passes first, a loop only to name the
    culprit."""
    ok = speedups.entries_ok
    if ok is not None and ok(ents, Entry):
        return
    if len(ents) == 1:  # the common Raft save: skip the set-up of the passes below
        if not isinstance(ents[0], Entry):
            raise TypeError(f"entries must be raftpb.Entry, not {type(ents[0]).__name__}")
        if ents[0].index == 0:
            raise ValueError("entry index 0 is not valid")
        return
    if not ents:
        return
    if set(map(type, ents)) != {Entry}:
        for e in ents:
            if not isinstance(e, Entry):
                raise TypeError(f"entries must be raftpb.Entry, not {type(e).__name__}")
    indexes = list(map(_INDEX, ents))
    first = indexes[0]
    if indexes != list(range(first, first + len(indexes))):
        for prev, nxt in itertools.pairwise(indexes):
            if nxt != prev + 1:
                raise ValueError(f"entries are not contiguous: {prev} then {nxt}")
    if first == 0:
        raise ValueError("entry index 0 is not valid")
