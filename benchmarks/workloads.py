"""Durable workloads, each run in a fresh directory and returning operations per second.

- aiowal: ``AsyncDiskStorage(hard_sync=True)``; N asyncio tasks each ``await st.save(entries=[one entry])``, the index
  taken from a shared counter right before the call (so indexes follow call order), or one caller saving batches.
  With ``prefill``, the log first holds that many entries (written without sync, then closed: synced), so that the
  measurement starts near the end of a log file and crosses into the next one.
- plain loop: the floor's packing (32-byte header + data), then a write and ``os.fdatasync`` per operation. By
  default it writes at increasing offsets into a file made 256 MiB long (sparse) up front, as aiowal (and Dgraph)
  do: appending to a growing file (``prealloc=False``, ``O_APPEND``) changes the file size on every write, and on
  ext4 that makes each ``fdatasync`` commit the journal too, so it is about half as fast and would flatter aiowal.
  With N > 1, N threads share one descriptor, each reserving its offset under a lock, then writing and syncing.
- aiosqlite: one asyncio caller, one row per transaction (``execute`` then ``commit``), WAL, ``synchronous=FULL``.
- sqlite3: WAL, ``synchronous=FULL``; with N > 1, N threads each on its own connection, each committing its own
  one-row transaction. sqlite admits one writer at a time; the threads queue for it on a ``threading.Lock`` held
  around ``BEGIN IMMEDIATE ... COMMIT``. (Left to sqlite's busy handler, which sleeps 1, 2, 5, 10, ... ms between
  retries, 64 threads managed about 60 commits/s here: a measure of the busy handler, not of sqlite.)
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any

from aiowal.raftpb import Entry, EntryNormal
from benchmarks.common import gc_pauses, make_batches, pack_minimal
from benchmarks.sync_write import SQLITE_INSERT, SQLITE_SCHEMA, sqlite_insert_batch, sqlite_open


@dataclass
class Result:
    """Operations completed per second of the run, plus what a run reports besides (aiowal's stats, loop lag)."""

    ops_per_s: float
    ops: int
    extra: dict[str, Any] = field(default_factory=dict)


class BatchPool:
    """Contiguous batches from index 1, built on first use and kept, so that later runs time no construction."""

    def __init__(self, per_batch: int, data: bytes) -> None:
        self.per_batch = per_batch
        self.data = data
        self._batches: list[list[Entry]] = []

    def get(self, k: int) -> list[Entry]:
        while len(self._batches) <= k:
            first = len(self._batches) * self.per_batch + 1
            self._batches.extend(make_batches(first, 1, self.per_batch, self.data))
        return self._batches[k]


# --- aiowal -----------------------------------------------------------------------------------------------------
def prefill(path: str, n: int, data: bytes, batch: int = 1000) -> None:
    """Write entries 1..n at ``path`` without sync, then close (which syncs them)."""
    from aiowal import DiskStorage

    with DiskStorage.open(path, hard_sync=False) as st:
        for first in range(1, n + 1, batch):
            st.save(
                entries=[
                    Entry(term=1, index=i, type=EntryNormal, data=data)
                    for i in range(first, min(n, first + batch - 1) + 1)
                ]
            )


async def aiowal_callers(
    path: str, callers: int, seconds: float, data: bytes, heartbeat_s: float = 0.0, prefilled: int = 0
) -> Result:
    """``callers`` tasks saving one entry per call until ``seconds`` have passed; with ``heartbeat_s``, a heartbeat
    task records how late each of its sleeps wakes up (event-loop lag). ``prefilled``: entries already in the log at
    ``path`` (see ``prefill``); extra["files"] is how many log files the run ended with."""
    from aiowal import AsyncDiskStorage

    st = await AsyncDiskStorage.open(path, hard_sync=True)
    nxt = prefilled + 1
    done = 0
    last = 0.0
    lags: list[float] = []
    own: list[float] = []
    stop = asyncio.Event()
    try:
        await st.save(
            entries=[Entry(term=1, index=nxt, type=EntryNormal, data=data)]
        )  # the file exists and is synced once
        nxt += 1
        start = time.perf_counter()
        deadline = start + seconds

        async def caller() -> None:
            nonlocal nxt, done, last
            save = st.save
            while time.perf_counter() < deadline:
                i = nxt
                nxt += 1
                await save(entries=[Entry(term=1, index=i, type=EntryNormal, data=data)])
                done += 1
                last = time.perf_counter()

        async def heartbeat() -> None:
            while not stop.is_set():
                t0, c0 = time.perf_counter(), time.thread_time()
                await asyncio.sleep(heartbeat_s)
                lag = time.perf_counter() - t0 - heartbeat_s
                lags.append(lag)
                # The part of the lag the loop thread itself could have spent running code (its CPU time over the
                # interval): what remains of the lag is the thread waiting for a CPU (other processes).
                own.append(min(lag, time.thread_time() - c0))

        with gc_pauses() as pauses:
            hb = asyncio.create_task(heartbeat()) if heartbeat_s else None
            await asyncio.gather(*(caller() for _ in range(callers)))
            stop.set()
            if hb is not None:
                await hb
        stats = st.stats()
        files = st.num_log_files() + 1  # (it counts the files before the current one)
    finally:
        await st.close()
    extra: dict[str, Any] = {"stats": stats, "files": files}
    if heartbeat_s:
        extra["lags"] = lags
        extra["lags_own_cpu"] = own
        extra["gc_pauses"] = pauses
    return Result(done / (last - start), done, extra)


async def aiowal_batches(path: str, pool: BatchPool, batches: int) -> Result:
    """One caller saving ``batches`` whole batches (after one untimed); ops are entries."""
    from aiowal import AsyncDiskStorage

    st = await AsyncDiskStorage.open(path, hard_sync=True)
    try:
        await st.save(entries=pool.get(0))
        start = time.perf_counter()
        for k in range(1, batches + 1):
            await st.save(entries=pool.get(k))
        elapsed = time.perf_counter() - start
        stats = st.stats()
        files = st.num_log_files() + 1  # (it counts the files before the current one)
    finally:
        await st.close()
    n = batches * pool.per_batch
    return Result(n / elapsed, n, {"stats": stats, "files": files})


async def aiosqlite_loop(path: str, seconds: float, data: bytes) -> Result:
    """One asyncio caller inserting one row per transaction through aiosqlite (WAL, synchronous=FULL)."""
    import aiosqlite

    os.makedirs(path, exist_ok=True)
    async with aiosqlite.connect(os.path.join(path, "log.db")) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute(SQLITE_SCHEMA)
        await db.commit()
        k = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            k += 1
            await db.execute(SQLITE_INSERT, (k, 1, EntryNormal, data))
            await db.commit()
            if time.perf_counter() >= deadline:
                break
        elapsed = time.perf_counter() - start
    return Result(k / elapsed, k)


# --- the plain write + fdatasync loop ---------------------------------------------------------------------------
PLAIN_FILE_SIZE = 256 << 20


def _plain_open(path: str, prealloc: bool) -> int:
    os.makedirs(path, exist_ok=True)
    name = os.path.join(path, "log")
    if not prealloc:
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644)
    os.ftruncate(fd, PLAIN_FILE_SIZE)
    os.fsync(fd)
    return fd


