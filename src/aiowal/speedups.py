"""Which implementation does the hot loops: the C accelerator when it is built, else pure Python.

The accelerator packs and reads log records, checks a save's entries (indexes and terms), and gives
``AsyncDiskStorage`` a thread that runs ``fdatasync`` without the GIL (Linux only: built where there is ``eventfd``;
elsewhere ``sync_worker`` is None and a Python thread runs every sync). ``AIOWAL_PURE_PYTHON=1`` in the environment
turns it all off; tests set these names to None to run the pure-Python paths, and compare the two.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiowal.raftpb import Entry

if TYPE_CHECKING:
    from aiowal._speedups import SyncWorker as SyncWorker  # the type AsyncDiskStorage holds

PackFn = Callable[[Sequence[Entry], int, int, int, int, bool], "tuple[bytes, bytes, int, int, int, int, int] | None"]
ReadFn = Callable[[type[Entry], Any, int, int, int, int, bool, list[Entry]], int]

pack: PackFn | None = None
"""``pack(entries, start, stop, data_end, max_data_end, force_first)``: records and slots of the entries that fit
(see ``records.pack``, its pure-Python twin), or None when none does."""
read: ReadFn | None = None
"""``read(Entry, buffer, s, stop, hi, budget, started, out)``: see ``LogFile.read``; ValueError for a bad record."""
entries_ok: Callable[[Sequence[Entry], type[Entry]], bool] | None = None
"""``entries_ok(entries, Entry)``: every item an ``Entry``, indexes contiguous from 1 or more (False: not so)."""
terms_ok: Callable[[Sequence[Entry], int], bool] | None = None
"""``terms_ok(entries, low)``: every term ``>= low`` and none below the one before it (False: not so)."""
sync_worker: type[SyncWorker] | None = None
"""``SyncWorker()``: a thread that runs ``fdatasync`` without the GIL and reports through an eventfd (None where the
accelerator was built without one)."""
hardware_crc = False

if os.environ.get("AIOWAL_PURE_PYTHON", "") in ("", "0"):
    try:
        from aiowal import _speedups
    except ImportError:  # not built (no compiler when installed): the pure-Python paths do the same work
        pass
    else:
        pack, read, entries_ok, terms_ok = _speedups.pack, _speedups.read, _speedups.entries_ok, _speedups.terms_ok
        sync_worker = getattr(_speedups, "SyncWorker", None)
        hardware_crc = bool(_speedups.HARDWARE_CRC)
