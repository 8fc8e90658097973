"""``AsyncDiskStorage``: the asyncio face of ``DiskStorage``.

One writer task owns every mutation. Callers put requests on a bounded queue; the writer takes what is queued,
applies it in call order on the event-loop thread (page-cache writes), then runs one ``fdatasync`` per touched file
off the loop for the whole batch (on the GIL-free ``SyncWorker`` of the C accelerator when there is one, else on
its Python sync thread) and only then resolves the callers: group commit. Reads are plain methods
served from memory and the mmaps on the loop thread; they never wait for a sync in flight, because the writer
holds no lock while it awaits one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from aiowal import speedups
from aiowal.errors import StorageClosedError, StorageFailedError, StorageIOError
from aiowal.fs import FS, io_error
from aiowal.meta import MetaInfo
from aiowal.raftpb import ConfState, Entry, HardState, Snapshot
from aiowal.steps import FdSync, Steps, SyncStep
from aiowal.storage import DiskStorage, SavePlan
from aiowal.syncthread import SyncThread

if TYPE_CHECKING:
    from aiowal._speedups import SyncWorker

log = logging.getLogger(__name__)

_SAMPLES = 10_000
_WORKER_MAX_FDS = 16  # what one SyncWorker request holds


@dataclass(slots=True)
class _Request:
    kind: str
    args: tuple[Any, ...]
    future: asyncio.Future[None]
    n_entries: int = 0


@dataclass
class _Stats:
    saves: int = 0
    entries: int = 0
    batches: int = 0
    syncs: int = 0
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    sync_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))


def _summary(samples: Iterable[float]) -> dict[str, float]:
    data = sorted(samples)
    if not data:
        return {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}

    def pct(p: float) -> float:
        return float(data[min(len(data) - 1, int(p * len(data)))])

    return {"count": len(data), "p50": pct(0.5), "p99": pct(0.99), "max": float(data[-1])}


class AsyncDiskStorage:
    """A ``DiskStorage`` driven by one writer task; writes are coroutines, reads are plain methods."""

    def __init__(self, storage: DiskStorage, *, queue_size: int = 4096, max_batch: int = 1024) -> None:
        self._st = storage
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[_Request] = asyncio.Queue(maxsize=queue_size)
        self._max_batch = max_batch
        self._syncer = SyncThread(self._loop, f"aiowal-sync:{storage.path}")
        # Plain fdatasync steps go to a thread that needs no GIL (about 40-50 us less per durable save than the
        # sync thread, which waits for the GIL before and after each sync); not with a test double for the fs.
        self._worker: SyncWorker | None = None
        self._worker_waiter: asyncio.Future[None] | None = None
        if speedups.sync_worker is not None and type(storage._fs) is FS:
            self._worker = speedups.sync_worker()
            self._loop.add_reader(self._worker.fileno(), self._on_worker_done)
        self._stats = _Stats()
        self._closing = False
        self._writer = self._loop.create_task(self._run_writer(), name=f"aiowal-writer:{storage.path}")

    # --- lifecycle --------------------------------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        key: bytes | None = None,
        hard_sync: bool = False,
        fs: FS | None = None,
        queue_size: int = 4096,
        max_batch: int = 1024,
    ) -> AsyncDiskStorage:
        """Open (creating if missing) a WAL directory; the file work runs off the event loop."""
        loop = asyncio.get_running_loop()
        st = await loop.run_in_executor(None, partial(DiskStorage.open, path, key=key, hard_sync=hard_sync, fs=fs))
        return cls(st, queue_size=queue_size, max_batch=max_batch)

    async def close(self) -> None:
        """Apply everything queued, sync, and release the files. Idempotent."""
        if not self._writer.done():
            if not self._closing:
                self._closing = True
                fut = self._loop.create_future()
                await self._queue.put(_Request("close", (), fut))
            await asyncio.shield(self._writer)
        self._syncer.stop()
        self._stop_worker()

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            self._loop.remove_reader(worker.fileno())
            worker.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def storage(self) -> DiskStorage:
        """The underlying synchronous storage (for reads from other threads)."""
        return self._st

    @property
    def hard_sync(self) -> bool:
        return self._st.hard_sync

    # --- writes -----------------------------------------------------------------------------------------------
    async def save(
        self, hard_state: HardState | None = None, entries: Iterable[Entry] = (), snapshot: Snapshot | None = None
    ) -> None:
        """Persist one Raft ``Ready``; applied in call order, durable on return with ``hard_sync``."""
        ents = list(entries)
        await self._submit("save", (hard_state, ents, snapshot), len(ents))

    async def create_snapshot(self, i: int, conf_state: ConfState | None, data: bytes | None) -> None:
        await self._submit("create_snapshot", (i, conf_state, data))

    async def truncate_entries_until(self, i: int) -> None:
        await self._submit("truncate", (i,))

    async def set_uint(self, info: MetaInfo, value: int) -> None:
        await self._submit("set_uint", (info, value))

    async def sync(self) -> None:
        """Make everything written so far durable."""
        await self._submit("sync", ())

    async def _submit(self, kind: str, args: tuple[Any, ...], n_entries: int = 0) -> None:
        if self._closing or self._writer.done():
            if self._st.closed or self._closing:
                raise StorageClosedError(f"{self._st.path}: storage is closed")
            raise StorageFailedError(f"{self._st.path}: the writer task has stopped")
        fut: asyncio.Future[None] = self._loop.create_future()
        req = _Request(kind, args, fut, n_entries)
        try:
            self._queue.put_nowait(req)  # no coroutine to create and drive: most calls
        except asyncio.QueueFull:
            await self._queue.put(req)  # backpressure: wait for room
        # Once queued, a request lands whole: cancelling the caller cancels only ``fut`` (its wait), and the writer
        # never looks at whether anyone still waits. (No ``shield``: it costs a loop iteration per save.)
        await fut

    # --- the writer -------------------------------------------------------------------------------------------
    async def _run_writer(self) -> None:
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < self._max_batch and batch[-1].kind != "close":
                    try:
                        batch.append(self._queue.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                self._stats.batches += 1
                self._stats.batch_sizes.append(len(batch))
                if await self._process(batch):
                    return
        except BaseException as exc:
            log.exception("%s: writer task stopped", self._st.path)
            self._fail_queued(StorageFailedError(f"{self._st.path}: the writer task stopped: {exc!r}"))
            raise

    def _fail_queued(self, exc: BaseException) -> None:
        while True:
            try:
                req = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            _set(req.future, exc)

    async def _process(self, batch: list[_Request]) -> bool:
        """Apply a batch in order; returns True once a close request was handled.

        Saves that only append right after what precedes them are checked one by one (an error goes to its caller
        alone) and their entries written together: one pwritev and one slot write for the lot."""
        st = self._st
        group: list[tuple[_Request, SavePlan]] = []  # applied saves waiting for the batch's sync
        appends: list[tuple[_Request, SavePlan]] = []  # checked plain appends not yet written
        merged: list[Entry] = []
        last = -1  # the log's last index once ``merged`` is written (-1: nothing pending)
        for req in batch:
            if req.kind == "save":
                try:
                    with st._mutex:
                        hs, ents, snap = req.args
                        plan = st.prepare_save(hs, ents, snap, last_index=last if last >= 0 else None)
                except Exception as exc:
                    _set(req.future, exc)
                    continue
                if plan.snapshot is None:
                    if last < 0:
                        last = st.last_index()
                    if not plan.entries or plan.entries[0].index == last + 1:
                        appends.append((req, plan))
                        if plan.entries:
                            merged.extend(plan.entries)
                            last = plan.entries[-1].index
                        continue
                await self._write_appends(appends, merged, group)
                appends, merged, last = [], [], -1
                try:
                    await self._drive(st.log_steps(plan))
                except Exception as exc:
                    _set(req.future, exc)
                    continue
                group.append((req, plan))
                continue
            await self._write_appends(appends, merged, group)
            appends, merged, last = [], [], -1
            await self._commit(group)
            group = []
            if req.kind == "close":
                await self._close_storage(req)
                self._fail_queued(StorageClosedError(f"{st.path}: storage is closed"))
                return True
            try:
                await self._drive(self._steps_for(req))
            except Exception as exc:
                _set(req.future, exc)
            else:
                _set(req.future, None)
        await self._write_appends(appends, merged, group)
        await self._commit(group)
        return False

    async def _write_appends(
        self, appends: list[tuple[_Request, SavePlan]], merged: list[Entry], group: list[tuple[_Request, SavePlan]]
    ) -> None:
        if not appends:
            return
        try:
            if merged:
                await self._drive(self._st.log_steps(SavePlan(merged, None, None)))
        except Exception as exc:
            for req, _ in appends:
                _set(req.future, exc)
            return
        group.extend(appends)

    def _steps_for(self, req: _Request) -> Steps:
        st = self._st
        with st._mutex:
            if req.kind == "create_snapshot":
                return st.create_snapshot_steps(*req.args)
            if req.kind == "truncate":
                return st.truncate_steps(*req.args)
            if req.kind == "set_uint":
                return st.set_uint_steps(*req.args)
            if req.kind == "sync":
                return st.sync_steps()
        raise AssertionError(f"unknown request {req.kind}")  # pragma: no cover

    async def _commit(self, group: list[tuple[_Request, SavePlan]]) -> None:
        """One log sync for every save of the group, then their HardStates, then one meta sync if needed."""
        if not group:
            return
        st = self._st
        try:
            if st.hard_sync:
                with st._mutex:
                    step = st.log_sync_step()
                if step is not None:
                    await self._sync(step)
            must_sync = False
            with st._mutex:
                for _, plan in group:
                    must_sync |= st.apply_hard_state(plan)
            if must_sync and st.hard_sync:
                await self._sync(st.meta_sync_step())
        except Exception as exc:
            for req, _ in group:
                _set(req.future, exc)
            return
        stats = self._stats
        stats.saves += len(group)
        for req, plan in group:
            stats.entries += len(plan.entries)
            _set(req.future, None)  # (a cancelled caller's save landed anyway)

    async def _drive(self, steps: Steps) -> None:
        """Run a write's steps: its file changes here, each sync in the sync thread."""
        while True:
            with self._st._mutex:
                try:
                    step = next(steps)
                except StopIteration:
                    return
                except StorageIOError as exc:
                    self._st.fail(exc)
                    raise
            await self._sync(step)

    async def _sync(self, step: SyncStep) -> None:
        t0 = time.perf_counter()
        try:
            if self._worker is not None and isinstance(step, FdSync) and len(step.fds) <= _WORKER_MAX_FDS:
                await self._worker_sync(step.fds)
            else:
                await self._syncer.run(step)
        except StorageIOError as exc:
            self._st.fail(exc)
            raise
        self._stats.syncs += 1
        self._stats.sync_latencies.append(time.perf_counter() - t0)

    def _worker_sync(self, fds: tuple[int, ...]) -> asyncio.Future[None]:
        assert self._worker is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        self._worker_waiter = fut
        self._worker.submit(fds)
        return fut

    def _on_worker_done(self) -> None:
        """The worker's eventfd is readable: its sync ended (errno 0) or failed."""
        if self._worker is None:
            return
        err = self._worker.result()
        if err is None:
            return
        fut, self._worker_waiter = self._worker_waiter, None
        if fut is None or fut.done():
            return
        if err:
            fut.set_exception(io_error("fdatasync", OSError(err, os.strerror(err))))
        else:
            fut.set_result(None)

    async def _close_storage(self, req: _Request) -> None:
        try:
            await self._syncer.run(self._st.close)
        except Exception as exc:
            _set(req.future, exc)
        else:
            _set(req.future, None)

    # --- reads ------------------------------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._st.initial_state()

    def hard_state(self) -> HardState:
        return self._st.hard_state()

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        return self._st.entries(lo, hi, max_size)

    def term(self, i: int) -> int:
        return self._st.term(i)

    def first_index(self) -> int:
        return self._st.first_index()

    def last_index(self) -> int:
        return self._st.last_index()

    def snapshot(self) -> Snapshot:
        return self._st.snapshot()

    def checkpoint(self) -> int:
        return self._st.checkpoint()

    def uint(self, info: MetaInfo) -> int:
        return self._st.uint(info)

    def num_entries(self) -> int:
        return self._st.num_entries()

    def num_log_files(self) -> int:
        return self._st.num_log_files()

    def stats(self) -> dict[str, Any]:
        """Counters since open: saves, entries, bytes, batches, syncs, and batch-size / sync-latency summaries."""
        s = self._stats
        lat = _summary(s.sync_latencies)
        return {
            "saves": s.saves,
            "entries": s.entries,
            "bytes": self._st.bytes_written,
            "batches": s.batches,
            "syncs": s.syncs,
            "batch_size": _summary(s.batch_sizes),
            "sync_latency_ms": {k: (v * 1000 if k != "count" else v) for k, v in lat.items()},
            "queued": self._queue.qsize(),
        }


def _set(fut: asyncio.Future[None], outcome: BaseException | None) -> None:
    if fut.done():
        return
    if outcome is None:
        fut.set_result(None)
    else:
        fut.set_exception(outcome)
