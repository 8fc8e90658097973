"""Power-loss simulation: record the fs calls of a hard_sync workload, build the states a disk may hold after a power
cut at every point of the trace, open each one and check the invariants of ``crashmodel.check_recovered``.

Per crash point the states are: only the durable data; everything pending (what a process crash leaves); random
subsets of the pending writes with a random prefix of the pending directory operations; and the same with writes
torn at 512-byte sector boundaries (see ``powersim``). Each distinct state (per operation in flight) is checked once.
Every recovered state must also accept a durable write that a reopen shows; for a sample of states the recovery
itself is recorded and crashed again (a power cut during recovery).
"""

from __future__ import annotations

import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from crashmodel import Model, Op, Run, check_recovered, observe, post_recovery_write, run_workload, small_files
from crashutil import SOAK, report
from fsdoubles import RecordingFS
from powersim import CrashState, Disk

from aiowal import DiskStorage
from aiowal.raftpb import Entry


@dataclass
class SimStats:
    states: int = 0
    crash_points: int = 0
    torn_states: int = 0
    recovery_states: int = 0
    calls: int = 0
    failures: list[str] = field(default_factory=list)


class Simulator:
    def __init__(self, root: Path, key: bytes | None, rng: random.Random, post_every: int, double_every: int) -> None:
        self.root = root
        self.key = key
        self.rng = rng
        self.post_every = post_every
        self.double_every = double_every
        self.stats = SimStats()
        self.seen: set[tuple[bytes, int]] = set()
        self._n = 0

    def _dir(self) -> str:
        self._n += 1
        return str(self.root / f"state{self._n}")

    def check(self, state: CrashState, a: Model, b: Model, op: Op | None, context: str, recovery: bool = False) -> None:
        d = self._dir()
        state.materialize(d)
        try:
            try:
                st = DiskStorage.open(d, key=self.key, hard_sync=True)
                try:
                    o = observe(st)
                finally:
                    st.close()
            except Exception as exc:
                self._fail(context, state, [f"open/read raised {type(exc).__name__}: {exc}"])
                return
            problems = check_recovered(o, a, b, op)
            n = self.stats.states + self.stats.recovery_states
            if not problems and n % self.post_every == 0:
                problems += post_recovery_write(d, self.key, o)
            if problems:
                self._fail(context, state, problems)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        if recovery:
            self.stats.recovery_states += 1
        else:
            self.stats.states += 1
            self.stats.torn_states += bool(state.torn)

    def _fail(self, context: str, state: CrashState, problems: list[str]) -> None:
        files = {n: c.size for n, c in sorted(state.files.items())}
        self.stats.failures.append(f"{context}: {problems} (files {files}, pending applied {state.pending_applied})")

    def crash_during_recovery(self, state: CrashState, a: Model, b: Model, op: Op | None, context: str) -> None:
        """Record a recovery of ``state`` and check the states a power cut during it can leave."""
        if not state.present:
            return
        d = self._dir()
        state.materialize(d)
        try:
            fs = RecordingFS()
            inodes = fs.adopt(d)
            disk = Disk.from_files(d, state.files, inodes)
            try:
                DiskStorage.open(d, key=self.key, hard_sync=True, fs=fs).close()
            except Exception as exc:
                self._fail(context + " (recorded recovery)", state, [f"open raised {type(exc).__name__}: {exc}"])
                return
            for k, call in enumerate(fs.calls):
                disk.apply(call)
                if disk.n_pending() and self.rng.random() < 0.5:
                    mode = self.rng.choice(("subset", "torn", "durable"))
                    s2 = disk.state(self.rng, mode)
                    key = (s2.digest(), -1)
                    if key not in self.seen:
                        self.seen.add(key)
                        self.check(s2, a, b, op, f"{context}, then crash during recovery at call {k} ({mode})", True)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def run(self, run: Run, fs: RecordingFS, directory: str, samples: int, label: str) -> None:
        disk = Disk(directory)
        acked = 0
        inflight: int | None = None
        for k, call in enumerate(fs.calls):
            if call.kind == "mark":
                if call.label == "begin":
                    inflight = call.info
                else:
                    acked, inflight = call.info + 1, None
            else:
                disk.apply(call)
                self.stats.calls += 1
            self.stats.crash_points += 1
            if inflight is None:
                a = b = run.models[acked]
                op = None
            else:
                a, b, op = run.models[inflight], run.models[inflight + 1], run.ops[inflight]
            modes = ["durable", "all"] + ["subset", "torn"] * samples if disk.n_pending() else ["durable"]
            for mode in modes:
                state = disk.state(self.rng, mode)
                key = (state.digest(), -1 if inflight is None else inflight)
                if key in self.seen:
                    continue
                self.seen.add(key)
                where = f"{label} call {k} ({call.kind} {os.path.basename(call.path)})"
                context = f"{where}, op {op.describe() if op else 'none'} in flight, {mode}"
                self.check(state, a, b, op, context)
                if self.double_every and self.stats.states % self.double_every == 0:
                    self.crash_during_recovery(state, a, b, op, context)


