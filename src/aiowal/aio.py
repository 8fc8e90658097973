"""``AsyncDiskStorage``: the asyncio face of ``DiskStorage``.

One writer task owns every mutation. Callers put requests on a bounded queue; the writer takes what is queued,
applies it in call order on the event-loop thread (page-cache writes), then runs the blocking steps off the loop:
one log sync for the whole batch (on the GIL-free ``SyncWorker`` of the C accelerator when there is one, else on
its Python sync thread), and only then resolves the callers: group commit. Reads are plain methods served from
memory and the mmaps on the loop thread; they see every applied write, durable or not yet, and never wait for a
sync in flight, because the writer holds no lock while it awaits one.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from aiowal import speedups
from aiowal.errors import StorageClosedError, StorageFailedError, StorageIOError, WrongEventLoopError
from aiowal.fs import FS, io_error
from aiowal.keyregistry import check_key
from aiowal.meta import MetaInfo
from aiowal.raftpb import ConfState, Entry, HardState, Snapshot
from aiowal.steps import FdSync, Steps, SyncStep
from aiowal.storage import DiskStorage, SavePlan
from aiowal.syncthread import SyncThread, resolve

if TYPE_CHECKING:
    from aiowal.speedups import SyncWorker

log = logging.getLogger(__name__)

_SAMPLES = 10_000
# Upper bounds of the histograms that stats() exports (cumulative, like a Prometheus histogram).
_SYNC_SECONDS_LE = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_ENTRIES_LE = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
_WORKER_MAX_FDS = 16  # what one SyncWorker request holds


# --- requests -----------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Save:
    """A save: planned, written and committed by the writer with the other saves of its batch."""

    hard_state: HardState | None
    entries: list[Entry]
    snapshot: Snapshot | None
    future: asyncio.Future[None]


@dataclass(slots=True)
class _Write:
    """Any other write: ``steps(storage)`` gives its steps, run after the saves queued before it are committed."""

    steps: Callable[[DiskStorage], Steps]
    future: asyncio.Future[None]


@dataclass(slots=True)
class _Close:
    future: asyncio.Future[None]


_Request = _Save | _Write | _Close
_Planned = list[tuple[_Save, SavePlan]]
# A sync on the worker: the writer's future (the write's next step), the descriptors, the write, what runs once the
# write ends, and when the step began.
_WorkerJob = tuple["asyncio.Future[SyncStep | None]", tuple[int, ...], Steps, "Callable[[], None] | None", float]


class _Histogram:
    """How many samples fell at or below each bound, and their sum: counts since open, never reset."""

    __slots__ = ("counts", "le", "total")

    def __init__(self, le: tuple[float, ...]) -> None:
        self.le = le
        self.counts = [0] * (len(le) + 1)  # the last one: above every bound
        self.total = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.le, value)] += 1
        self.total += value

    def export(self) -> dict[str, Any]:
        """``le`` (upper bounds), ``cumulative`` (samples at or below each), ``count`` (all samples), ``sum``."""
        cumulative = list(itertools.accumulate(self.counts))
        return {"le": list(self.le), "cumulative": cumulative[:-1], "count": cumulative[-1], "sum": self.total}


@dataclass
class _Stats:
    saves: int = 0
    entries: int = 0
    batches: int = 0
    syncs: int = 0
    commits: int = 0
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    sync_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    sync_seconds: _Histogram = field(default_factory=lambda: _Histogram(_SYNC_SECONDS_LE))
    entries_per_commit: _Histogram = field(default_factory=lambda: _Histogram(_ENTRIES_LE))


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
        _check_size(queue_size, "queue_size")
        _check_size(max_batch, "max_batch")
        self._st = storage
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[_Request] = asyncio.Queue(maxsize=queue_size)
        self._max_batch = max_batch
        self._fs = storage.fs
        self._syncer = SyncThread(self._loop, f"aiowal-sync:{storage.path}")
        # Plain fdatasync steps go to a thread that needs no GIL; not when a test double replaces fdatasync.
        self._worker: SyncWorker | None = None
        self._worker_job: _WorkerJob | None = None
        if speedups.sync_worker is not None and self._fs.direct_fdatasync:
            self._worker = speedups.sync_worker()
            self._loop.add_reader(self._worker.fileno(), self._on_worker_done)
        self._stats = _Stats()
        self._closing = False
        self._writer = self._loop.create_task(self._run_writer(), name=f"aiowal-writer:{storage.path}")

    # --- lifecycle --------------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        key: bytes | None = None,
        hard_sync: bool = True,
        fs: FS | None = None,
        queue_size: int = 4096,
        max_batch: int = 1024,
    ) -> _Opening:
        """Open (creating if missing) a WAL directory, its file work off the event loop. Await the result, or use
        it as ``async with AsyncDiskStorage.open(path) as st:`` (closed on exit). Arguments are checked here,
        before anything on disk is touched."""
        _check_size(queue_size, "queue_size")
        _check_size(max_batch, "max_batch")
        if not isinstance(hard_sync, bool):
            raise TypeError(f"hard_sync must be True or False, not {hard_sync!r}")
        check_key(key)
        opener = partial(DiskStorage.open, path, key=key, hard_sync=hard_sync, fs=fs)

        async def opened() -> AsyncDiskStorage:
            st = await asyncio.get_running_loop().run_in_executor(None, opener)
            return cls(st, queue_size=queue_size, max_batch=max_batch)

        return _Opening(opened)

    async def close(self) -> None:
        """Apply everything queued, sync, and release the files and the lock. Idempotent. It releases everything
        even when the writer task or its event loop is gone; from another loop while that one still runs it
        refuses (``WrongEventLoopError``). A failure of the final sync is raised (once) after the release."""
        loop = asyncio.get_running_loop()
        request: asyncio.Future[None] | None = None  # the close request this call queued
        if loop is self._loop and not self._writer.done():
            if not self._closing:
                self._closing = True
                request = loop.create_future()
                await self._queue.put(_Close(request))
            await asyncio.shield(self._writer)
        elif loop is not self._loop and self._loop.is_running():
            raise WrongEventLoopError(f"{self._st.path}: close() from another event loop while the storage's runs")
        self._closing = True
        if self._st.closed and self._worker is None:
            self._syncer.stop()
        else:
            # The writer is gone (it ended, or its loop did): release here, after any sync still running on a thread.
            await loop.run_in_executor(None, self._release_without_writer)
        if request is not None and request.done() and not request.cancelled():
            exc = request.exception()
            if exc is not None:
                raise exc

    def _release_without_writer(self) -> None:
        self._syncer.stop()
        self._syncer.join()
        self._stop_worker()
        self._st.close()

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            if not self._loop.is_closed():
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

    @property
    def closed(self) -> bool:
        return self._st.closed

    # --- writes -----------------------------------------------------------------------------------------------
    async def save(
        self, hard_state: HardState | None = None, entries: Iterable[Entry] = (), snapshot: Snapshot | None = None
    ) -> None:
        """Persist one Raft ``Ready``; applied in call order, durable on return with ``hard_sync``."""
        fut = self._new_future()
        await self._submit(_Save(hard_state, list(entries), snapshot, fut))

    async def create_snapshot(self, i: int, conf_state: ConfState | None, data: bytes | None) -> None:
        fut = self._new_future()
        await self._submit(_Write(lambda st: st.create_snapshot_steps(i, conf_state, data), fut))

    async def truncate_entries_until(self, i: int) -> None:
        fut = self._new_future()
        await self._submit(_Write(lambda st: st.truncate_steps(i), fut))

    async def set_uint(self, info: MetaInfo, value: int) -> None:
        fut = self._new_future()
        await self._submit(_Write(lambda st: st.set_uint_steps(info, value), fut))

    async def sync(self) -> None:
        """Make everything written so far durable."""
        fut = self._new_future()
        await self._submit(_Write(DiskStorage.sync_steps, fut))

    def _new_future(self) -> asyncio.Future[None]:
        """The caller's future, once the call is known to come from the storage's loop and the storage is open."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not self._loop:
            raise WrongEventLoopError(
                f"{self._st.path}: AsyncDiskStorage is bound to the event loop that opened it; called from "
                + ("another event loop" if loop is not None else "a thread without one")
            )
        if self._closing or self._writer.done():
            if self._st.closed or self._closing:
                raise StorageClosedError(f"{self._st.path}: storage is closed")
            raise StorageFailedError(f"{self._st.path}: the writer task has stopped")
        return loop.create_future()

    async def _submit(self, req: _Request) -> None:
        try:
            self._queue.put_nowait(req)  # no coroutine to create and drive: most calls
        except asyncio.QueueFull:
            await self._queue.put(req)  # backpressure: wait for room
        # Once queued, a request lands whole: cancelling the caller cancels only its future (its wait), and the
        # writer never looks at whether anyone still waits. (No ``shield``: it costs a loop iteration per save.)
        await req.future

    # --- the writer -------------------------------------------------------------------------------------------
    async def _run_writer(self) -> None:
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < self._max_batch and not isinstance(batch[-1], _Close):
                    try:
                        batch.append(self._queue.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                self._stats.batches += 1
                self._stats.batch_sizes.append(len(batch))
                if await self._process(batch):
                    return
                if len(batch) > 1:
                    # One loop turn before the next batch: the callers just answered run their own steps in one
                    # iteration and this task its next batch in another, so no single iteration (the lag every
                    # other task sees) holds both. A lone caller's next request is taken at once.
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            # The event loop is ending without close(): close() (from any loop) or collection releases the files.
            self._fail_queued(StorageClosedError(f"{self._st.path}: the event loop ended before close()"))
            raise
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
            resolve(req.future, exc)

    async def _process(self, batch: list[_Request]) -> bool:
        """Apply a batch in order; returns True once a close request was handled.

        Saves are planned one by one (an error goes to its caller alone); those that only append right after the
        one before are written together (one pwritev and one slot write for the lot), and all saves of a run are
        committed together: one log sync."""
        st = self._st
        written: _Planned = []  # saves whose log part is written, waiting for the commit
        appends: _Planned = []  # planned appends not yet written
        for req in batch:
            if isinstance(req, _Save):
                if appends and not _extends(req, appends[-1][1].last_index):
                    await self._write_appends(appends, written)  # it is planned against the log as written
                    appends = []
                try:
                    plan = st.plan_save(
                        req.hard_state, req.entries, req.snapshot, after=appends[-1][1] if appends else None
                    )
                except Exception as exc:
                    resolve(req.future, exc)
                    continue
                if plan.appends_after(appends[-1][1].last_index if appends else st.last_index()):
                    appends.append((req, plan))
                    continue
                try:
                    await self._drive(st.write_steps(plan))
                except Exception as exc:
                    resolve(req.future, exc)
                    continue
                written.append((req, plan))
                continue
            await self._write_appends(appends, written)
            appends = []
            await self._commit(written)
            written = []
            if isinstance(req, _Close):
                await self._close_storage(req)
                self._fail_queued(StorageClosedError(f"{st.path}: storage is closed"))
                return True
            try:
                await self._drive(req.steps(st))
            except Exception as exc:
                resolve(req.future, exc)
            else:
                resolve(req.future, None)
        await self._write_appends(appends, written)
        await self._commit(written)
        return False

    async def _write_appends(
        self, appends: list[tuple[_Save, SavePlan]], written: list[tuple[_Save, SavePlan]]
    ) -> None:
        if not appends:
            return
        try:
            await self._drive(self._st.write_steps(SavePlan.merged([plan for _, plan in appends])))
        except Exception as exc:
            for req, _ in appends:
                resolve(req.future, exc)
            return
        written.extend(appends)

    async def _commit(self, written: _Planned) -> None:
        """Make the written saves durable together (``DiskStorage.commit_steps``), then resolve their callers: as soon
        as the commit's last step completed (from the sync worker's completion callback when it ran there)."""
        if not written:
            return

        def committed() -> None:
            stats = self._stats
            stats.saves += len(written)
            stats.commits += 1
            entries = 0
            for req, plan in written:
                entries += len(plan.entries)
                resolve(req.future, None)  # (a cancelled caller's save landed anyway)
            stats.entries += entries
            if entries:  # (a commit of hard states alone syncs no log)
                stats.entries_per_commit.add(entries)

        try:
            await self._drive(self._st.commit_steps([plan for _, plan in written]), committed)
        except Exception as exc:
            for req, _ in written:
                resolve(req.future, exc)

    async def _drive(self, steps: Steps, done: Callable[[], None] | None = None) -> None:
        """Run a write: its file changes here, each blocking step off the loop. ``done`` runs once the write ended
        without error, right where its last step's completion is seen: the sync worker's callback when the step ran
        there, which answers the callers one loop turn sooner than a wake-up of this task would."""
        try:
            step = self._st.advance(steps)
            if step is None and done is not None:
                done()
            while step is not None:
                step = await self._run_step(step, steps, done)
        finally:
            steps.close()

    async def _run_step(self, step: SyncStep, steps: Steps, done: Callable[[], None] | None) -> SyncStep | None:
        """Run ``step`` off the loop, then advance the write past it: its next step, or None once it ended (and
        ``done`` ran)."""
        t0 = time.perf_counter()
        try:
            if (
                self._worker is not None
                and isinstance(step, FdSync)
                and step.directory is None
                and 0 < len(step.fds) <= _WORKER_MAX_FDS
            ):
                return await self._worker_sync(step.fds, steps, done, t0)
            await self._syncer.run(step)
        except StorageIOError as exc:
            self._st.fail(exc)
            raise
        if isinstance(step, FdSync):
            self._count_sync(t0)
        return self._advance(steps, done)

    def _advance(self, steps: Steps, done: Callable[[], None] | None) -> SyncStep | None:
        step = self._st.advance(steps)
        if step is None and done is not None:
            done()
        return step

    def _count_sync(self, t0: float) -> None:
        elapsed = time.perf_counter() - t0
        self._stats.syncs += 1
        self._stats.sync_latencies.append(elapsed)
        self._stats.sync_seconds.add(elapsed)

    def _worker_sync(
        self, fds: tuple[int, ...], steps: Steps, done: Callable[[], None] | None, t0: float
    ) -> asyncio.Future[SyncStep | None]:
        """Hand ``fds`` to the sync worker; the future gives the write's next step, advanced by the completion
        callback."""
        assert self._worker is not None
        fut: asyncio.Future[SyncStep | None] = self._loop.create_future()
        self._worker_job = (fut, fds, steps, done, t0)
        self._worker.submit(fds)
        return fut

    def _on_worker_done(self) -> None:
        """The worker's eventfd is readable: its sync ended (errno 0) or failed. On success the write goes on here,
        at once, up to its next step or its end (``done``: the callers it answers are resolved now)."""
        if self._worker is None:
            return
        err = self._worker.result()
        if err is None or self._worker_job is None:
            return
        (fut, fds, steps, done, t0), self._worker_job = self._worker_job, None
        if not err:
            for fd in fds:
                self._fs.synced(fd)
        if fut.done():  # the writer was cancelled meanwhile: its write ends there (it closes the steps)
            return
        if err:
            fut.set_exception(io_error("fdatasync", OSError(err, os.strerror(err))))
            return
        self._count_sync(t0)
        try:
            step = self._advance(steps, done)
        except Exception as exc:  # the write's own error (advance has failed the storage if it is an I/O one)
            fut.set_exception(exc)
        else:
            fut.set_result(step)

    async def _close_storage(self, req: _Close) -> None:
        try:
            await self._syncer.run(self._st.close)
        except Exception as exc:
            resolve(req.future, exc)
        else:
            resolve(req.future, None)
        finally:
            self._syncer.stop()
            self._stop_worker()

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
        """Counters since open: saves, entries, bytes, batches, syncs, commits; batch-size / sync-latency summaries
        of the last samples; histograms since open of sync durations and of entries per commit."""
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
            "commits": s.commits,
            "sync_seconds": s.sync_seconds.export(),
            "entries_per_commit": s.entries_per_commit.export(),
            "queued": self._queue.qsize(),
        }


class _Opening:
    """What ``AsyncDiskStorage.open`` returns: awaitable, and an async context manager that closes on exit."""

    __slots__ = ("_opened", "_st")

    def __init__(self, opened: Callable[[], Awaitable[AsyncDiskStorage]]) -> None:
        self._opened = opened
        self._st: AsyncDiskStorage | None = None

    def __await__(self) -> Generator[Any, None, AsyncDiskStorage]:
        return self._open().__await__()

    async def _open(self) -> AsyncDiskStorage:
        return await self._opened()

    async def __aenter__(self) -> AsyncDiskStorage:
        self._st = await self._opened()
        return self._st

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._st is not None:
            await self._st.close()


def _extends(req: _Save, last_index: int) -> bool:
    """Whether a save (not yet checked) appends right after ``last_index`` and nothing else."""
    first = req.entries[0] if req.entries else None
    if req.snapshot is not None and req.snapshot.metadata.index:
        return False
    return first is None or (isinstance(first, Entry) and first.index == last_index + 1)


def _check_size(v: object, name: str) -> None:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{name} must be an int, not {type(v).__name__}")
    if v < 1:
        raise ValueError(f"{name} must be at least 1 (got {v})")
