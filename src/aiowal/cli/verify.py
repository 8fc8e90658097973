"""``aiowal verify``: check every file of a WAL directory without changing it, and print what is wrong.

The output is capped (the first problems of each file, then a count), so a badly damaged file cannot bury the
summary; the exit status and the total count always cover every problem found.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from aiowal.cli.common import EXIT_OK, EXIT_PROBLEMS, CliError
from aiowal.errors import EncryptionKeyError, StorageError
from aiowal.format import (
    DATA_START,
    HARD_STATE_OFFSET,
    LOG_SUFFIX,
    MAX_ENTRIES,
    META_NAME,
    SLOT_AREA,
    SLOT_SIZE,
    SNAPSHOT_INDEX_OFFSET,
    parse_log_file_name,
)
from aiowal.fs import DEFAULT_FS
from aiowal.logfile import LogFile
from aiowal.meta import Meta
from aiowal.storage import DiskStorage

PROGRESS_MIN_SLOTS = 20_000  # show a progress bar (on a terminal) when verify walks more slots than this
MAX_PROBLEMS_PER_FILE = 20  # problems printed for one file before "... and N more"
MAX_PROBLEMS_SHOWN = 200  # problems printed in all


@dataclass
class VerifyReport:
    """What ``verify`` found: problems (each names a file and an offset), notes, and what it covered."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: int = 0
    entries: int = 0


@dataclass
class _FileScan:
    lf: LogFile
    used: int  # slots up to the first empty one
    first: int
    first_term: int
    last: int = 0
    last_term: int = 0


def cmd_verify(args: argparse.Namespace, key: bytes | None, out: Console) -> int:
    show = not args.no_progress and sys.stderr.isatty()
    report = verify_dir(args.dir, key, progress=show)
    for note in report.notes:
        out.print(f"note: {escape(note)}")
    if args.all:
        shown, omitted = report.problems, Counter[str | None]()
    else:
        shown, omitted = cap_problems(report.problems, MAX_PROBLEMS_PER_FILE, MAX_PROBLEMS_SHOWN)
    for problem in shown:
        out.print(escape(problem))
    for where, more in omitted.items():
        out.print(f"... and {more} more problem{'s' if more != 1 else ''}{f' in {escape(where)}' if where else ''}")
    if report.problems:
        n = len(report.problems)
        hint = f" ({len(shown)} shown; --all prints every one)" if omitted else ""
        out.print(f"FAILED: {n} problem{'s' if n != 1 else ''} in {escape(args.dir)}{hint}")
        return EXIT_PROBLEMS
    files = f"{report.files} log file{'s' if report.files != 1 else ''}"
    entries = f"{report.entries} entr{'ies' if report.entries != 1 else 'y'}"
    out.print(f"OK: {escape(args.dir)}: wal.meta, {files} and {entries} checked")
    return EXIT_OK


def cap_problems(problems: list[str], per_file: int, total: int) -> tuple[list[str], Counter[str | None]]:
    """The problems to print (at most ``per_file`` of each file, ``total`` in all, in their order) and how many
    were left out for each file (``None``: problems that name no file offset)."""
    shown: list[str] = []
    per: Counter[str | None] = Counter()
    omitted: Counter[str | None] = Counter()
    for problem in problems:
        where = problem_file(problem)
        if per[where] < per_file and len(shown) < total:
            shown.append(problem)
            per[where] += 1
        else:
            omitted[where] += 1
    return shown, omitted


def problem_file(problem: str) -> str | None:
    """The file a problem names (``FILE: offset N: ...``), or ``None``."""
    where, sep, _ = problem.partition(": offset ")
    return where if sep else None


