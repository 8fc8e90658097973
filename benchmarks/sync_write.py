"""Non-durable ``save`` of batches of 256 x 1 KiB entries against sqlite3 (WAL, synchronous=OFF), PySyncObj's
FileJournal and the minimal Python loop (pack each entry's 32-byte header + data, one ``os.write`` per batch).

Every system gets the same prebuilt ``raftpb.Entry`` batches, writes them into a fresh directory (so no run pays for
another's files), and is timed from its first to its last batch; opening and closing are not timed. Two amounts:
inside one aiowal log file (fewer than its 30,000 entries: appends only), and across files (100,000 entries or
more: several rotations, each closing a full file and creating the next).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from pysyncobj.journal import FileJournal

from aiowal import DiskStorage
from aiowal.format import MAX_ENTRIES
from aiowal.raftpb import Entry
from benchmarks.common import Config, Scratch, compare, interleave, make_batches, pack_minimal, payload, settle, summary

Batches = list[list[Entry]]

SQLITE_SCHEMA = "CREATE TABLE log (idx INTEGER PRIMARY KEY, term INTEGER, type INTEGER, data BLOB)"
SQLITE_INSERT = "INSERT INTO log (idx, term, type, data) VALUES (?, ?, ?, ?)"


def sqlite_open(path: str, synchronous: str) -> sqlite3.Connection:
    """An sqlite3 database in WAL mode with the log table; transactions are explicit (autocommit off)."""
    os.makedirs(path, exist_ok=True)
    conn = sqlite3.connect(os.path.join(path, "log.db"), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(SQLITE_SCHEMA)
    return conn


def sqlite_insert_batch(conn: sqlite3.Connection, batch: list[Entry]) -> None:
    """One transaction for a batch."""
    conn.execute("BEGIN")
    conn.executemany(SQLITE_INSERT, [(e.index, e.term, e.type, e.data) for e in batch])
    conn.execute("COMMIT")


Measurer = Callable[[Scratch, str, Batches], float]
H = TypeVar("H")


def _timed(open_: Callable[[str], H], write: Callable[[H, Batches], None], close: Callable[[H], None]) -> Measurer:
    """A measurement: open a fresh directory, time writing every batch (entries/s), close and remove it."""

    def measure(scratch: Scratch, name: str, batches: Batches) -> float:
        path = scratch.fresh(name)
        handle = open_(path)
        try:
            t0 = time.perf_counter()
            write(handle, batches)
            elapsed = time.perf_counter() - t0
        finally:
            close(handle)
            scratch.remove(path)
        return sum(len(b) for b in batches) / elapsed

    return measure


def _aiowal_write(st: DiskStorage, batches: Batches) -> None:
    save = st.save
    for b in batches:
        save(entries=b)


def _sqlite_write(conn: sqlite3.Connection, batches: Batches) -> None:
    for b in batches:
        sqlite_insert_batch(conn, b)


def _pysyncobj_open(path: str) -> FileJournal:
    os.makedirs(path, exist_ok=True)
    return FileJournal(os.path.join(path, "journal"))


def _pysyncobj_write(journal: FileJournal, batches: Batches) -> None:
    # FileJournal has no batch call: Raft adds entries one by one (command, index, term). It keeps no entry type.
    add = journal.add
    for b in batches:
        for e in b:
            add(e.data, e.index, e.term)


def _minimal_loop_open(path: str) -> int:
    os.makedirs(path, exist_ok=True)
    return os.open(os.path.join(path, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def _minimal_loop_write(fd: int, batches: Batches) -> None:
    write = os.write
    for b in batches:
        write(fd, pack_minimal(b))


SYSTEMS: dict[str, Measurer] = {
    "aiowal": _timed(lambda p: DiskStorage.open(p, hard_sync=False), _aiowal_write, lambda st: st.close()),
    "sqlite": _timed(lambda p: sqlite_open(p, "OFF"), _sqlite_write, lambda c: c.close()),
    "pysyncobj": _timed(_pysyncobj_open, _pysyncobj_write, lambda j: j._destroy()),
    "minimal_python_loop": _timed(_minimal_loop_open, _minimal_loop_write, os.close),
}


def run(cfg: Config, scratch: Scratch) -> dict[str, Any]:
    data = payload(cfg.entry_bytes, seed=1)
    batches = make_batches(1, max(cfg.write_batches, cfg.write_batches_across), cfg.batch_entries, data)
    out: dict[str, Any] = {
        "systems": {
            "aiowal": "DiskStorage.save(entries=batch), hard_sync=False",
            "sqlite": "sqlite3 WAL, synchronous=OFF, one transaction per batch (executemany)",
            "pysyncobj": "pysyncobj.journal.FileJournal.add(data, index, term) per entry (no batch call, no type)",
            "minimal_python_loop": "pack 32-byte header + data per entry, b''.join, one os.write per batch",
        }
    }
    for name, n_batches in (("one_file", cfg.write_batches), ("across_files", cfg.write_batches_across)):
        out[name] = _measure(cfg, scratch, batches[:n_batches])
    return out


def _measure(cfg: Config, scratch: Scratch, batches: Batches) -> dict[str, Any]:
    cases = {name: partial(measure, scratch, name, batches) for name, measure in SYSTEMS.items()}
    for case in cases.values():  # warm-up: imports, code paths, allocator
        case()
    settle()
    samples = interleave(cases, cfg.rounds, between=settle)
    med = {name: summary(s, "entries/s") for name, s in samples.items()}
    entries = sum(map(len, batches))
    return {
        "what": f"non-durable save of {len(batches)} batches of {cfg.batch_entries} x {cfg.entry_bytes} B entries "
        f"({entries} entries: {-(-entries // MAX_ENTRIES)} aiowal log file(s)) into a fresh directory",
        "throughput": med,
        "payload_mib_per_s": {n: round(m["median"] * cfg.entry_bytes / 2**20, 1) for n, m in med.items()},
        "ratios": {
            "aiowal_vs_minimal_python_loop": compare(med["aiowal"], med["minimal_python_loop"], 0.85),
            "aiowal_vs_pysyncobj": compare(med["aiowal"], med["pysyncobj"], 2.5),
            "aiowal_vs_sqlite": compare(med["aiowal"], med["sqlite"], 3.0),
        },
    }
