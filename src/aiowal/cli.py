"""The ``aiowal`` command line: look inside a WAL directory, check it, and run the benchmarks.

``info``, ``dump`` and ``verify`` open the directory with ``DiskStorage.open(path, read_only=True)``: no lock is
taken, nothing is repaired, created or written, so they are safe on a directory another process has open.

Exit status: 0 on success (``verify``: the directory is clean), 1 when ``verify`` found problems, 2 on an error
(bad arguments, a directory that cannot be opened, a wrong key), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import inspect
import itertools
import json
import logging
import os
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from aiowal import __version__
from aiowal.errors import EncryptionKeyError, StorageError
from aiowal.format import (
    DATA_START,
    HARD_STATE_OFFSET,
    KEY_REGISTRY_NAME,
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
from aiowal.meta import Meta, MetaInfo
from aiowal.raftpb import ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType
from aiowal.storage import DiskStorage

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_ERROR = 2

DUMP_CHUNK_BYTES = 4 << 20  # max_size of each entries() call while dumping: memory stays bounded
PROGRESS_MIN_SLOTS = 20_000  # show a progress bar (on a terminal) when verify walks more slots than this
PREVIEW_CHARS = 48


class CliError(Exception):
    """An error reported as one line on stderr, with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line instead of argparse's usage block."""
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- entry point --------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = _parser().parse_args(argv)
    # What recovery would change is part of the output; the library's own log lines would only repeat it.
    lib_log = logging.getLogger("aiowal")
    if not any(isinstance(h, logging.NullHandler) for h in lib_log.handlers):
        lib_log.addHandler(logging.NullHandler())
    out = Console(file=sys.stdout, highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
    try:
        key = _read_key(args.key_file) if getattr(args, "key_file", None) else None
        status: int = args.func(args, key, out)
        return status
    except (CliError, StorageError, ValueError) as exc:
        return _error(str(exc))
    except BrokenPipeError:
        # The reader went away (``aiowal dump DIR | head``): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _error(f"{where}{exc.strerror or exc}")
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("AIOWAL_DEBUG"):
            raise
        return _error(f"unexpected {type(exc).__name__}: {exc} (set AIOWAL_DEBUG=1 for a traceback)")


def _error(message: str) -> int:
    """Print ``message`` as one line on stderr; returns the error exit status."""
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    print(f"aiowal: error: {first}", file=sys.stderr)
    return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="aiowal",
        description="Inspect, dump and verify an aiowal / Dgraph raftwal directory; run the benchmarks.",
        epilog="Inspection never modifies the directory and works while another process has it open.",
    )
    p.add_argument("--version", action="version", version=f"aiowal {__version__}")
    key_help = "file holding the raw 16-, 24- or 32-byte encryption key (as Dgraph's key file)"
    p.add_argument("--key-file", metavar="PATH", help=key_help)
    common = _Parser(add_help=False)
    common.add_argument("--key-file", metavar="PATH", default=argparse.SUPPRESS, help=key_help)
    sub = p.add_subparsers(title="commands", metavar="COMMAND", required=True, parser_class=_Parser)

    info = sub.add_parser("info", parents=[common], help="summary of a WAL directory")
    info.add_argument("dir", metavar="DIR")
    info.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    info.set_defaults(func=cmd_info)

    dump = sub.add_parser("dump", parents=[common], help="print entries as a table or as JSON lines")
    dump.add_argument("dir", metavar="DIR")
    dump.add_argument("--from", dest="lo", type=_index, metavar="I", help="first index to print (default: first)")
    dump.add_argument(
        "--to", dest="hi", type=_index, metavar="J", help="last index to print, inclusive (default: last)"
    )
    dump.add_argument("--json", action="store_true", help="one JSON object per entry (data in base64)")
    dump.set_defaults(func=cmd_dump)

    verify = sub.add_parser("verify", parents=[common], help="check every file's structure and every entry")
    verify.add_argument("dir", metavar="DIR")
    verify.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    verify.set_defaults(func=cmd_verify)

    bench = sub.add_parser("bench", help="run the benchmark suite (from a source checkout)")
    bench.add_argument("--quick", action="store_true", help="a short run")
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.set_defaults(func=cmd_bench)
    return p