def verify_dir(path: str, key: bytes | None, progress: bool = False) -> VerifyReport:
    """Check ``path`` without changing it: wal.meta, every log file's slot table and every record's bounds and
    checksum, the order of the files, and what a real open checks (key, snapshot, HardState)."""
    if not os.path.isdir(path):
        raise CliError(f"{path}: no such directory")
    names = sorted(os.listdir(path))
    if META_NAME not in names and not any(n.endswith(LOG_SUFFIX) for n in names):
        raise CliError(f"{path}: not a WAL directory (no wal.meta)")
    report = VerifyReport()
    # A real read-only open first: it checks the key (a wrong one is an error, not a finding) and runs every
    # open-time structure check. Its verdict is compared with the walk's below.
    open_error: str | None = None
    repairs: list[str] = []
    try:
        with DiskStorage.open(path, key=key, read_only=True) as st:
            repairs = [f"{_locate_repair(path, r)} (a writable open repairs this)" for r in st.repairs]
    except EncryptionKeyError:
        if key is not None:
            raise
        report.notes.append("the log is encrypted: record checksums are checked; pass --key-file to check the key too")
    except StorageError as exc:
        open_error = str(exc)

    floor, snapshot_index = _verify_meta(path, report)
    scans = _open_log_files(path, names, floor, report)
    try:
        total = sum(s.used for s in scans)
        columns = (
            TextColumn("verifying {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        bar = Progress(
            *columns,
            console=Console(stderr=True),
            transient=True,
            disable=not progress or total < PROGRESS_MIN_SLOTS,
        )
        with bar:
            task = bar.add_task(os.path.basename(os.path.abspath(path)), total=total)
            for scan in scans:
                _verify_slots(scan, report, lambda n: bar.advance(task, n))
        _verify_order(scans, snapshot_index, report)
    finally:
        for scan in scans:
            scan.lf.close()
    report.files = len(scans)
    report.problems.extend(repairs)
    if open_error is not None and not any(p.split(":", 1)[0] in open_error for p in report.problems):
        report.problems.append(open_error)
    return report


def _locate_repair(path: str, repair: str) -> str:
    """A repair message from the open, naming its file and offset (log-file repairs already do)."""
    if repair.startswith(path):
        return repair
    meta_path = os.path.join(path, META_NAME)
    offset = HARD_STATE_OFFSET if "HardState" in repair else SNAPSHOT_INDEX_OFFSET
    return f"{meta_path}: offset {offset}: {repair}"


def _verify_meta(path: str, report: VerifyReport) -> tuple[int, int]:
    """Check wal.meta; returns the floor file id (files below it were discarded by a snapshot) and the snapshot
    index."""
    meta_path = os.path.join(path, META_NAME)
    if not os.path.exists(meta_path):
        report.problems.append(f"{meta_path}: offset 0: wal.meta is missing beside log files")
        return 0, 0
    try:
        meta = Meta.open(DEFAULT_FS, path, writable=False)
    except StorageError as exc:
        report.problems.append(str(exc))
        return 0, 0
    try:
        return meta.floor_fid, meta.snapshot_index
    finally:
        meta.close()


def _open_log_files(path: str, names: list[str], floor: int, report: VerifyReport) -> list[_FileScan]:
    scans: list[_FileScan] = []
    try:
        for name in names:
            full = os.path.join(path, name)
            if not name.endswith(LOG_SUFFIX) or not os.path.isfile(full):
                continue
            fid = parse_log_file_name(name)
            if fid is None:
                report.notes.append(f"{full}: not a canonical log file name; ignored (Dgraph ignores it too)")
                continue
            if fid < floor:
                report.notes.append(f"{full}: discarded by a snapshot; a writable open deletes it")
                continue
            try:
                lf = LogFile.open(DEFAULT_FS, full, fid, writable=False)
            except StorageError as exc:
                report.problems.append(str(exc))
                continue
            used, first, first_term = _used_slots(lf)
            scans.append(_FileScan(lf, used, first, first_term))
    except BaseException:
        for scan in scans:
            scan.lf.close()
        raise
    # Dgraph's order: by the index in slot 0; empty files last (only the newest may be empty: the current file).
    scans.sort(key=lambda s: (s.used == 0, s.first, s.lf.fid))
    return scans


def _used_slots(lf: LogFile) -> tuple[int, int, int]:
    """(slots before the first empty one, first index, first term)."""
    if lf.mm is None:
        return 0, 0, 0
    table = array("Q")
    table.frombytes(lf.mm[:SLOT_AREA])
    table.byteswap()
    try:
        used = table[1::4].index(0)
    except ValueError:
        used = MAX_ENTRIES
    return used, (table[1] if used else 0), (table[0] if used else 0)


def _verify_slots(scan: _FileScan, report: VerifyReport, advance: Any) -> None:
    lf = scan.lf
    if lf.mm is None:
        report.notes.append(f"{lf.path}: empty file (0 bytes)")
        return
    prev_index = prev_term = 0
    prev_end = DATA_START
    step = 0
    for s in range(scan.used):
        info = lf.slot(s)
        where = f"{lf.path}: offset {s * SLOT_SIZE}: slot {s} (index {info.index})"
        if s:
            if info.index <= prev_index:
                report.problems.append(f"{where}: index does not follow {prev_index}")
            if info.term < prev_term:
                report.problems.append(f"{where}: term {info.term} is below the previous term {prev_term}")
            if info.offset < prev_end:
                report.problems.append(f"{where}: data offset {info.offset} overlaps the previous record")
        problem = lf.verify_record(s)
        if problem is not None:
            report.problems.append(f"{where}: {problem} (record at offset {info.offset})")
            prev_end = max(prev_end, info.offset + 4)
        else:
            prev_end = info.offset + 4 + int.from_bytes(lf.mm[info.offset : info.offset + 4], "big")
        prev_index, prev_term = info.index, info.term
        step += 1
        if step == 1024:
            advance(step)
            step = 0
    advance(step)
    report.entries += scan.used
    if scan.used:
        last = lf.slot(scan.used - 1)
        scan.last, scan.last_term = last.index, last.term
    tail_start = scan.used * SLOT_SIZE
    tail = lf.mm[tail_start:SLOT_AREA]
    stripped = tail.lstrip(b"\0")
    if stripped:
        off = (tail_start + len(tail) - len(stripped)) // SLOT_SIZE * SLOT_SIZE
        report.problems.append(
            f"{lf.path}: offset {off}: slot {off // SLOT_SIZE} is not empty after the first empty slot {scan.used}"
        )


def _verify_order(scans: list[_FileScan], snapshot_index: int, report: VerifyReport) -> None:
    """The files must continue each other: no overlap, no falling term, no gap (a lost file) after the snapshot."""
    live = [s for s in scans if s.used]
    if live and live[0].first > snapshot_index + 1:
        report.problems.append(
            f"{live[0].lf.path}: offset 0: the log starts at {live[0].first}, but the snapshot is at {snapshot_index}"
        )
    for prev, nxt in itertools.pairwise(live):
        if nxt.first <= prev.last:
            report.problems.append(
                f"{nxt.lf.path}: offset 0: first index {nxt.first} does not follow {prev.lf.path}'s last {prev.last}"
            )
        elif nxt.first_term < prev.last_term:
            report.problems.append(
                f"{nxt.lf.path}: offset 0: first term {nxt.first_term} is below {prev.lf.path}'s last term"
                f" {prev.last_term}"
            )
        elif nxt.first > max(prev.last, snapshot_index) + 1:
            report.problems.append(
                f"{nxt.lf.path}: offset 0: first index {nxt.first} leaves a gap after {prev.lf.path}'s last {prev.last}"
            )
    empty = [s for s in scans if not s.used]
    newest = max((s.lf.fid for s in scans), default=0)
    for s in empty:
        if s.lf.fid != newest:
            report.notes.append(f"{s.lf.path}: empty log file that is not the newest; a writable open deletes it")
