"""``aiowal bench [DIR]``, the disk check: the verdict drawn from given figures, the figures' formatting, and short
real runs (JSON shape and sanity, never speed: a VM's disk is noisy) that leave DIR as they found it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from aiowal import cli
from aiowal.cli import bench, diskcheck
from aiowal.cli.diskcheck import DiskCheck, Latency, SaveRun

MS = 1e-3
US = 1e-6


def latency(p50: float, p99: float, count: int = 1000) -> Latency:
    return Latency(count=count, p50=p50, p99=p99, max=p99 * 2)


def saves(callers: int, per_second: int, p50: float, p99: float, syncs: int) -> SaveRun:
    """A run of one second."""
    return SaveRun(callers, 1.0, latency(p50, p99, per_second), syncs)


def check(sync: Latency, *runs: SaveRun) -> DiskCheck:
    return DiskCheck("/data", 10.0, sync, list(runs))


def levels(found: list[bench.Finding]) -> list[str]:
    return [f.level for f in found]


# --- the verdict --------------------------------------------------------------------------------------------------
def test_a_slow_disk_is_named_and_its_per_caller_ceiling_given() -> None:
    found = bench.verdict(
        check(
            latency(10 * MS, 12 * MS),
            saves(1, 95, 10.5 * MS, 13 * MS, 96),
            saves(4, 380, 10.6 * MS, 14 * MS, 95),
            saves(16, 1520, 10.8 * MS, 15 * MS, 95),
            saves(64, 5120, 12 * MS, 20 * MS, 80),
        )
    )
    assert levels(found) == ["warn", "note", "ok"]
    assert found[0].message.startswith("fdatasync p99 12 ms: slow for a Raft log (etcd asks for under 10 ms)")
    assert "SSD or NVMe" in found[0].message
    assert found[1].message.startswith(
        "fdatasync p50 10 ms / p99 12 ms: expect at most ~100 durable saves/s per caller, each waiting for its own sync"
    )
    assert "(measured: 95/s, save p50 10.5 ms, 500 µs above the raw sync, p99 13 ms)" in found[1].message
    assert found[2].message.startswith(
        "use group commit: concurrent saves share a sync (64 concurrent callers: 5,100 saves/s, 53.9x one caller,"
        " 64.0 saves per sync, save p99 20 ms)"
    )


def test_a_good_disk_is_fast_enough() -> None:
    found = bench.verdict(
        check(
            latency(400 * US, 2 * MS), saves(1, 2000, 480 * US, 2.1 * MS, 2000), saves(4, 7000, 560 * US, 3 * MS, 1750)
        )
    )
    assert levels(found) == ["ok", "note", "ok"]
    assert found[0].message == "fdatasync p99 2 ms: fast enough for a Raft log (etcd asks for under 10 ms)"
    assert "expect at most ~2,500 durable saves/s per caller" in found[1].message
    assert "4 concurrent callers: 7,000 saves/s, 3.5x one caller" in found[2].message


def test_a_disk_that_does_not_really_sync_is_a_warning() -> None:
    found = bench.verdict(
        check(
            latency(2 * US, 6 * US), saves(1, 20000, 45 * US, 80 * US, 20000), saves(4, 24000, 150 * US, 300 * US, 6000)
        )
    )
    assert levels(found) == ["warn", "note", "note"]
    assert found[0].message.startswith("fdatasync p50 2 µs is faster than any device makes a write durable")
    assert "does not really sync" in found[0].message
    assert "A power cut can lose acknowledged saves" in found[0].message
    assert found[2].message.startswith("concurrent saves gained little here (4 concurrent callers: 24,000 saves/s,")
    assert "1.2x one caller" in found[2].message


def test_verdict_thresholds_are_inclusive_of_a_healthy_disk() -> None:
    at_limits = bench.verdict(check(latency(20e-6, 10e-3), saves(1, 90, 11 * MS, 12 * MS, 90)))
    assert levels(at_limits) == ["ok", "note"]  # exactly 20 µs p50 and 10 ms p99: neither warning
    past = bench.verdict(check(latency(19.9 * US, 10.1 * MS), saves(1, 90, 11 * MS, 12 * MS, 90)))
    assert levels(past) == ["warn", "note"]
    assert "does not really sync" in past[0].message  # the fake sync is the one that matters


def test_one_caller_only_gives_no_group_commit_line() -> None:
    found = bench.verdict(check(latency(1 * MS, 2 * MS), saves(1, 900, 1.1 * MS, 2.2 * MS, 900)))
    assert levels(found) == ["ok", "note"]
    assert "save p50 1.1 ms, 100 µs above the raw sync, p99 2.2 ms" in found[1].message


def test_no_overhead_is_claimed_when_saves_beat_the_raw_probe() -> None:
    found = bench.verdict(check(latency(1 * MS, 2 * MS), saves(1, 1100, 0.9 * MS, 2 * MS, 1100)))
    assert "above the raw sync" not in found[1].message


def test_the_printed_report_shows_every_figure_and_the_verdict() -> None:
    c = check(
        latency(400 * US, 2 * MS, count=25000),
        saves(1, 2000, 480 * US, 2.1 * MS, 2000),
        saves(4, 7000, 560 * US, 3 * MS, 1750),
    )
    text = io.StringIO()
    bench.print_check(c, bench.verdict(c), Console(file=text, width=300, highlight=False, color_system=None))
    lines = text.getvalue().splitlines()
    assert lines[0] == "aiowal bench: /data (10 s; 4 KiB raw writes, 1 KiB entries, hard_sync)"
    rows = {line.split("  ")[0]: line.split() for line in lines if line.startswith(("fdatasync ", "saves, "))}
    assert rows["fdatasync"] == ["fdatasync", "25000", "400", "µs", "2", "ms", "4", "ms", "~2,500"]
    assert rows["saves, 1 caller"][3:] == ["2000", "480", "µs", "2.1", "ms", "4.2", "ms", "2,000", "1.0"]
    assert rows["saves, 4 callers"][3:] == ["7000", "560", "µs", "3", "ms", "6", "ms", "7,000", "4.0"]
    assert [line.split()[0] for line in lines[-3:]] == ["ok", "note", "ok"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(14.4 * US, "14 µs"), (999 * US, "999 µs"), (1.25 * MS, "1.25 ms"), (12 * MS, "12 ms"), (2.1, "2.1 s")],
)
def test_durations_read_at_a_glance(seconds: float, text: str) -> None:
    assert bench.duration(seconds) == text


@pytest.mark.parametrize(
    ("per_second", "text"), [(83.3, "83"), (1543.0, "1,500"), (123456.0, "120,000"), (0.25, "0.25"), (0.0, "0")]
)
def test_rates_are_rounded_to_two_figures(per_second: float, text: str) -> None:
    assert bench.rate(per_second) == text


def test_caller_levels_end_at_the_maximum() -> None:
    assert diskcheck.caller_levels(64) == [1, 4, 16, 64]
    assert diskcheck.caller_levels(10) == [1, 4, 10]
    assert diskcheck.caller_levels(4) == [1, 4]
    assert diskcheck.caller_levels(1) == [1]
    with pytest.raises(ValueError):
        diskcheck.caller_levels(0)


def test_latency_summary() -> None:
    lat = Latency.of([0.001] * 99 + [0.5])
    assert (lat.count, lat.p50, lat.max) == (100, 0.001, 0.5)
    assert 0.001 < lat.p99 < 0.5
    assert Latency.of([0.003]) == Latency(1, 0.003, 0.003, 0.003)
    with pytest.raises(ValueError):
        Latency.of([])


# --- real runs ----------------------------------------------------------------------------------------------------
def test_quick_json_run_from_a_directory_with_a_decoy_benchmarks_package(tmp_path: Path) -> None:
    """The check is in the package: a ``benchmarks`` package in the current directory is never imported, and the
    directory is left as it was (the check works in a subdirectory of its own)."""
    decoy = tmp_path / "benchmarks"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise SystemExit('the benchmarks package of the current directory ran')\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = subprocess.run(
        [sys.executable, "-m", "aiowal", "bench", "--quick", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # no progress bar when stderr is not a terminal
    doc = json.loads(r.stdout)
    assert_sane_report(doc, directory=tmp_path, callers=[1, 4, 16, 64])
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def assert_sane_report(doc: dict[str, object], directory: Path, callers: list[int]) -> None:
    """The shape of ``aiowal bench --json`` and figures that hold on any disk."""
    assert set(doc) == {
        "aiowal",
        "directory",
        "duration_s",
        "write_bytes",
        "entry_bytes",
        "fdatasync",
        "save",
        "group_commit",
        "verdict",
    }
    assert doc["directory"] == str(directory)
    assert (doc["duration_s"], doc["write_bytes"], doc["entry_bytes"]) == (2.0, 4096, 1024)
    sync = doc["fdatasync"]
    assert isinstance(sync, dict)
    assert sync["count"] >= 1
    assert 0 < sync["p50_ms"] <= sync["p99_ms"] <= sync["max_ms"]
    runs = doc["group_commit"]
    assert isinstance(runs, list)
    assert [run["callers"] for run in runs] == callers
    for run in runs:
        assert run["saves"] >= 1
        assert 0 < run["p50_ms"] <= run["p99_ms"] <= run["max_ms"]
        assert run["saves_per_s"] > 0
        assert run["saves_per_s"] == pytest.approx(run["saves"] / run["seconds"], rel=1e-3, abs=0.1)
        assert 0 < run["saves_per_sync"] <= run["callers"]  # a sync serves at most the saves that wait for it
    one = runs[0]
    assert doc["save"] == {
        "callers": 1,
        "count": one["saves"],
        "p50_ms": one["p50_ms"],
        "p99_ms": one["p99_ms"],
        "max_ms": one["max_ms"],
        "saves_per_s": one["saves_per_s"],
    }
    verdict = doc["verdict"]
    assert isinstance(verdict, list)
    assert len(verdict) == (3 if len(callers) > 1 else 2)
    assert all(f["level"] in ("ok", "note", "warn") and f["message"] for f in verdict)


def test_a_given_directory_is_left_as_it_was(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "disk"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    (target / "aiowal-bench-x").mkdir()  # a name like the check's own work directory
    code = cli.main(["bench", str(target), "--duration", "0.5", "--max-callers", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["directory"] == str(target)
    assert [run["callers"] for run in doc["group_commit"]] == [1, 2]
    assert sorted(os.listdir(target)) == ["aiowal-bench-x", "keep.txt"]
    assert (target / "keep.txt").read_text() == "mine"
    assert os.listdir(target / "aiowal-bench-x") == []


def test_progress_moves_forward_through_the_phases(tmp_path: Path) -> None:
    seen: list[tuple[str, float]] = []
    result = diskcheck.run_check(str(tmp_path), duration=0.9, max_callers=4, progress=lambda *a: seen.append(a))
    assert [run.callers for run in result.saves] == [1, 4]
    assert seen
    fractions = [done for _, done in seen]
    assert fractions == sorted(fractions)
    assert all(0 <= done <= 1 for done in fractions)
    assert {label for label, _ in seen} <= {"fdatasync", "saves, 1 caller", "saves, 4 callers"}
    assert os.listdir(tmp_path) == []


def test_the_work_directory_is_removed_when_the_check_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(path: str, callers: int, budget: float, tick: object) -> SaveRun:
        os.mkdir(path)
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(diskcheck, "measure_saves", failing)
    code = cli.main(["bench", str(tmp_path), "--duration", "0.2"])
    _, err = capsys.readouterr()
    assert code == cli.EXIT_ERROR
    assert err.startswith(f"aiowal: error: {tmp_path}/aiowal-bench-")
    assert err.rstrip().endswith("/wal-1: No space left on device")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["bench", "{missing}"], "no such directory"),
        (["bench", "{file}"], "not a directory"),
        (["bench", "--duration", "0"], "positive number of seconds"),
        (["bench", "--duration", "x"], "not a number of seconds"),
        (["bench", "--quick", "--duration", "3"], "not allowed with argument"),
        (["bench", "--max-callers", "0"], "at least 1"),
    ],
)
def test_bench_argument_errors_are_one_line(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("x")
    paths = {"missing": tmp_path / "nope", "file": tmp_path / "file"}
    try:
        code = cli.main([a.format(**paths) for a in argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert (code, out) == (cli.EXIT_ERROR, "")
    assert len(err.splitlines()) == 1
    assert needle in err
    assert sorted(os.listdir(tmp_path)) == ["file"]
