"""Durable throughput against the number of concurrent callers (1, 2, 4, ... 256), one 100 B entry per
operation, for aiowal (asyncio tasks on the default loop, and on uvloop), sqlite3 (one row per transaction, N threads
each on its own connection) and the plain write + fdatasync loop (N threads writing into one preallocated file).

At each level the systems are interleaved over the rounds; medians are plotted by ``python -m benchmarks.plot``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from benchmarks.common import Config, Scratch, compare, interleave, payload, settle, sig, summary
from benchmarks.workloads import Result, aiowal_callers, plain_threads, sqlite_threads

SYSTEMS = ("aiowal", "aiowal_uvloop", "sqlite", "plain_fdatasync_loop")


def run(cfg: Config, scratch: Scratch) -> dict[str, Any]:
    import uvloop

    data = payload(cfg.small_entry_bytes, seed=7)
    secs = cfg.sweep_seconds
    levels: dict[str, Any] = {}
    with asyncio.Runner() as default, asyncio.Runner(loop_factory=uvloop.new_event_loop) as uv:

        def measure(name: str, fn: Callable[[str], Result]) -> Callable[[], float]:
            def go() -> float:
                path = scratch.fresh(name)
                try:
                    return fn(path).ops_per_s
                finally:
                    scratch.remove(path)

            return go

        def cases_at(n: int) -> dict[str, Callable[[], float]]:
            return {
                "aiowal": measure("s-aiowal", lambda p: default.run(aiowal_callers(p, n, secs, data))),
                "aiowal_uvloop": measure("s-aiowal-uv", lambda p: uv.run(aiowal_callers(p, n, secs, data))),
                "sqlite": measure("s-sqlite", lambda p: sqlite_threads(p, n, secs, data)),
                "plain_fdatasync_loop": measure("s-plain", lambda p: plain_threads(p, n, secs, data)),
            }

        for n in cfg.sweep_levels:
            cases = cases_at(n)
            samples = interleave(cases, cfg.sweep_rounds, between=settle)
            med = {name: summary(s, "ops/s") for name, s in samples.items()}
            levels[str(n)] = {
                "throughput": med,
                "ratios": {
                    "aiowal_vs_sqlite": compare(med["aiowal"], med["sqlite"]),
                    "aiowal_vs_plain_fdatasync_loop": compare(med["aiowal"], med["plain_fdatasync_loop"]),
                },
            }
    return {
        "what": f"durable saves of one {cfg.small_entry_bytes} B entry per operation, {secs} s per run, "
        f"{cfg.sweep_rounds} interleaved rounds per level",
        "systems": {
            "aiowal": "N asyncio tasks awaiting AsyncDiskStorage.save (hard_sync=True), default event loop",
            "aiowal_uvloop": "the same on uvloop",
            "sqlite": "N threads, each on its own connection (WAL, synchronous=FULL), one row per BEGIN IMMEDIATE ... "
            "COMMIT, writers taking turns on a threading.Lock (see benchmarks/workloads.py)",
            "plain_fdatasync_loop": "N threads sharing one preallocated file, each writing one entry, then fdatasync",
        },
        "levels": levels,
        "series": {
            name: {
                "callers": list(cfg.sweep_levels),
                "ops_per_s": [levels[str(n)]["throughput"][name]["median"] for n in cfg.sweep_levels],
            }
            for name in SYSTEMS
        },
        "peak_ops_per_s": {
            name: sig(max(levels[str(n)]["throughput"][name]["median"] for n in cfg.sweep_levels)) for name in SYSTEMS
        },
    }