def _index(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an index: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"an index is not negative: {text}")
    return v


def _read_key(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            key = fh.read(1 << 10)
    except OSError as exc:
        raise CliError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    if len(key) not in (16, 24, 32):
        hint = " (a trailing newline counts)" if key.endswith(b"\n") else ""
        raise CliError(f"key file {path} holds {len(key)} bytes; a key is 16, 24 or 32 raw bytes{hint}")
    return key


def _open(path: str, key: bytes | None) -> DiskStorage:
    if not os.path.exists(path):
        raise CliError(f"{path}: no such directory")
    if not os.path.isdir(path):
        raise CliError(f"{path}: not a directory")
    try:
        return DiskStorage.open(path, key=key, read_only=True)
    except EncryptionKeyError as exc:
        if key is None:
            raise CliError(f"{path}: the log is encrypted; pass --key-file PATH ({exc})") from exc
        raise


# --- info ---------------------------------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace, key: bytes | None, out: Console) -> int:
    summary = info_summary(args.dir, key)
    if args.json:
        out.out(json.dumps(summary, indent=2), highlight=False)
        return EXIT_OK
    _print_info(summary, out)
    return EXIT_OK


def info_summary(path: str, key: bytes | None) -> dict[str, Any]:
    """What ``aiowal info`` shows, as plain data."""
    with _open(path, key) as st:
        files = st.log_files()
        hs = st.hard_state()
        snap = st.snapshot()
        cs = snap.metadata.conf_state
        encrypted = os.path.exists(os.path.join(path, KEY_REGISTRY_NAME)) or any(f["encrypted"] for f in files)
        first, last = st.first_index(), st.last_index()
        return {
            "path": os.path.abspath(path),
            "encrypted": encrypted,
            "raft_id": st.uint(MetaInfo.RAFT_ID),
            "group_id": st.uint(MetaInfo.GROUP_ID),
            "checkpoint": st.checkpoint(),
            "first_index": first,
            "last_index": last,
            "num_entries": st.num_entries(),
            "num_log_files": st.num_log_files(),
            "hard_state": {"term": hs.term, "vote": hs.vote, "commit": hs.commit},
            "snapshot": {
                "index": snap.metadata.index,
                "term": snap.metadata.term,
                "conf_state": _conf_state(cs),
                "data_size": len(snap.data),
            },
            "files": files,
            "meta_size": os.path.getsize(os.path.join(path, META_NAME)),
            "repairs_on_open": list(st.repairs),
        }


def _conf_state(cs: ConfState) -> dict[str, Any]:
    return {
        "voters": list(cs.voters),
        "learners": list(cs.learners),
        "voters_outgoing": list(cs.voters_outgoing),
        "learners_next": list(cs.learners_next),
        "auto_leave": cs.auto_leave,
    }


def _print_info(s: dict[str, Any], out: Console) -> None:
    hs, snap = s["hard_state"], s["snapshot"]
    n_files = len(s["files"])
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("directory", escape(s["path"]))
    head.add_row("encrypted", "yes" if s["encrypted"] else "no")
    head.add_row("raft id / group id", f"{s['raft_id']} / {s['group_id']}")
    head.add_row("checkpoint", str(s["checkpoint"]))
    if s["last_index"] >= s["first_index"]:
        span = f"{s['first_index']} .. {s['last_index']}"
    else:
        span = f"empty (first {s['first_index']}, last {s['last_index']})"
    head.add_row("entries", f"{span}  ({s['num_entries']} stored in {n_files} file{'s' if n_files != 1 else ''})")
    head.add_row("hard state", f"term {hs['term']}  vote {hs['vote']}  commit {hs['commit']}")
    if snap["index"]:
        cs = snap["conf_state"]
        conf = ", ".join(f"{k} {v}" for k, v in cs.items() if v) or "empty"
        head.add_row(
            "snapshot",
            f"index {snap['index']}  term {snap['term']}  data {_human(snap['data_size'])}  conf state: {conf}",
        )
    else:
        head.add_row("snapshot", "none")
    head.add_row("wal.meta", _human(s["meta_size"]))
    out.print(head)
    if s["files"]:
        t = Table(title=None, box=None, pad_edge=False, header_style="bold")
        for name, justify in [
            ("file", "left"),
            ("first", "right"),
            ("last", "right"),
            ("entries", "right"),
            ("data", "right"),
            ("apparent", "right"),
            ("allocated", "right"),
            ("encrypted", "left"),
        ]:
            t.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for f in s["files"]:
            empty = not f["entries"]
            t.add_row(
                f["name"],
                "-" if empty else str(f["first"]),
                "-" if empty else str(f["last"]),
                str(f["entries"]),
                _human(f["data_end"] - DATA_START),
                _human(f["apparent_size"]),
                _human(f["allocated_size"]),
                "yes" if f["encrypted"] else "no",
            )
        out.print()
        out.print(t)
    for r in s["repairs_on_open"]:
        out.print(f"note: a writable open would repair: {escape(r)}")


def _human(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    v = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        v /= 1024
        if v < 1024 or unit == "TiB":
            return f"{v:.1f} {unit}"
    return f"{n} B"  # pragma: no cover


# --- dump ---------------------------------------------------------------------------------------------------------
def cmd_dump(args: argparse.Namespace, key: bytes | None, out: Console) -> int:
    with _open(args.dir, key) as st:
        first, last = st.first_index(), st.last_index()
        lo = first if args.lo is None else max(args.lo, first)
        hi = last if args.hi is None else min(args.hi, last)
        if args.lo is not None and args.hi is not None and args.lo > args.hi:
            raise CliError(f"--from {args.lo} is after --to {args.hi}")
        stream = sys.stdout
        if args.json:
            for e in iter_entries(st, lo, hi):
                stream.write(json.dumps(entry_json(e)) + "\n")
        else:
            widths = (max(len(str(hi)), 5), max(len(str(st.term(hi))) if hi >= lo else 1, 4))
            stream.write(_row(widths, "index", "term", "type", "size", "data") + "\n")
            count = 0
            for e in iter_entries(st, lo, hi):
                stream.write(
                    _row(widths, str(e.index), str(e.term), _type_name(e.type), str(len(e.data)), preview(e)) + "\n"
                )
                count += 1
            if count == 0:
                stream.write(f"(no entries; the log holds {first} .. {last})\n" if last >= first else "(no entries)\n")
        stream.flush()
    return EXIT_OK


def iter_entries(st: DiskStorage, lo: int, hi: int) -> Iterator[Entry]:
    """Entries ``lo..hi`` (inclusive), read a bounded chunk at a time."""
    while lo <= hi:
        chunk = st.entries(lo, hi + 1, DUMP_CHUNK_BYTES)
        if not chunk:
            return
        yield from chunk
        lo = chunk[-1].index + 1


def _row(widths: tuple[int, int], index: str, term: str, etype: str, size: str, data: str) -> str:
    return f"{index:>{widths[0]}}  {term:>{widths[1]}}  {etype:<12}  {size:>8}  {data}".rstrip()


def _type_name(t: int) -> str:
    try:
        return EntryType.Name(t).removeprefix("Entry")  # type: ignore[arg-type]
    except ValueError:
        return f"type {t}"


def entry_json(e: Entry) -> dict[str, Any]:
    """One ``dump --json`` line: index, term, type name, data size and the data in base64."""
    try:
        tname = EntryType.Name(e.type)
    except ValueError:
        tname = str(e.type)
    return {
        "index": e.index,
        "term": e.term,
        "type": tname,
        "size": len(e.data),
        "data": base64.b64encode(e.data).decode("ascii"),
    }


def preview(e: Entry) -> str:
    """A short, printable view of an entry's data: text, a decoded conf change, or hex."""
    data = e.data
    if not data:
        return ""
    if e.type == EntryType.EntryConfChange:
        try:
            cc = ConfChange.FromString(data)
            return f"{ConfChangeType.Name(cc.type).removeprefix('ConfChange')} node {cc.node_id}"
        except Exception:
            pass
    if e.type == EntryType.EntryConfChangeV2:
        try:
            cc2 = ConfChangeV2.FromString(data)
            changes = ", ".join(
                f"{ConfChangeType.Name(c.type).removeprefix('ConfChange')} node {c.node_id}" for c in cc2.changes
            )
            return changes or "(auto leave)"
        except Exception:
            pass
    text = _as_text(data)
    if text is None:
        shown_bytes = data[: PREVIEW_CHARS // 2]
        return shown_bytes.hex() + ("…" if len(data) > len(shown_bytes) else "")
    shown = text[:PREVIEW_CHARS]
    return repr(shown) + ("…" if len(shown) < len(text) or len(data) > PREVIEW_CHARS * 4 else "")


def _as_text(data: bytes) -> str | None:
    """The start of ``data`` as text if it is printable UTF-8 (a character cut by the window is dropped)."""
    head = data[: PREVIEW_CHARS * 4]
    for cut in range(4 if len(data) > len(head) else 1):
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return text if text.isprintable() else None
    return None


# --- verify -------------------------------------------------------------------------------------------------------
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
    for problem in report.problems:
        out.print(escape(problem))
    if report.problems:
        n = len(report.problems)
        out.print(f"FAILED: {n} problem{'s' if n != 1 else ''} in {args.dir}")
        return EXIT_PROBLEMS
    files = f"{report.files} log file{'s' if report.files != 1 else ''}"
    entries = f"{report.entries} entr{'ies' if report.entries != 1 else 'y'}"
    out.print(f"OK: {escape(args.dir)}: wal.meta, {files} and {entries} checked")
    return EXIT_OK


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
        problem = lf.record_problem(s)
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


# --- bench --------------------------------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace, key: bytes | None, out: Console) -> int:
    run = _load_bench()
    err = Console(stderr=True, highlight=False)
    kwargs: dict[str, Any] = {"quick": args.quick}
    if "log" in inspect.signature(run).parameters:
        kwargs["log"] = lambda msg: err.print(f"[dim]{escape(str(msg))}[/dim]")
    results = run(**kwargs)
    if args.json or not isinstance(results, dict):
        out.out(json.dumps(results, indent=2, default=str), highlight=False)
        return EXIT_OK
    targets = results.get("targets")
    t = Table(box=None, pad_edge=False, header_style="bold")
    if isinstance(targets, list) and targets:
        for name in ("figure", "value", "target", "met"):
            t.add_column(name, justify="right" if name == "value" else "left")
        for row in targets:
            bound = f">= {row['target']}" if "target" in row else f"<= {row.get('limit')}"
            met = {True: "yes", False: "[bold red]no[/bold red]", None: "-"}.get(row.get("met"), "-")
            t.add_row(escape(str(row.get("figure"))), _fmt_value(row.get("value")), escape(bound), met)
    else:
        t.add_column("benchmark")
        t.add_column("result", justify="right")
        for name, value in _flatten(results):
            t.add_row(escape(name), escape(_fmt_value(value)))
    out.print(t)
    for name in results.get("errors") or []:
        out.print(f"error in {escape(str(name))} (see --json for the traceback)")
    return EXIT_OK


def _load_bench() -> Any:
    """``benchmarks.run``: importable in a source checkout (run from its root), not shipped in the wheel."""
    try:
        benchmarks = importlib.import_module("benchmarks")
    except ModuleNotFoundError as exc:
        if exc.name != "benchmarks":
            raise CliError(f"the benchmarks need module {exc.name!r}: pip install 'aiowal[bench]'") from exc
        here = os.getcwd()
        if here not in sys.path and os.path.isfile(os.path.join(here, "benchmarks", "__init__.py")):
            sys.path.insert(0, here)
            return _load_bench()
        raise CliError(
            "aiowal bench needs the benchmarks package of a source checkout: run it from the repository root"
        ) from exc
    except ImportError as exc:
        raise CliError(f"cannot load the benchmarks: {exc}") from exc
    run = getattr(benchmarks, "run", None)
    if not callable(run):
        raise CliError("the benchmarks package has no run(quick) function")
    return run


def _flatten(d: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, name + ".")
        else:
            yield name, v


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
