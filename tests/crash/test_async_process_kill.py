"""Process crashes of ``AsyncDiskStorage``: a child process runs 16-64 concurrent callers (entries up to 60 KB,
HardStates, overwrites by a new term, snapshots through save and create_snapshot, set_uint, sync; rotation every
few entries; on asyncio or uvloop, plain or encrypted, with the C sync worker) and is killed with SIGKILL at a random
moment. The child prints a line when it calls an operation and one when the operation returned; both sides draw
the same operations from the same seed and starting state, so the parent knows what was acknowledged and what was
in flight. It reopens the directory and checks ``asyncmodel.check_concurrent``. Rounds continue on the same
directory, so each child starts from a directory recovered after a kill.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from asyncmodel import OpSource, check_concurrent
from crashmodel import compare_exact, model_from_observed, observe, small_files
from crashutil import SOAK, read_for, read_rest, read_until_ready, report

from aiowal import DiskStorage, speedups

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PER_FILE = 12


def _spawn(
    directory: Path, seed: int, key: bytes | None, loop: str, callers: int, hard_sync: bool, errfile: Path
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(HERE), str(HERE.parent)]))
    args = [sys.executable, str(HERE / "async_kill_child.py"), str(directory), str(seed), key.hex() if key else "-"]
    args += [str(PER_FILE), loop, str(callers), str(int(hard_sync))]
    with open(errfile, "wb") as err:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, env=env)


def _numbers(lines: list[str], tag: str) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith(tag + " ")]


def run_kills(
    directory: Path, key: bytes | None, loop: str, hard_sync: bool, kills: int, seed0: int
) -> tuple[int, int, int]:
    """Kill a child with concurrent callers ``kills`` times; returns (acknowledged saves, acknowledged entries
    checked present, kills that left part of the operations in flight on disk)."""
    rng = random.Random(seed0)
    acks_total = entries_checked = mid_flight = 0
    for k in range(kills):
        with DiskStorage.open(directory, key=key) as st:
            start = model_from_observed(observe(st))
        seed = seed0 * 1000 + k
        callers = rng.randint(16, 64)
        errfile = directory.parent / "child.err"
        proc = _spawn(directory, seed, key, loop, callers, hard_sync, errfile)
        out = read_until_ready(proc, errfile)
        if rng.random() < 0.25:  # early: while the first batches after the recovery are written
            out += read_for(proc, rng.choice((0.0, 0.002, 0.01, 0.05)))
        else:  # once the callers got going (however loaded the machine is), at a random moment after
            enough = 2 * callers
            out += read_for(proc, 30.0, until=lambda got: got.count(b"A ") >= enough)  # noqa: B023 (used at once)
            out += read_for(proc, rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        lines = (out + read_rest(proc)).decode().splitlines()
        assert proc.returncode == -signal.SIGKILL, f"child ended by itself ({proc.returncode}): {errfile.read_text()}"
        assert f"worker {int(speedups.sync_worker is not None)}" in lines, lines[:3]  # the C worker ran the syncs
        called, acked = _numbers(lines, "C"), _numbers(lines, "A")
        assert sorted(called) == list(range(1, len(called) + 1)), "calls are numbered in call order"
        assert set(acked) <= set(called)
        p, q = max(acked, default=0), max(called, default=0)
        source = OpSource(seed, start, big=True)
        while len(source.ops) <= q:
            source.draw()
        with small_files(PER_FILE), DiskStorage.open(directory, key=key) as st:
            o = observe(st)
        problems = check_concurrent(o, source.models, source.ops, p, q)
        what = f"kill {k} ({callers} callers) after op {p} acknowledged, ops {p + 1}..{q} in flight"
        assert not problems, f"{what}: {problems}"
        acks_total += sum(1 for a in acked if source.ops[a].kind == "save")
        entries_checked += len(source.models[p].log)
        mid_flight += bool(compare_exact(o, source.models[p]))
    return acks_total, entries_checked, mid_flight


# (label, loop, encrypted, hard_sync)
KILL_CASES = [
    ("asyncio-plain", "asyncio", False, True),
    ("uvloop-encrypted", "uvloop", True, True),
    ("asyncio-plain-no-hard-sync", "asyncio", False, False),
]


def async_sigkills(tmp_path: Path, loop: str, encrypted: bool, hard_sync: bool, kills: int) -> None:
    t0 = time.monotonic()
    key = bytes(range(32)) if encrypted else None
    seed = 11 + 2 * encrypted + 4 * hard_sync + (loop == "uvloop")
    acks, entries, mid_flight = run_kills(tmp_path / "wal", key, loop, hard_sync, kills, seed)
    report("async SIGKILLs of a process with concurrent callers", kills, time.monotonic() - t0)
    report("async saves acknowledged by killed processes", acks, 0)
    report("async acknowledged entries checked after SIGKILLs", entries, 0)
    report("async SIGKILLs that left operations in flight (part) done", mid_flight, 0)
    assert acks > kills * 8  # the callers got work done between the kills


@pytest.mark.parametrize(("label", "loop", "encrypted", "hard_sync"), KILL_CASES, ids=[c[0] for c in KILL_CASES])
def test_async_sigkill_during_writes(tmp_path: Path, label: str, loop: str, encrypted: bool, hard_sync: bool) -> None:
    """A process crash loses nothing acknowledged, synced or not: the page cache survives it. (On the real disk,
    so that syncs take their real time.)"""
    async_sigkills(tmp_path, loop, encrypted, hard_sync, 4)


if SOAK:

    @pytest.mark.soak
    @pytest.mark.parametrize(("label", "loop", "encrypted", "hard_sync"), KILL_CASES, ids=[c[0] for c in KILL_CASES])
    def test_async_sigkill_during_writes_soak(
        tmp_path: Path, label: str, loop: str, encrypted: bool, hard_sync: bool
    ) -> None:
        async_sigkills(tmp_path, loop, encrypted, hard_sync, 70)