WORKLOADS = [
    # (label, encrypted, seed, operations, entries per log file)
    ("plain", False, 101, 55, 6),
    ("encrypted", True, 303, 55, 6),
]
SOAK_WORKLOADS = [(f"{'encrypted' if k % 2 else 'plain'}-{k}", bool(k % 2), 1000 + k, 90, 4 + k % 5) for k in range(6)]
PARAMS = ("label", "encrypted", "seed", "n_ops", "per_file")


def power_loss(scratch: Path, label: str, encrypted: bool, seed: int, n_ops: int, per_file: int, soak: bool) -> None:
    t0 = time.monotonic()
    key = random.Random(seed).randbytes(32) if encrypted else None
    live = str(scratch / "live")
    fs = RecordingFS()
    with small_files(per_file):
        run = run_workload(live, fs, key, seed, n_ops)
        states_dir = scratch / "states"
        states_dir.mkdir()
        sim = Simulator(states_dir, key, random.Random(seed), post_every=2, double_every=12)
        sim.run(run, fs, live, samples=3 if soak else 1, label=label)
    st = sim.stats
    kinds = {c.kind for c in fs.calls}
    # The workload did what it is meant to exercise.
    assert {"create", "write", "truncate", "sync", "dirsync", "rename", "unlink"} <= kinds, kinds
    assert sum(1 for op in run.ops if op.kind == "save" and op.snap is not None) >= 2
    assert sum(1 for op in run.ops if op.kind == "create_snapshot") >= 2
    assert sum(1 for op in run.ops if op.kind == "set_uint") >= 2
    assert any(m.overwrite_point(op) for m, op in zip(run.models, run.ops, strict=False))
    assert {"truncate", "reopen"} <= {op.kind for op in run.ops}
    assert st.torn_states > 0 and st.recovery_states > 0
    report("power-loss crash states", st.states, time.monotonic() - t0)
    report("power-loss crash states (of which torn)", st.torn_states, 0)
    report("power-loss states of a crash during recovery", st.recovery_states, 0)
    assert not st.failures, f"{len(st.failures)} bad crash states, first ones:\n" + "\n".join(st.failures[:8])
    assert st.states >= (1500 if soak else 500), st


@pytest.mark.parametrize(PARAMS, WORKLOADS)
def test_power_loss(scratch: Path, label: str, encrypted: bool, seed: int, n_ops: int, per_file: int) -> None:
    power_loss(scratch, label, encrypted, seed, n_ops, per_file, soak=False)


if SOAK:  # make soak: more and longer workloads, more states per crash point

    @pytest.mark.soak
    @pytest.mark.parametrize(PARAMS, SOAK_WORKLOADS)
    def test_power_loss_soak(scratch: Path, label: str, encrypted: bool, seed: int, n_ops: int, per_file: int) -> None:
        power_loss(scratch, label, encrypted, seed, n_ops, per_file, soak=True)


def test_empty_entry_over_an_old_record(scratch: Path) -> None:
    """Found by the soak: a new leader's empty entry overwrites an uncommitted entry, its slot reaches the disk but
    its 4-byte record does not. The old record's bytes lie where the new record should be; they must not pass for
    the new entry's data (they did, as "data being dropped by truncate_entries_until")."""
    d = str(scratch / "wal")
    fs = RecordingFS()
    with DiskStorage.open(d, hard_sync=True, fs=fs) as st:
        st.save(entries=[Entry(term=1, index=i, data=b"old entry %d" % i * 20) for i in (1, 2, 3)])
        fs.mark("overwrite")
        st.save(entries=[Entry(term=2, index=2)])
    disk = Disk(d)
    start = next(k for k, c in enumerate(fs.calls) if c.kind == "mark")
    for c in fs.calls[:start]:
        disk.apply(c)
    # The overwrite's calls up to the sync after its new record and slot; the record write then goes missing.
    rest = fs.calls[start + 1 :]
    at = next(k for k, c in enumerate(rest) if c.kind == "write" and c.offset >= 1 << 20)
    record = rest[at]
    assert record.data == bytes(4)
    sync = next(k for k, c in enumerate(rest) if k > at and c.kind == "sync")
    assert [c.kind for c in rest[at:sync]] == ["write", "write"]  # the record, then the slot
    for c in rest[:sync]:
        disk.apply(c)
    ino = record.ino
    disk.pending[ino] = [op for op in disk.pending[ino] if not (op[0] == "w" and op[1] == record.offset)]
    state = disk.state(None, "all")
    sd = str(scratch / "state")
    state.materialize(sd)
    with DiskStorage.open(sd) as st:
        got = [(e.index, e.term, e.data) for e in st.entries(st.first_index(), st.last_index() + 1)]
    assert got == [(1, 1, b"old entry 1" * 20)], got
