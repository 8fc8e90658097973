"""Shared helpers: the benchmark configuration, interleaved rounds, summaries, payloads and scratch directories."""

from __future__ import annotations

import gc
import math
import os
import random
import shutil
import socket
import statistics
import struct
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiowal.raftpb import Entry, EntryNormal

# The floor's record: term, index, type, data length (u64 big-endian each) followed by the data.
FLOOR_HEADER = struct.Struct(">QQQQ")


@dataclass(frozen=True)
class Config:
    """Sizes of one run. ``full()`` is what ``make bench`` measures; ``quick()`` is the short smoke run."""

    quick: bool
    rounds: int  # interleaved rounds of every comparison (medians are over these)
    # issue 2: non-durable saves
    write_batches: int  # batches of 256 x 1 KiB per measurement
    batch_entries: int
    entry_bytes: int
    # issue 2: reads
    read_log_entries: int
    read_queries: int
    read_span: int
    # issue 2: open time and heap
    open_small_entries: int
    open_large_entries: int
    open_entry_bytes: int
    open_build_batch: int
    open_target_ms: float
    # issue 3: durable async
    small_entry_bytes: int
    durable_seconds: float  # length of one durable measurement
    durable_rounds: int
    callers: int
    heartbeat_s: float
    sweep_levels: tuple[int, ...]
    sweep_seconds: float
    sweep_rounds: int

    @classmethod
    def full(cls) -> Config:
        return cls(
            quick=False,
            rounds=7,
            write_batches=100,
            batch_entries=256,
            entry_bytes=1024,
            read_log_entries=50_000,
            read_queries=1_000,
            read_span=100,
            open_small_entries=100_000,
            open_large_entries=1_000_000,
            open_entry_bytes=16,
            open_build_batch=1_000,
            open_target_ms=200.0,
            small_entry_bytes=100,
            durable_seconds=0.4,
            durable_rounds=5,
            callers=64,
            heartbeat_s=0.001,
            sweep_levels=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            sweep_seconds=0.3,
            sweep_rounds=3,
        )

    @classmethod
    def quick_run(cls) -> Config:
        return cls(
            quick=True,
            rounds=2,
            write_batches=4,
            batch_entries=256,
            entry_bytes=1024,
            read_log_entries=2_000,
            read_queries=50,
            read_span=100,
            open_small_entries=2_000,
            open_large_entries=20_000,
            open_entry_bytes=16,
            open_build_batch=1_000,
            open_target_ms=200.0,
            small_entry_bytes=100,
            durable_seconds=0.05,
            durable_rounds=2,
            callers=64,
            heartbeat_s=0.001,
            sweep_levels=(1, 4, 16),
            sweep_seconds=0.05,
            sweep_rounds=1,
        )


# --- measurements -----------------------------------------------------------------------------------------------
Measure = Callable[[], float]


def interleave(
    cases: Mapping[str, Measure], rounds: int, between: Callable[[], None] | None = None
) -> dict[str, list[float]]:
    """Run every case once per round, rotating the order each round (ABC, BCA, CAB, ...) so that no case always
    runs first or right after the same neighbour; returns each case's samples in round order."""
    names = list(cases)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(cases[name]())
            if between is not None:
                between()
    return out


def summary(samples: Sequence[float], unit: str, digits: int = 4) -> dict[str, Any]:
    """Median, min, max and the samples themselves (rounded to ``digits`` significant digits)."""
    return {
        "unit": unit,
        "median": sig(statistics.median(samples), digits),
        "min": sig(min(samples), digits),
        "max": sig(max(samples), digits),
        "samples": [sig(s, digits) for s in samples],
    }


def ratio(
    a: float, b: float, target: float | None = None, higher_is_better: bool = True, note: str | None = None
) -> dict[str, Any]:
    """``a / b`` with the target it is held to (``met`` is None when there is no target)."""
    value = a / b if b else math.inf
    out: dict[str, Any] = {"value": sig(value, 4), "target": target}
    if target is None:
        out["met"] = None
    else:
        out["met"] = bool(value >= target) if higher_is_better else bool(value <= target)
    if note:
        out["note"] = note
    return out


