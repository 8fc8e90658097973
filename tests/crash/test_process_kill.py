"""Process crashes: a child process runs a random workload (mixed entry sizes up to 60 KB, overwrites,
snapshots through save and create_snapshot, truncation, set_uint, rotation every few entries, reopens; with
hard_sync, and once without it) and is killed with SIGKILL at a random moment. The parent knows every acknowledged
operation (the child prints one line per op, and both draw the same operations from the same seed), reopens the
directory and checks ``check_recovered`` against the acknowledged state and the operation that was in flight.
Rounds continue on the same directory, so each child starts from a directory recovered after a kill.
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
from crashmodel import check_recovered, compare_exact, gen_op, model_from_observed, observe, small_files
from crashutil import SOAK, read_rest, read_until_ready, report

from aiowal import DiskStorage

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PER_FILE = 12


def _spawn(directory: Path, seed: int, key: bytes | None, hard_sync: bool, errfile: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(HERE), str(HERE.parent)]))
    args = [sys.executable, str(HERE / "kill_child.py"), str(directory), str(seed), key.hex() if key else "-"]
    with open(errfile, "wb") as err:
        args += [str(PER_FILE), str(int(hard_sync))]
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, env=env)


def run_kills(directory: Path, key: bytes | None, hard_sync: bool, kills: int, seed0: int) -> tuple[int, int, int]:
    """Kill a writing child ``kills`` times; returns (kills, acknowledged operations, kills that left part or all
    of the operation in flight on disk)."""
    rng = random.Random(seed0)
    total_acks = 0
    mid_op = 0
    for k in range(kills):
        with DiskStorage.open(directory, key=key, hard_sync=True) as st:
            start = model_from_observed(observe(st))
        seed = seed0 * 1000 + k
        errfile = directory.parent / "child.err"
        proc = _spawn(directory, seed, key, hard_sync, errfile)
        early = read_until_ready(proc, errfile)
        time.sleep(rng.choice((0.0, 0.002, 0.01)) if rng.random() < 0.25 else rng.uniform(0.01, 0.3))
        proc.send_signal(signal.SIGKILL)
        out = (early + read_rest(proc)).decode()
        assert proc.returncode == -signal.SIGKILL, f"child ended by itself ({proc.returncode}): {errfile.read_text()}"
        acks = [int(line.split()[1]) for line in out.splitlines() if line.startswith("A ")]
        assert acks == list(range(1, len(acks) + 1))
        total_acks += len(acks)
        # The same operations, drawn from the same seed and starting state.
        op_rng = random.Random(seed)
        a = start
        for _ in acks:
            a = a.apply(gen_op(a, op_rng, big=True))
        in_flight = gen_op(a, op_rng, big=True)
        b = a.apply(in_flight)
        with small_files(PER_FILE), DiskStorage.open(directory, key=key, hard_sync=True) as st:
            o = observe(st)
        problems = check_recovered(o, a, b, in_flight)
        mid_op += bool(compare_exact(o, a))
        what = f"kill {k} after {len(acks)} acknowledged ops, {in_flight.describe()} in flight"
        assert not problems, f"{what}: {problems}"
    return kills, total_acks, mid_op


KILL_CASES = [(False, True), (True, True), (False, False)]
KILL_IDS = ["plain", "encrypted", "plain-no-hard-sync"]


def sigkills(tmp_path: Path, encrypted: bool, hard_sync: bool, kills: int) -> None:
    t0 = time.monotonic()
    key = bytes(range(32)) if encrypted else None
    n, acks, mid_op = run_kills(tmp_path / "wal", key, hard_sync, kills, 7 + encrypted + 2 * hard_sync)
    report("SIGKILLs of a writing process", n, time.monotonic() - t0)
    report("operations acknowledged by killed processes", acks, 0)
    report("SIGKILLs that left the operation in flight (part) done", mid_op, 0)
    assert acks > n  # the children did get work done between the kills


@pytest.mark.parametrize(("encrypted", "hard_sync"), KILL_CASES, ids=KILL_IDS)
def test_sigkill_during_writes(tmp_path: Path, encrypted: bool, hard_sync: bool) -> None:
    """A process crash loses nothing written, synced or not: the page cache survives it. (On the real disk, so
    that syncs take their real time.)"""
    sigkills(tmp_path, encrypted, hard_sync, 8)


if SOAK:

    @pytest.mark.soak
    @pytest.mark.parametrize(("encrypted", "hard_sync"), KILL_CASES, ids=KILL_IDS)
    def test_sigkill_during_writes_soak(tmp_path: Path, encrypted: bool, hard_sync: bool) -> None:
        sigkills(tmp_path, encrypted, hard_sync, 70)
