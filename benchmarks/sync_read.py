"""Issue 2: ``entries(lo, lo + 100)`` at random ``lo`` against the same range select in sqlite3.

Both stores hold the same log of 1 KiB entries (written, closed and reopened, so both read from a warm page cache
through a freshly opened handle). Every measurement runs the same sequence of random ``lo``.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from aiowal import DiskStorage
from aiowal.raftpb import Entry
from benchmarks.common import Config, Scratch, compare, interleave, make_batches, payload, summary
from benchmarks.sync_write import sqlite_insert_batch, sqlite_open

SELECT = "SELECT idx, term, type, data FROM log WHERE idx >= ? AND idx < ? ORDER BY idx"


def _populate(cfg: Config, scratch: Scratch) -> tuple[str, str]:
    data = payload(cfg.entry_bytes, seed=2)
    n_batches = -(-cfg.read_log_entries // cfg.batch_entries)
    batches = make_batches(1, n_batches, cfg.batch_entries, data)
    wal_dir, db_dir = scratch.fresh("read-aiowal"), scratch.fresh("read-sqlite")
    with DiskStorage.open(wal_dir, hard_sync=False) as st:  # the fill (SQLite's is synchronous=OFF too)
        for b in batches:
            st.save(entries=b)
    conn = sqlite_open(db_dir, "OFF")
    for b in batches:
        sqlite_insert_batch(conn, b)
    conn.close()
    return wal_dir, db_dir


def run(cfg: Config, scratch: Scratch) -> dict[str, Any]:
    wal_dir, db_dir = _populate(cfg, scratch)
    span = cfg.read_span
    st = DiskStorage.open(wal_dir)
    conn = sqlite3.connect(f"{db_dir}/log.db", isolation_level=None)
    try:
        last = st.last_index()
        rng = random.Random(3)
        los = [rng.randint(st.first_index(), last - span + 1) for _ in range(cfg.read_queries)]

        def aiowal() -> float:
            entries = st.entries
            t0 = time.perf_counter()
            for lo in los:
                entries(lo, lo + span)
            return len(los) / (time.perf_counter() - t0)

        def sqlite_rows() -> float:
            execute = conn.execute
            t0 = time.perf_counter()
            for lo in los:
                execute(SELECT, (lo, lo + span)).fetchall()
            return len(los) / (time.perf_counter() - t0)

        def sqlite_entries() -> float:
            execute = conn.execute
            t0 = time.perf_counter()
            for lo in los:
                [Entry(index=i, term=t, type=ty, data=d) for i, t, ty, d in execute(SELECT, (lo, lo + span))]
            return len(los) / (time.perf_counter() - t0)

        _check_same(st, conn, los[:20], span)
        cases: dict[str, Callable[[], float]] = {
            "aiowal": aiowal,
            "sqlite_rows": sqlite_rows,
            "sqlite_entries": sqlite_entries,
        }
        for case in cases.values():
            case()  # warm-up
        samples = interleave(cases, cfg.rounds)
    finally:
        st.close()
        conn.close()
    med = {name: summary(s, "queries/s") for name, s in samples.items()}
    return {
        "what": f"entries(lo, lo+{span}) at {cfg.read_queries} random lo over a log of {last} x {cfg.entry_bytes} B "
        "entries, warm page cache",
        "systems": {
            "aiowal": "DiskStorage.entries(lo, lo+100) -> list[raftpb.Entry]",
            "sqlite_rows": f"{SELECT} .fetchall() -> list of tuples",
            "sqlite_entries": "the same select, building a raftpb.Entry from each row",
        },
        "throughput": med,
        "entries_per_s": {n: round(m["median"] * span) for n, m in med.items()},
        "ratios": {
            "aiowal_vs_sqlite_rows": compare(med["aiowal"], med["sqlite_rows"], 1.1),
            "aiowal_vs_sqlite_entries": compare(med["aiowal"], med["sqlite_entries"]),
        },
    }


def _check_same(st: DiskStorage, conn: sqlite3.Connection, los: list[int], span: int) -> None:
    """Both stores return the same entries (a benchmark of wrong answers is worthless)."""
    for lo in los:
        got = [(e.index, e.term, e.type, e.data) for e in st.entries(lo, lo + span)]
        want = conn.execute(SELECT, (lo, lo + span)).fetchall()
        if got != want:
            raise AssertionError(f"aiowal and sqlite disagree on entries({lo}, {lo + span})")