def _writer(fd: int, prealloc: bool) -> Callable[[bytes], None]:
    """Write ``buf`` after the previous one: at the next offset (preallocated file) or appended."""
    if not prealloc:
        return lambda buf: _write_all(fd, buf)
    pos = [0]

    def write(buf: bytes) -> None:
        os.pwrite(fd, buf, pos[0])
        pos[0] += len(buf)

    return write


def _write_all(fd: int, buf: bytes) -> None:
    if os.write(fd, buf) != len(buf):
        raise OSError("short write")


def plain_loop(path: str, seconds: float, data: bytes, prealloc: bool = True) -> Result:
    """The single-caller floor: pack one entry, write it, fdatasync, repeat."""
    return _plain_run(path, seconds, prealloc, lambda i: [Entry(term=1, index=i, type=EntryNormal, data=data)], 1)


def plain_batches(path: str, pool: BatchPool, batches: int, prealloc: bool = True) -> Result:
    """The batch limit: pack a batch, one write, one fdatasync, ``batches`` times; ops are entries."""
    return _plain_run(path, 0.0, prealloc, pool.get, pool.per_batch, batches)


def _plain_run(
    path: str,
    seconds: float,
    prealloc: bool,
    batch: Callable[[int], Sequence[Entry]],
    per_batch: int,
    count: int | None = None,
) -> Result:
    """Pack ``batch(k)`` for k = 1, 2, ..., write it, fdatasync, until ``seconds`` have passed (or ``count``
    batches are written); ops are entries."""
    fd = _plain_open(path, prealloc)
    write, fdatasync = _writer(fd, prealloc), os.fdatasync
    try:
        k = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            write(pack_minimal(batch(k + 1)))
            fdatasync(fd)
            k += 1
            if (k >= count) if count is not None else time.perf_counter() >= deadline:
                break
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    return Result(k * per_batch / elapsed, k * per_batch)


