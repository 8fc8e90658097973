"""The measurements of ``aiowal bench``: how fast the disk under a directory makes small writes durable, and what
aiowal's durable saves and group commit achieve on it.

Three phases share the time budget: raw ``fdatasync`` of small writes (no aiowal involved), then durable saves
through ``AsyncDiskStorage(hard_sync=True)`` by 1, 4, 16, ... concurrent callers, each level in a fresh WAL
directory. Everything happens in a new subdirectory of the given directory, removed at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiowal import AsyncDiskStorage
from aiowal.raftpb import Entry, HardState

WRITE_BYTES = 4096  # one small write made durable by the raw probe
ENTRY_BYTES = 1024  # the data of each saved entry
PROBE_FILE_BYTES = 64 << 20  # the probe writes sequentially through a sparse file this long, then wraps
MIN_SAMPLES = 20  # a phase runs past its share of the budget until it has this many samples...
OVERRUN = 4  # ...but never past this many times its share
CALLER_LEVELS = (1, 4, 16, 64, 256, 1024)

# (what is measured now, fraction of the whole check done) -> None; called a few times a second
ProgressCallback = Callable[[str, float], None]


@dataclass(frozen=True)
class Latency:
    """A summary of durations, in seconds."""

    count: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Latency:
        if not samples:
            raise ValueError("no samples")
        p99 = statistics.quantiles(samples, n=100, method="inclusive")[98] if len(samples) > 1 else samples[0]
        return cls(len(samples), statistics.median(samples), p99, max(samples))

    def to_json(self) -> dict[str, float]:
        return {"count": self.count, "p50_ms": _ms(self.p50), "p99_ms": _ms(self.p99), "max_ms": _ms(self.max)}


@dataclass(frozen=True)
class SaveRun:
    """Durable saves by ``callers`` concurrent callers for ``seconds``."""

    callers: int
    seconds: float
    latency: Latency
    syncs: int  # fdatasync calls the storage made (its stats())

    @property
    def saves(self) -> int:
        return self.latency.count

    @property
    def saves_per_second(self) -> float:
        return self.saves / self.seconds if self.seconds > 0 else 0.0

    @property
    def saves_per_sync(self) -> float:
        return self.saves / self.syncs if self.syncs else float(self.saves)

    def to_json(self) -> dict[str, Any]:
        return {
            "callers": self.callers,
            "saves": self.saves,
            "seconds": round(self.seconds, 4),
            "saves_per_s": round(self.saves_per_second, 1),
            "saves_per_sync": round(self.saves_per_sync, 2),
            **{k: v for k, v in self.latency.to_json().items() if k != "count"},
        }


@dataclass(frozen=True)
class DiskCheck:
    """What one run measured."""

    directory: str
    duration: float
    fdatasync: Latency
    saves: list[SaveRun]  # by number of callers, ascending; the first is one caller

    @property
    def one_caller(self) -> SaveRun:
        return self.saves[0]

    def to_json(self) -> dict[str, Any]:
        one = self.one_caller
        return {
            "directory": self.directory,
            "duration_s": self.duration,
            "write_bytes": WRITE_BYTES,
            "entry_bytes": ENTRY_BYTES,
            "fdatasync": self.fdatasync.to_json(),
            "save": {"callers": 1, **one.latency.to_json(), "saves_per_s": round(one.saves_per_second, 1)},
            "group_commit": [run.to_json() for run in self.saves],
        }


def caller_levels(max_callers: int) -> list[int]:
    """1, 4, 16, ... up to ``max_callers``, which is always the last level."""
    if max_callers < 1:
        raise ValueError(f"max_callers must be at least 1, not {max_callers}")
    levels = [n for n in CALLER_LEVELS if n < max_callers]
    return [*levels, max_callers]


def run_check(
    directory: str, *, duration: float, max_callers: int, progress: ProgressCallback | None = None
) -> DiskCheck:
    """Measure the disk under ``directory`` for about ``duration`` seconds; ``directory`` itself is left as it was."""
    if duration <= 0:
        raise ValueError(f"duration must be positive, not {duration}")
    levels = caller_levels(max_callers)
    phases = 1 + len(levels)
    share = duration / phases  # the raw probe and each level of callers get the same time

    def phase(number: int, label: str) -> Callable[[float], None]:
        def tick(done: float) -> None:
            if progress is not None:
                progress(label, (number + done) / phases)

        return tick

    work = tempfile.mkdtemp(prefix="aiowal-bench-", dir=directory)
    try:
        sync = probe_fdatasync(work, share, phase(0, "fdatasync"))
        runs = []
        for number, n in enumerate(levels, start=1):
            label = f"saves, {n} caller{'s' if n > 1 else ''}"
            runs.append(asyncio.run(measure_saves(os.path.join(work, f"wal-{n}"), n, share, phase(number, label))))
    finally:
        shutil.rmtree(work)
    return DiskCheck(os.path.abspath(directory), duration, sync, runs)


def probe_fdatasync(directory: str, budget: float, tick: Callable[[float], None]) -> Latency:
    """Write ``WRITE_BYTES`` and ``fdatasync`` it, again and again, for ``budget`` seconds; each write+sync timed."""
    path = os.path.join(directory, "fdatasync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    samples: list[float] = []
    try:
        os.ftruncate(fd, PROBE_FILE_BYTES)  # a sparse file, as aiowal's log files are
        block = os.urandom(WRITE_BYTES)
        clock = _Clock(budget, tick)
        offset = 0
        while not clock.done(len(samples)):
            t0 = time.perf_counter()
            os.pwrite(fd, block, offset)
            os.fdatasync(fd)
            samples.append(time.perf_counter() - t0)
            offset = (offset + WRITE_BYTES) % PROBE_FILE_BYTES
    finally:
        os.close(fd)
        os.unlink(path)
    return Latency.of(samples)


async def measure_saves(path: str, callers: int, budget: float, tick: Callable[[float], None]) -> SaveRun:
    """``callers`` tasks each save one entry (and the HardState that commits it) and wait until it is durable, over
    and over for ``budget`` seconds, through one ``AsyncDiskStorage`` opened with ``hard_sync=True``."""
    payload = os.urandom(ENTRY_BYTES)
    samples: list[float] = []
    next_index = 1
    clock = _Clock(budget, tick)

    async def caller(st: AsyncDiskStorage) -> None:
        nonlocal next_index
        while not clock.done(len(samples)):
            # Indices are taken in call order, and saves are applied in call order: the log stays contiguous.
            i, next_index = next_index, next_index + 1
            t0 = time.perf_counter()
            await st.save(HardState(term=1, vote=1, commit=i), [Entry(term=1, index=i, data=payload)])
            samples.append(time.perf_counter() - t0)

    st = await AsyncDiskStorage.open(path, hard_sync=True)
    try:
        start = time.perf_counter()
        try:
            async with asyncio.TaskGroup() as group:  # a failing save stops every caller
                for _ in range(callers):
                    group.create_task(caller(st))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        seconds = time.perf_counter() - start
        syncs = int(st.stats()["syncs"])
    finally:
        await st.close()
    shutil.rmtree(path)
    return SaveRun(callers, seconds, Latency.of(samples), syncs)


class _Clock:
    """When a phase is over (its budget spent and enough samples, or far past its budget), and its progress."""

    def __init__(self, budget: float, tick: Callable[[float], None]) -> None:
        self._start = time.perf_counter()
        self._budget = budget
        self._tick = tick
        self._last_tick = self._start

    def done(self, samples: int) -> bool:
        now = time.perf_counter()
        elapsed = now - self._start
        if now - self._last_tick >= 0.1:
            self._last_tick = now
            self._tick(min(1.0, elapsed / self._budget))
        if elapsed < self._budget:
            return False
        return samples >= MIN_SAMPLES or elapsed >= OVERRUN * self._budget


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 4)
