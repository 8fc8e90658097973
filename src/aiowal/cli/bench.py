"""``aiowal bench [DIR]``: is the disk under DIR fit for a Raft log, and what will aiowal's durable saves do on it?

In the spirit of ``etcdctl check perf`` and PostgreSQL's ``pg_test_fsync``: it measures (``diskcheck``), then
prints the figures and a verdict to act on, or one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aiowal import __version__
from aiowal.cli.common import EXIT_OK, CliError
from aiowal.cli.diskcheck import ENTRY_BYTES, WRITE_BYTES, DiskCheck, run_check

DEFAULT_SECONDS = 10.0
QUICK_SECONDS = 2.0
DEFAULT_MAX_CALLERS = 64
FAKE_SYNC_SECONDS = 20e-6  # no device makes a write durable this fast: the sync stops short of stable storage
SLOW_SYNC_SECONDS = 10e-3  # etcd's guidance for its WAL: fsync p99 under 10 ms
GROUP_COMMIT_GAIN = 1.5  # concurrent callers count as a gain from this many times one caller's rate


@dataclass(frozen=True)
class Finding:
    """One line of the verdict: ``level`` is "ok", "note" or "warn"."""

    level: str
    message: str


def verdict(check: DiskCheck) -> list[Finding]:
    """What the figures mean for someone about to put a Raft log on this disk."""
    sync, one = check.fdatasync, check.one_caller
    found: list[Finding] = []
    if sync.p50 < FAKE_SYNC_SECONDS:
        found.append(
            Finding(
                "warn",
                f"fdatasync p50 {duration(sync.p50)} is faster than any device makes a write durable: this disk does"
                " not really sync (tmpfs, a RAM disk, or a write cache that ignores flushes). A power cut can lose"
                " acknowledged saves: keep a Raft log on a disk that syncs",
            )
        )
    elif sync.p99 > SLOW_SYNC_SECONDS:
        found.append(
            Finding(
                "warn",
                f"fdatasync p99 {duration(sync.p99)}: slow for a Raft log (etcd asks for under 10 ms). Expect slow"
                " commits and, under load, elections; put the log on an SSD or NVMe device it does not share",
            )
        )
    else:
        found.append(
            Finding("ok", f"fdatasync p99 {duration(sync.p99)}: fast enough for a Raft log (etcd asks for under 10 ms)")
        )
    overhead = one.latency.p50 - sync.p50
    added = f", {duration(overhead)} above the raw sync" if overhead > 0 else ""
    found.append(
        Finding(
            "note",
            f"fdatasync p50 {duration(sync.p50)} / p99 {duration(sync.p99)}: expect at most ~{rate(1 / sync.p50)}"
            f" durable saves/s per caller, each waiting for its own sync (measured: {rate(one.saves_per_second)}/s,"
            f" save p50 {duration(one.latency.p50)}{added}, p99 {duration(one.latency.p99)})",
        )
    )
    if len(check.saves) > 1:
        best = max(check.saves, key=lambda run: run.saves_per_second)
        gain = best.saves_per_second / one.saves_per_second if one.saves_per_second else 0.0
        figures = (
            f"{best.callers} concurrent callers: {rate(best.saves_per_second)} saves/s, {gain:.1f}x one caller,"
            f" {best.saves_per_sync:.1f} saves per sync, save p99 {duration(best.latency.p99)}"
        )
        if gain >= GROUP_COMMIT_GAIN:
            found.append(
                Finding(
                    "ok",
                    f"use group commit: concurrent saves share a sync ({figures}). To go past one caller's rate,"
                    " save from concurrent tasks, or put more entries in each save",
                )
            )
        else:
            found.append(
                Finding(
                    "note",
                    f"concurrent saves gained little here ({figures}): the sync is not what bounds the rate on this"
                    " disk, the CPU work of each save is",
                )
            )
    return found


# --- the command --------------------------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace, key: bytes | None, out: Console) -> int:
    directory = args.dir if args.dir is not None else os.curdir
    if not os.path.exists(directory):
        raise CliError(f"{directory}: no such directory")
    if not os.path.isdir(directory):
        raise CliError(f"{directory}: not a directory")
    seconds = args.duration if args.duration is not None else QUICK_SECONDS if args.quick else DEFAULT_SECONDS
    err = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        auto_refresh=False,  # redrawn from the check's own ticks: no drawing thread competes with the measurement
        disable=args.no_progress or not err.is_terminal,
    )
    with bar:
        task = bar.add_task("starting", total=1.0)
        check = run_check(
            directory,
            duration=seconds,
            max_callers=args.max_callers,
            progress=lambda label, done: bar.update(task, description=label, completed=done, refresh=True),
        )
    findings = verdict(check)
    if args.json:
        doc = {"aiowal": __version__, **check.to_json(), "verdict": [asdict(f) for f in findings]}
        out.out(json.dumps(doc, indent=2), highlight=False)
        return EXIT_OK
    print_check(check, findings, out)
    return EXIT_OK


def print_check(check: DiskCheck, findings: list[Finding], out: Console) -> None:
    out.print(
        f"aiowal bench: {escape(check.directory)} ({check.duration:g} s; {WRITE_BYTES // 1024} KiB raw writes,"
        f" {ENTRY_BYTES // 1024} KiB entries, hard_sync)"
    )
    t = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("", "count", "p50", "p99", "max", "per second", "saves per sync"):
        t.add_column(name, justify="left" if not name else "right")
    sync = check.fdatasync
    sync_rate = rate(1 / sync.p50)
    t.add_row("fdatasync", str(sync.count), *map(duration, (sync.p50, sync.p99, sync.max)), f"~{sync_rate}", "")
    for run in check.saves:
        lat = run.latency
        t.add_row(
            f"saves, {run.callers} caller{'s' if run.callers > 1 else ''}",
            str(run.saves),
            *map(duration, (lat.p50, lat.p99, lat.max)),
            rate(run.saves_per_second),
            f"{run.saves_per_sync:.1f}",
        )
    out.print()
    out.print(t)
    out.print()
    style = {"ok": "green", "note": "cyan", "warn": "bold red"}
    for f in findings:
        out.print(f"[{style[f.level]}]{f.level:<4}[/] {escape(f.message)}")


def duration(seconds: float) -> str:
    """A duration a person reads at a glance: 14 µs, 1.25 ms, 2.1 s."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def rate(per_second: float) -> str:
    """A rate rounded to two significant figures, with thousands separators: 83, 1,500, 120,000."""
    if per_second <= 0:
        return "0"
    rounded = float(f"{per_second:.2g}")
    return f"{rounded:,.0f}" if rounded >= 1 else f"{per_second:.2g}"
