"""Issue 2: opening a WAL of 1,000,000 entries takes <= 200 ms (no full scan), and the Python heap after opening does
not grow with the size of the log (tracemalloc, 100,000 against 1,000,000 entries).

Both logs are built once per run with ``save`` batches of small entries and closed. Opens are timed with a warm
page cache (interleaved small/large), and once more after ``posix_fadvise(DONTNEED)`` dropped the files' cached pages
(cold, reported but not held to a target: it measures the disk). Last, the large log grows until its current file
is nearly full (29,999 entries), the worst case for the record-by-record check of the current file on open.
"""

from __future__ import annotations

import gc
import os
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from aiowal import DiskStorage
from aiowal.format import MAX_ENTRIES
from aiowal.raftpb import Entry, EntryNormal
from benchmarks.common import Config, Scratch, interleave, limit, payload, ratio, settle, sig, summary


def build(path: str, n: int, entry_bytes: int, batch: int) -> None:
    """Grow the log at ``path`` (new or not) to ``n`` entries with save batches of ``batch``."""
    data = payload(entry_bytes, seed=4)
    with DiskStorage.open(path, hard_sync=False) as st:  # the fill; close() makes it durable
        for first in range(st.last_index() + 1, n + 1, batch):
            stop = min(first + batch, n + 1)
            st.save(entries=[Entry(term=1, index=i, type=EntryNormal, data=data) for i in range(first, stop)])


def _open_ms(path: str) -> float:
    t0 = time.perf_counter()
    st = DiskStorage.open(path)
    elapsed = time.perf_counter() - t0
    st.close()
    return elapsed * 1e3


def _drop_cache(path: str) -> None:
    for name in os.listdir(path):
        fd = os.open(os.path.join(path, name), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _heap_after_open(path: str) -> dict[str, Any]:
    """Python heap (tracemalloc) held by an open storage, and the peak while opening it."""
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        st = DiskStorage.open(path)
        current, peak = tracemalloc.get_traced_memory()
        info = {
            "entries": st.num_entries(),
            "log_files": len(os.listdir(path)) - 1,
            "current_bytes": current - base,
            "peak_bytes": peak - base,
        }
        st.close()
    finally:
        tracemalloc.stop()
    return info


def run(cfg: Config, scratch: Scratch) -> dict[str, Any]:
    small, large = scratch.fresh("open-small"), scratch.fresh("open-large")
    t0 = time.perf_counter()
    build(small, cfg.open_small_entries, cfg.open_entry_bytes, cfg.open_build_batch)
    build(large, cfg.open_large_entries, cfg.open_entry_bytes, cfg.open_build_batch)
    build_s = time.perf_counter() - t0
    settle()
    cases: dict[str, Callable[[], float]] = {"small": lambda: _open_ms(small), "large": lambda: _open_ms(large)}
    for case in cases.values():
        case()  # warm-up
    warm = interleave(cases, cfg.rounds)
    cold: list[float] = []
    for _ in range(max(1, cfg.rounds // 3)):
        _drop_cache(large)
        cold.append(_open_ms(large))
    heap_small = _heap_after_open(small)
    heap_large = _heap_after_open(large)
    # The current (last) file is checked record by record on open: the worst case is a nearly full one.
    full_current = cfg.open_large_entries + (MAX_ENTRIES - 1 - cfg.open_large_entries % MAX_ENTRIES)
    build(large, full_current, cfg.open_entry_bytes, cfg.open_build_batch)
    settle()
    _open_ms(large)
    worst = [_open_ms(large) for _ in range(cfg.rounds)]
    n_small, n_large = heap_small["entries"], heap_large["entries"]
    growth = (heap_large["current_bytes"] - heap_small["current_bytes"]) / max(1, n_large - n_small)
    med_small, med_large = summary(warm["small"], "ms")["median"], summary(warm["large"], "ms")["median"]
    return {
        "what": f"DiskStorage.open of WALs of {n_small} and {n_large} entries of {cfg.open_entry_bytes} B "
        f"(built with save batches of {cfg.open_build_batch} in {build_s:.1f} s)",
        "open_ms": {
            f"warm_{n_small}": summary(warm["small"], "ms"),
            f"warm_{n_large}": summary(warm["large"], "ms"),
            f"cold_{n_large}": summary(cold, "ms"),
            f"warm_{full_current}_current_file_full": summary(worst, "ms"),
        },
        "heap": {
            f"after_open_{n_small}": heap_small,
            f"after_open_{n_large}": heap_large,
            "growth_bytes_per_entry": sig(growth),
        },
        "limits": {
            "open_large_ms": limit(med_large, cfg.open_target_ms, "ms", "median warm open, large log"),
            "heap_growth_bytes_per_entry": limit(
                growth, 1.0, "B/entry", "heap held after open grows by less than 1 byte per entry of log"
            ),
        },
        "ratios": {
            "open_large_vs_small": ratio(med_large, med_small, note="time, lower is better"),
            "heap_current_large_vs_small": ratio(
                max(1, heap_large["current_bytes"]), max(1, heap_small["current_bytes"]), note="heap, informational"
            ),
        },
    }