async def format_floor_off_loop(path: str, seconds: float, data: bytes) -> Result:
    """The bare minimum of aiowal's design in Python per durable single-entry save: the raftwal
    format's two writes (a record from 1 MiB on, its 32-byte slot in the table) on the loop, then the
    ``fdatasync`` in a worker thread whose result comes back with one ``call_soon_threadsafe``; no queue, no writer
    task, no checks. A reference for the single-caller figure, not a target."""
    loop = asyncio.get_running_loop()
    fd = _plain_open(path, prealloc=True)
    jobs: SimpleQueue[asyncio.Future[None] | None] = SimpleQueue()

    def work() -> None:
        while (fut := jobs.get()) is not None:
            os.fdatasync(fd)
            loop.call_soon_threadsafe(fut.set_result, None)

    worker = threading.Thread(target=work, name="format-floor-sync")
    worker.start()
    try:
        k, off = 0, 1 << 20
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            k += 1
            record = pack_minimal([Entry(term=1, index=k, type=EntryNormal, data=data)])
            os.pwrite(fd, record[32:], off)  # the floor's packing: 32-byte header, then the data
            os.pwrite(fd, record[:32], (k - 1) * 32)
            off += len(record) - 32
            fut = loop.create_future()
            jobs.put(fut)
            await fut
            if time.perf_counter() >= deadline:
                break
        elapsed = time.perf_counter() - start
    finally:
        jobs.put(None)
        worker.join()
        os.close(fd)
    return Result(k / elapsed, k)


def plain_threads(path: str, threads: int, seconds: float, data: bytes) -> Result:
    """``threads`` threads sharing one preallocated file, each packing, writing and syncing its own entries."""
    fd = _plain_open(path, prealloc=True)
    lock = threading.Lock()
    state = [1, 0]  # next index, next offset
    size = len(pack_minimal([Entry(term=1, index=1, type=EntryNormal, data=data)]))

    def work(deadline: float) -> int:
        n = 0
        while time.perf_counter() < deadline:
            with lock:
                i, off = state
                state[0] += 1
                state[1] += size
            os.pwrite(fd, pack_minimal([Entry(term=1, index=i, type=EntryNormal, data=data)]), off)
            os.fdatasync(fd)
            n += 1
        return n

    try:
        return _threaded(threads, seconds, work)
    finally:
        os.close(fd)


# --- sqlite3 ----------------------------------------------------------------------------------------------------
def sqlite_batches(path: str, pool: BatchPool, batches: int) -> Result:
    """One transaction per batch, synchronous=FULL, ``batches`` times; ops are entries."""
    conn = sqlite_open(path, "FULL")
    try:
        k = 0
        start = time.perf_counter()
        while k < batches:
            sqlite_insert_batch(conn, pool.get(k + 1))
            k += 1
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    return Result(k * pool.per_batch / elapsed, k * pool.per_batch)


def sqlite_threads(path: str, threads: int, seconds: float, data: bytes) -> Result:
    """``threads`` threads, each with its own connection, committing one row per transaction (writers take turns on
    a lock instead of sqlite's sleeping busy handler)."""
    sqlite_open(path, "FULL").close()
    db = os.path.join(path, "log.db")
    lock = threading.Lock()
    writer = threading.Lock()
    counter = [1]
    local = threading.local()

    def connect() -> None:
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False, timeout=60.0)
        conn.execute("PRAGMA synchronous=FULL")
        local.conn = conn

    def work(deadline: float) -> int:
        conn: sqlite3.Connection = local.conn
        n = 0
        try:
            while time.perf_counter() < deadline:
                with lock:
                    i = counter[0]
                    counter[0] += 1
                e = Entry(term=1, index=i, type=EntryNormal, data=data)
                with writer:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(SQLITE_INSERT, (e.index, e.term, e.type, e.data))
                    conn.execute("COMMIT")
                n += 1
        finally:
            conn.close()
        return n

    return _threaded(threads, seconds, work, setup=connect)


def _threaded(
    threads: int, seconds: float, work: Callable[[float], int], setup: Callable[[], None] | None = None
) -> Result:
    """Start ``threads`` threads, let each run ``setup``, then release them together and count what they did
    until the deadline, dividing by the time until the last one finished."""
    ready = threading.Barrier(threads + 1)
    go = threading.Barrier(threads + 1)
    counts = [0] * threads
    ends = [0.0] * threads
    errors: list[BaseException] = []
    deadline = [0.0]

    def body(k: int) -> None:
        try:
            if setup is not None:
                setup()
            ready.wait()
            go.wait()
            counts[k] = work(deadline[0])
        except BaseException as exc:
            errors.append(exc)
            ready.abort()
            go.abort()
        finally:
            ends[k] = time.perf_counter()

    pool = [threading.Thread(target=body, args=(k,), daemon=True) for k in range(threads)]
    for t in pool:
        t.start()
    start = 0.0
    try:
        ready.wait()
        start = time.perf_counter()
        deadline[0] = start + seconds
        go.wait()
    except threading.BrokenBarrierError:
        pass
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    total = sum(counts)
    return Result(total / (max(ends) - start), total)
