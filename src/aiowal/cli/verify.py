"""``aiowal verify``: check every file of a WAL directory without changing it, and print what is wrong.

The output is capped (the first problems of each file, then a count), so a badly damaged file cannot bury the
summary; the exit status and the total count always cover every problem found.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from aiowal.cli.common import EXIT_OK, EXIT_PROBLEMS, CliError, open_read_only
from aiowal.errors import EncryptionKeyError, StorageError
from aiowal.format import (
    KEY_REGISTRY_NAME,
    LOG_SUFFIX,
    META_NAME,
    parse_log_file_name,
)
from aiowal.storage import DiskStorage

STABLE_CHECKS = 3  # reads of the records before a problem counts (a live writer may be rewriting one)
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
    """Check ``path`` without changing it, with the same rule open applies (``aiowal.recovery``), then every
    record of every log file (bounds and checksum), which open checks only where a crash may have torn them.

    Damage to what was made durable is a problem; what a writable open would repair (a tail that no sync
    covered, the snapshot fields, a commit past the log) is a note, as are files that are not part of the log."""
    if not os.path.isdir(path):
        raise CliError(f"{path}: no such directory")
    names = sorted(os.listdir(path))
    if META_NAME not in names and not any(n.endswith(LOG_SUFFIX) for n in names):
        raise CliError(f"{path}: not a WAL directory (no wal.meta)")
    report = VerifyReport()
    st = _open(path, key, report)
    if st is None:
        return report
    with st:
        report.notes.extend(f"a writable open would repair: {r}" for r in st.repairs)
        files = st.log_files()
        live = {f["name"] for f in files}
        for name in names:
            if name.endswith(LOG_SUFFIX) and name not in live and os.path.isfile(os.path.join(path, name)):
                what = "a writable open deletes it" if parse_log_file_name(name) is not None else "ignored"
                report.notes.append(f"{os.path.join(path, name)}: not part of the log; {what}")
        report.files = len(files)
        report.entries = st.num_entries()
        report.problems.extend(_stable_record_problems(path, key, st, progress))
    return report


def _open(path: str, key: bytes | None, report: VerifyReport) -> DiskStorage | None:
    """The read-only storage, or None when open refuses the directory (its error is then a problem). A wrong key
    is an error, not a finding; without a key an encrypted directory is checked all the same."""
    try:
        try:
            return open_read_only(path, key)
        except CliError:
            if key is not None or not os.path.exists(os.path.join(path, KEY_REGISTRY_NAME)):
                raise
        report.notes.append("the log is encrypted: record checksums are checked; pass --key-file to check the key too")
        return DiskStorage.open_without_key(path)
    except EncryptionKeyError:
        raise
    except StorageError as exc:
        report.problems.append(str(exc))
        return None


def _stable_record_problems(path: str, key: bytes | None, st: DiskStorage, progress: bool) -> list[str]:
    """The records that fail their check, in order. A writer may rewrite a record while it is read (the data of
    ``truncate_entries_until``): problems are read again from a fresh open, and only those seen every time count."""
    problems = _record_problems(st, progress)
    for _ in range(STABLE_CHECKS - 1):
        if not problems:
            break
        with DiskStorage.open(path, key=key, read_only=True) if key else DiskStorage.open_without_key(path) as again:
            seen = set(_record_problems(again, False))
        problems = [p for p in problems if p in seen]
    return problems


def _record_problems(st: DiskStorage, progress: bool) -> list[str]:
    total = st.num_entries()
    columns = (TextColumn("verifying {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    disabled = not progress or total < PROGRESS_MIN_SLOTS
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=disabled) as bar:
        task = bar.add_task(os.path.basename(os.path.abspath(st.path)), total=total)
        return st.record_problems(lambda n: bar.advance(task, n))
