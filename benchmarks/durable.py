"""Durable ``AsyncDiskStorage`` figures, on the default asyncio loop and on uvloop.

Three interleaved groups, each measurement in a fresh directory, each figure both inside one log file and across
files:

- one caller, one 100 B entry per ``save``, for a fixed time, against the pwrite + fdatasync loop into a
  preallocated file (the limit; >= 0.7x; the appending variant is reported beside it) and aiosqlite (one row per
  transaction, synchronous=FULL; >= 1.5x). Across files: the log starts 200 entries before the end of its file
  (``prefill``), so every measurement includes a rotation, far more often than a real log (one per 30,000 entries);
- one caller saving batches of 256 x 1 KiB (100 batches: one file; 400: 102,400 entries, several rotations),
  against the same loop writing the same bytes (>= 0.8x) and sqlite3 (WAL, synchronous=FULL, one transaction per
  batch; >= 2.5x);
- 64 concurrent callers (one 100 B entry per ``save``, indexes in call order) against one caller (>= 20x) and
  sqlite3 with one row per transaction (>= 15x, held against the better of one thread and 64 threads), with
  ``stats()`` and the lag of a 1 ms heartbeat task during the load (p99 <= 1 ms, max <= 5 ms); across files, the
  log starts 2,000 entries before the end of its file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from importlib import metadata
from typing import Any

from aiowal.format import MAX_ENTRIES
from benchmarks.common import (
    Config,
    Scratch,
    compare,
    interleave,
    limit,
    payload,
    percentiles,
    ratio,
    settle,
    summary,
)
from benchmarks.workloads import (
    BatchPool,
    Result,
    aiosqlite_loop,
    aiowal_batches,
    aiowal_callers,
    format_floor_off_loop,
    plain_batches,
    plain_loop,
    prefill,
    sqlite_batches,
    sqlite_threads,
)


def run_asyncio(cfg: Config, scratch: Scratch) -> dict[str, Any]:
    with asyncio.Runner() as runner:
        return _run_on(runner, cfg, scratch, "asyncio")


def run_uvloop(cfg: Config, scratch: Scratch) -> dict[str, Any]:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return _run_on(runner, cfg, scratch, f"uvloop {metadata.version('uvloop')}")


SINGLE_PREFILL_GAP = 200  # across files: entries left in the current file when a one-caller measurement starts
MANY_PREFILL_GAP = 2_000  # ... when a 64-caller measurement starts


def _run_on(runner: asyncio.Runner, cfg: Config, scratch: Scratch, loop_name: str) -> dict[str, Any]:
    small = payload(cfg.small_entry_bytes, seed=5)
    pool = BatchPool(cfg.batch_entries, payload(cfg.entry_bytes, seed=6))
    secs = cfg.durable_seconds
    last: dict[str, Result] = {}

    def on_loop(
        name: str, make: Callable[[str], Coroutine[Any, Any, Result]], prefilled: int = 0
    ) -> Callable[[], float]:
        def measure() -> float:
            path = scratch.fresh(name)
            try:
                if prefilled:
                    prefill(path, prefilled, small)
                    settle()
                res = runner.run(make(path))
            finally:
                scratch.remove(path)
            last[name] = res
            crossed.setdefault(name, []).append(res.extra.get("files", 1) > 1)
            return res.ops_per_s

        return measure

    def blocking(name: str, fn: Callable[[str], Result]) -> Callable[[], float]:
        def measure() -> float:
            path = scratch.fresh(name)
            try:
                res = fn(path)
            finally:
                scratch.remove(path)
            last[name] = res
            return res.ops_per_s

        return measure

    def group(cases: dict[str, Callable[[], float]], unit: str) -> dict[str, dict[str, Any]]:
        for case in cases.values():
            case()  # warm-up (and fills the batch pool)
        settle()
        crossed.clear()
        for kept in (*lags.values(), *own.values(), pauses):
            kept.clear()  # only the measured runs' lags
        samples = interleave(cases, cfg.durable_rounds, between=settle)
        return {name: summary(s, unit) for name, s in samples.items()}

    crossed: dict[str, list[bool]] = {}
    lags: dict[str, list[float]] = {"one_file": [], "across_files": []}
    own: dict[str, list[float]] = {"one_file": [], "across_files": []}
    pauses: list[tuple[int, float]] = []
    loop_type = runner.run(_loop_type())
    n = cfg.callers
    single_fill = MAX_ENTRIES - SINGLE_PREFILL_GAP
    many_fill = MAX_ENTRIES - MANY_PREFILL_GAP

    # 1. one caller, one small entry per save
    single = group(
        {
            "aiowal": on_loop("d-single-aiowal", lambda p: aiowal_callers(p, 1, secs, small)),
            "aiowal_across_files": on_loop(
                "d-single-across", lambda p: aiowal_callers(p, 1, secs, small, prefilled=single_fill), single_fill
            ),
            "plain_fdatasync_loop": blocking("d-single-plain", lambda p: plain_loop(p, secs, small)),
            "plain_append_fdatasync_loop": blocking(
                "d-single-append", lambda p: plain_loop(p, secs, small, prealloc=False)
            ),
            "format_floor_off_loop": on_loop("d-single-floor", lambda p: format_floor_off_loop(p, secs, small)),
            "aiosqlite_full": on_loop("d-single-aiosqlite", lambda p: aiosqlite_loop(p, secs, small)),
        },
        "saves/s",
    )
    single_crossed = sum(crossed["d-single-across"])
    single_stats = last["d-single-aiowal"].extra["stats"]

    # 2. batches of 256 x 1 KiB, inside one file and across files
    nb1, nb2 = cfg.write_batches, cfg.write_batches_across
    batch = group(
        {
            "aiowal": on_loop("d-batch-aiowal", lambda p: aiowal_batches(p, pool, nb1)),
            "aiowal_across_files": on_loop("d-batch-across", lambda p: aiowal_batches(p, pool, nb2)),
            "plain_fdatasync_loop": blocking("d-batch-plain", lambda p: plain_batches(p, pool, nb1)),
            "plain_fdatasync_loop_long": blocking("d-batch-plain2", lambda p: plain_batches(p, pool, nb2)),
            "plain_append_fdatasync_loop": blocking(
                "d-batch-append", lambda p: plain_batches(p, pool, nb1, prealloc=False)
            ),
            "sqlite_full": blocking("d-batch-sqlite", lambda p: sqlite_batches(p, pool, nb1)),
            "sqlite_full_long": blocking("d-batch-sqlite2", lambda p: sqlite_batches(p, pool, nb2)),
        },
        "entries/s",
    )
    batch_files = last["d-batch-across"].extra["files"]

    # 3. 64 concurrent callers, with a heartbeat measuring loop lag during the aiowal runs

    def with_lags(name: str, where: str, fill: int) -> Callable[[], float]:
        measure = on_loop(
            name, lambda p: aiowal_callers(p, n, secs, small, heartbeat_s=cfg.heartbeat_s, prefilled=fill), fill
        )

        def run() -> float:
            value = measure()
            lags[where].extend(last[name].extra["lags"])
            own[where].extend(last[name].extra["lags_own_cpu"])
            pauses.extend(last[name].extra["gc_pauses"])
            return value

        return run

    many = group(
        {
            f"aiowal_{n}_callers": with_lags("d-many-aiowal", "one_file", 0),
            f"aiowal_{n}_callers_across_files": with_lags("d-many-across", "across_files", many_fill),
            "aiowal_1_caller": on_loop("d-many-aiowal1", lambda p: aiowal_callers(p, 1, secs, small)),
            "sqlite_full_1_thread": blocking("d-many-sqlite1", lambda p: sqlite_threads(p, 1, secs, small)),
            f"sqlite_full_{n}_threads": blocking("d-many-sqliteN", lambda p: sqlite_threads(p, n, secs, small)),
        },
        "saves/s",
    )
    many_crossed = sum(crossed["d-many-across"])
    many_stats = last["d-many-aiowal"].extra["stats"]
    idle_lags = runner.run(_idle_lags(cfg.heartbeat_s, max(0.1, secs / 2)))

    a1, aN = many["aiowal_1_caller"], many[f"aiowal_{n}_callers"]
    aN_across = many[f"aiowal_{n}_callers_across_files"]
    sq1, sqN = many["sqlite_full_1_thread"], many[f"sqlite_full_{n}_threads"]
    sq_best = sq1 if sq1["median"] >= sqN["median"] else sqN
    lag = {where: percentiles(values, 1e3) for where, values in lags.items()}
    saves, syncs = many_stats["saves"], many_stats["syncs"]
    rounds = cfg.durable_rounds
    return {
        "loop": loop_name,
        "loop_type": loop_type,
        "single_caller_100B": {
            "what": f"one caller, one {cfg.small_entry_bytes} B entry per save, hard_sync=True, {secs} s per run; "
            f"across files: the log starts {SINGLE_PREFILL_GAP} entries before the end of its file "
            f"({single_crossed} of {rounds} measured runs crossed into the next file)",
            "throughput": single,
            "ratios": {
                "aiowal_vs_plain_fdatasync_loop": compare(single["aiowal"], single["plain_fdatasync_loop"], 0.7),
                "aiowal_across_files_vs_plain_fdatasync_loop": compare(
                    single["aiowal_across_files"], single["plain_fdatasync_loop"], 0.7
                ),
                "aiowal_vs_aiosqlite_full": compare(single["aiowal"], single["aiosqlite_full"], 1.5),
                "aiowal_across_files_vs_aiosqlite_full": compare(
                    single["aiowal_across_files"], single["aiosqlite_full"], 1.5
                ),
                "aiowal_vs_plain_append_fdatasync_loop": compare(
                    single["aiowal"],
                    single["plain_append_fdatasync_loop"],
                    note="appending grows the file: every fdatasync also commits the journal",
                ),
                "format_floor_off_loop_vs_plain_fdatasync_loop": compare(
                    single["format_floor_off_loop"],
                    single["plain_fdatasync_loop"],
                    note="the raftwal format's two writes with the fdatasync in a Python worker thread and nothing "
                    "else: the bare minimum of aiowal's design in Python",
                ),
                "aiowal_vs_format_floor_off_loop": compare(single["aiowal"], single["format_floor_off_loop"]),
            },
            "stats_last_run": single_stats,
        },
        "batch_256x1k": {
            "what": f"one caller, batches of {cfg.batch_entries} x {cfg.entry_bytes} B per save, hard_sync=True: "
            f"{nb1} batches (one file) and {nb2} batches ({nb2 * cfg.batch_entries} entries, {batch_files} aiowal "
            "log files); the plain loop and sqlite write the same batches (suffix _long: the larger amount)",
            "throughput": batch,
            "ratios": {
                "aiowal_vs_plain_fdatasync_loop": compare(batch["aiowal"], batch["plain_fdatasync_loop"], 0.8),
                "aiowal_across_files_vs_plain_fdatasync_loop": compare(
                    batch["aiowal_across_files"], batch["plain_fdatasync_loop_long"], 0.8
                ),
                "aiowal_vs_sqlite_full": compare(batch["aiowal"], batch["sqlite_full"], 2.5),
                "aiowal_across_files_vs_sqlite_full": compare(
                    batch["aiowal_across_files"], batch["sqlite_full_long"], 2.5
                ),
                "aiowal_vs_plain_append_fdatasync_loop": compare(batch["aiowal"], batch["plain_append_fdatasync_loop"]),
            },
        },
        f"callers_{n}": {
            "what": f"{n} asyncio tasks, each awaiting save(entries=[one {cfg.small_entry_bytes} B entry]) in a loop, "
            "index from a shared counter taken right before the call; sqlite: one row per transaction, "
            f"1 thread and {n} threads each on its own connection; across files: the log starts "
            f"{MANY_PREFILL_GAP} entries before the end of its file ({many_crossed} of {rounds} measured runs "
            "crossed into the next file), compared with the one caller across files of the group above",
            "throughput": many,
            "ratios": {
                "aiowal_vs_single_caller": compare(aN, a1, 20.0),
                "aiowal_across_files_vs_single_caller": compare(aN_across, single["aiowal_across_files"], 20.0),
                "aiowal_vs_sqlite_best": compare(
                    aN, sq_best, 15.0, note=f"the better of sqlite with 1 and {n} threads"
                ),
                "aiowal_across_files_vs_sqlite_best": compare(aN_across, sq_best, 15.0),
                "aiowal_vs_sqlite_1_thread": compare(aN, sq1),
                f"aiowal_vs_sqlite_{n}_threads": compare(aN, sqN),
                "syncs_per_save": ratio(syncs, max(saves, 1), note="from stats() of the last run; << 1"),
            },
            "stats_last_run": many_stats,
            "loop_lag_ms": {
                "what": f"a task sleeping {cfg.heartbeat_s * 1e3:g} ms in a loop during the {n}-caller runs; lag is "
                "how much later than asked each sleep returned",
                "under_load": lag["one_file"],
                "under_load_across_files": lag["across_files"],
                "under_load_own_cpu": percentiles(own["one_file"], 1e3),
                "under_load_across_files_own_cpu": percentiles(own["across_files"], 1e3),
                "own_cpu_note": "min(lag, CPU time the loop thread used during the interval): the part of the lag "
                "that aiowal and the callers' own code can account for; the rest is time the thread waited for a "
                "CPU taken by other processes",
                "idle": percentiles(idle_lags, 1e3),
                "gc_during_load": {
                    f"generation_{g}": percentiles([sec for gen, sec in pauses if gen == g], 1e3) for g in (0, 1, 2)
                },
                "gc_note": "the process's garbage collections during those runs (the heap is the benchmark's and "
                "the callers' as much as aiowal's); a full (generation 2) collection stalls the loop for its length",
            },
            "limits": {
                "loop_lag_p99_ms": limit(lag["one_file"]["p99"], 1.0, "ms"),
                "loop_lag_max_ms": limit(lag["one_file"]["max"], 5.0, "ms"),
                "loop_lag_p99_ms_across_files": limit(lag["across_files"]["p99"], 1.0, "ms"),
                "loop_lag_max_ms_across_files": limit(lag["across_files"]["max"], 5.0, "ms"),
            },
        },
    }


async def _loop_type() -> str:
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__qualname__}"


async def _idle_lags(period: float, seconds: float) -> list[float]:
    """The heartbeat on an idle loop: the timer's own granularity, for reference."""
    out: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        await asyncio.sleep(period)
        out.append(time.perf_counter() - t0 - period)
    return out