def compare(
    a: Mapping[str, Any], b: Mapping[str, Any], target: float | None = None, note: str | None = None
) -> dict[str, Any]:
    """``ratio`` of two ``summary`` results (median over median), plus the median of the per-round ratios (each
    round's sample of ``a`` over the same round's sample of ``b``): steadier when the machine's speed drifts.
    A target counts as met only when both estimates meet it: on a machine whose speed drifts within a run, one of
    them alone can pass by luck."""
    out = ratio(a["median"], b["median"], target, note=note)
    pairs = [x / y for x, y in zip(a["samples"], b["samples"], strict=True) if y]
    if pairs:
        paired = sig(statistics.median(pairs), 4)
        out["paired_median"] = paired
        if target is not None:
            out["met"] = bool(out["met"] and paired >= target)
    return out


def limit(value: float, bound: float, unit: str, note: str | None = None) -> dict[str, Any]:
    """A figure held to an upper bound (a latency, a size)."""
    out: dict[str, Any] = {"value": sig(value, 4), "limit": bound, "unit": unit, "met": bool(value <= bound)}
    if note:
        out["note"] = note
    return out


def percentiles(samples: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """p50/p90/p99/max of ``samples`` times ``scale`` (nearest-rank)."""
    if not samples:
        return {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    data = sorted(samples)

    def pct(p: float) -> float:
        return sig(data[min(len(data) - 1, math.ceil(p * len(data)) - 1)] * scale, 4)

    return {"count": len(data), "p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": sig(data[-1] * scale, 4)}


def sig(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant digits (JSON stays readable)."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    return float(round(x, digits - 1 - math.floor(math.log10(abs(x)))))


# --- payloads ---------------------------------------------------------------------------------------------------
def payload(n: int, seed: int = 0) -> bytes:
    """``n`` incompressible bytes (the same for a given seed)."""
    return random.Random(seed).randbytes(n)


def make_batches(first_index: int, n_batches: int, per_batch: int, data: bytes, term: int = 1) -> list[list[Entry]]:
    """``n_batches`` contiguous batches of ``per_batch`` Normal entries starting at ``first_index``."""
    out = []
    idx = first_index
    for _ in range(n_batches):
        out.append([Entry(term=term, index=idx + k, type=EntryNormal, data=data) for k in range(per_batch)])
        idx += per_batch
    return out


def pack_floor(entries: Sequence[Entry]) -> bytes:
    """The floor's bytes for a batch: a 32-byte header and the data of each entry."""
    pack = FLOOR_HEADER.pack
    return b"".join([pack(e.term, e.index, e.type, len(e.data)) + e.data for e in entries])


# --- scratch space ----------------------------------------------------------------------------------------------
class Scratch:
    """A temporary directory on the same filesystem as the system temp dir; ``fresh(name)`` gives a new empty
    subdirectory path each call (not created)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._n = 0

    def fresh(self, name: str) -> str:
        self._n += 1
        return os.path.join(self.root, f"{name}-{self._n}")

    @staticmethod
    def remove(path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def scratch_dir() -> Iterator[Scratch]:
    root = tempfile.mkdtemp(prefix="aiowal-bench-", dir=os.environ.get("AIOWAL_BENCH_DIR"))
    try:
        yield Scratch(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def settle() -> None:
    """Flush dirty pages and collect the garbage left by the previous measurement, so that neither lands in the
    next one (a full collection of this process's heap can stall a measurement for tens of milliseconds)."""
    os.sync()
    gc.collect()


@contextmanager
def gc_pauses() -> Iterator[list[tuple[int, float]]]:
    """The garbage collections run while the block runs: (generation, seconds) each."""
    pauses: list[tuple[int, float]] = []
    started = [0.0]

    def watch(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((int(info["generation"]), time.perf_counter() - started[0]))

    gc.callbacks.append(watch)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(watch)


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports free on loopback right now (for processes that will listen on them)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports
