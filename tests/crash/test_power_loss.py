"""Power-loss simulation: record the fs calls of a workload, build the states a disk may hold after a power cut at
every point of the trace, open each one and check it.

Per crash point the states are: only the durable data; everything pending (what a process crash leaves); random
subsets of the pending writes with a random prefix of the pending directory operations; and the same with writes
torn at 512-byte sector boundaries (see ``powersim``). Each distinct state (per operation in flight) is checked once:
with ``hard_sync`` against the acknowledged operations and the one in flight (``crashmodel.check_recovered``),
without it against the last completed sync and what was written since (``nondurable.check_nondurable``; the
workload calls ``sync()`` now and then). Every recovered state must also accept a durable write that a reopen
shows; for a sample of states the recovery itself is recorded and crashed again (a power cut during recovery).
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from crashmodel import Observed, Run, check_recovered, observe, post_recovery_write, run_workload, small_files
from crashutil import SOAK, report
from fsdoubles import Call, RecordingFS
from nondurable import check_nondurable, synced_points
from powersim import CrashState, Disk

from aiowal import DiskStorage
from aiowal.format import DATA_START
from aiowal.raftpb import ConfState, Entry, HardState, Snapshot, SnapshotMetadata


@dataclass
class SimStats:
    states: int = 0
    crash_points: int = 0
    torn_states: int = 0
    recovery_states: int = 0
    unopenable: int = 0  # states whose open (or first read) raised
    calls: int = 0
    failures: list[str] = field(default_factory=list)


Judge = Callable[[Observed], list[str]]
"""The check of a recovered directory for one crash point (its problems; none when it is right)."""


class Simulator:
    def __init__(
        self,
        root: Path,
        key: bytes | None,
        rng: random.Random,
        post_every: int,
        double_every: int,
        hard_sync: bool = True,
    ) -> None:
        self.root = root
        self.key = key
        self.hard_sync = hard_sync
        self.rng = rng
        self.post_every = post_every
        self.double_every = double_every
        self.stats = SimStats()
        self.seen: set[tuple[bytes, int]] = set()
        self._n = 0

    def _dir(self) -> str:
        self._n += 1
        return str(self.root / f"state{self._n}")

    def check(self, state: CrashState, judge: Judge, context: str, recovery: bool = False) -> None:
        d = self._dir()
        state.materialize(d)
        if recovery:
            self.stats.recovery_states += 1
        else:
            self.stats.states += 1
            self.stats.torn_states += bool(state.torn)
        try:
            try:
                st = DiskStorage.open(d, key=self.key, hard_sync=self.hard_sync)
                try:
                    o = observe(st)
                finally:
                    st.close()
            except Exception as exc:
                self.stats.unopenable += 1
                self._fail(context, state, [f"open/read raised {type(exc).__name__}: {exc}"])
                return
            problems = judge(o)
            n = self.stats.states + self.stats.recovery_states
            if not problems and n % self.post_every == 1:
                try:
                    problems += post_recovery_write(d, self.key, o)
                except Exception as exc:
                    problems.append(f"the write after recovery raised {type(exc).__name__}: {exc}")
            if problems:
                self._fail(context, state, problems)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def _fail(self, context: str, state: CrashState, problems: list[str]) -> None:
        files = {n: c.size for n, c in sorted(state.files.items())}
        self.stats.failures.append(f"{context}: {problems} (files {files}, pending applied {state.pending_applied})")

    def crash_during_recovery(self, state: CrashState, judge: Judge, context: str) -> None:
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
                DiskStorage.open(d, key=self.key, hard_sync=self.hard_sync, fs=fs).close()
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
                        self.check(s2, judge, f"{context}, then crash during recovery at call {k} ({mode})", True)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def judge(self, run: Run, acked: int, inflight: int | None) -> tuple[Judge, str]:
        """The check of a crash with ops ``0..acked-1`` done and ``inflight`` begun (``run.models[k + 1]`` is the
        state after ``run.ops[k]``), and what was in flight."""
        if inflight is None:
            a = b = run.models[acked]
            op = None
        else:
            a, b, op = run.models[inflight], run.models[inflight + 1], run.ops[inflight]
        what = f"op {op.describe() if op else 'none'} in flight"
        if self.hard_sync:
            return (lambda o: check_recovered(o, a, b, op)), what
        p, s = synced_points(run.ops, acked - 1)
        q = acked - 1 if inflight is None else inflight
        states = run.models[1:]
        return (lambda o: check_nondurable(o, states, run.ops, p, s, q)), f"{what}, ops {p + 1}..{q} since the sync"

    def run(
        self, run: Run, fs: RecordingFS, directory: str, samples: int, label: str, until_failure: bool = False
    ) -> None:
        """Check the crash states at every point of the trace (``until_failure``: stop at the first bad one)."""
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
            judge, what = self.judge(run, acked, inflight)
            modes = ["durable", "all"] + ["subset", "torn"] * samples if disk.n_pending() else ["durable"]
            if until_failure and self.stats.failures:
                return
            for mode in modes:
                state = disk.state(self.rng, mode)
                key = (state.digest(), -1 if inflight is None else inflight)
                if key in self.seen:
                    continue
                self.seen.add(key)
                where = f"{label} call {k} ({call.kind} {os.path.basename(call.path)})"
                context = f"{where}, {what}, {mode}"
                self.check(state, judge, context)
                if self.double_every and self.stats.states % self.double_every == 0:
                    self.crash_during_recovery(state, judge, context)


WORKLOADS = [
    # (label, encrypted, hard_sync, seed, operations, entries per log file)
    ("plain", False, True, 101, 55, 6),
    ("encrypted", True, True, 303, 55, 6),
    ("plain-nondurable", False, False, 139, 28, 4),
    ("encrypted-nondurable", True, False, 149, 28, 5),
]
SOAK_WORKLOADS = [
    (f"{'encrypted' if k % 2 else 'plain'}-{k}", bool(k % 2), True, 1000 + k, 90, 4 + k % 5) for k in range(6)
] + [
    (f"{'encrypted' if k % 2 else 'plain'}-nondurable-{k}", bool(k % 2), False, 2000 + k, 90, 3 + k % 4)
    for k in range(6)
]
PARAMS = ("label", "encrypted", "hard_sync", "seed", "n_ops", "per_file")


def power_loss(
    scratch: Path, label: str, encrypted: bool, hard_sync: bool, seed: int, n_ops: int, per_file: int, soak: bool
) -> SimStats:
    t0 = time.monotonic()
    key = random.Random(seed).randbytes(32) if encrypted else None
    live = str(scratch / "live")
    fs = RecordingFS()
    with small_files(per_file):
        run = run_workload(live, fs, key, seed, n_ops, hard_sync=hard_sync)
        states_dir = scratch / "states"
        states_dir.mkdir()
        sim = Simulator(states_dir, key, random.Random(seed), post_every=2, double_every=12, hard_sync=hard_sync)
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
    if not hard_sync:
        assert sum(1 for op in run.ops if op.kind == "sync") >= 2
        assert sum(1 for c in fs.calls if c.kind == "create" and c.path.endswith(".wal")) >= 5  # rotations
    assert st.torn_states > 0 and st.recovery_states > 0
    what = "power-loss crash states" + ("" if hard_sync else " without hard_sync")
    report(what, st.states, time.monotonic() - t0)
    report(f"{what} (of which torn)", st.torn_states, 0)
    report(f"{what} (of which unopenable)", st.unopenable, 0)
    report(f"{what}: states of a crash during recovery", st.recovery_states, 0)
    assert not st.failures, f"{len(st.failures)} bad crash states, first ones:\n" + "\n".join(st.failures[:8])
    return st


@pytest.mark.parametrize(PARAMS, WORKLOADS)
def test_power_loss(
    scratch: Path, label: str, encrypted: bool, hard_sync: bool, seed: int, n_ops: int, per_file: int
) -> None:
    st = power_loss(scratch, label, encrypted, hard_sync, seed, n_ops, per_file, soak=False)
    assert st.states >= 500, st


if SOAK:  # make soak: more and longer workloads, more states per crash point

    @pytest.mark.soak
    @pytest.mark.parametrize(PARAMS, SOAK_WORKLOADS)
    def test_power_loss_soak(
        scratch: Path, label: str, encrypted: bool, hard_sync: bool, seed: int, n_ops: int, per_file: int
    ) -> None:
        st = power_loss(scratch, label, encrypted, hard_sync, seed, n_ops, per_file, soak=True)
        assert st.states >= 1500, st  # six workloads of each kind: at least 9,000 states of each


def disk_at_mark(d: str, fs: RecordingFS) -> tuple[Disk, list[Call]]:
    """The disk as the calls before ``fs.mark`` left it (all of them reached it), and the calls after the mark."""
    start = next(k for k, c in enumerate(fs.calls) if c.kind == "mark")
    disk = Disk(d)
    for c in fs.calls[:start]:
        disk.apply(c)
    return disk, fs.calls[start + 1 :]


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
    disk, rest = disk_at_mark(d, fs)
    # The overwrite's calls up to the sync after its new record and slot; the record write then goes missing.
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


def test_nondurable_check_catches_a_recovery_that_trusts_unsynced_files(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check without hard_sync is not blind: with open checking records in the newest log file only (as when
    rotation synced the full file), the non-durable workload's crash states yield garbage read back as entries."""

    def newest_only(files: list[object], durable: int | None) -> list[bool]:
        return [k == len(files) - 1 for k in range(len(files))]

    monkeypatch.setattr("aiowal.recovery.needs_record_check", newest_only)
    live = str(scratch / "live")
    fs = RecordingFS()
    with small_files(4):
        run = run_workload(live, fs, None, 139, 28, hard_sync=False)
        (scratch / "states").mkdir()
        sim = Simulator(scratch / "states", None, random.Random(139), post_every=2, double_every=0, hard_sync=False)
        sim.run(run, fs, live, samples=1, label="older files unchecked", until_failure=True)
    assert any("explains the log" in f or "raised CorruptionError" in f for f in sim.stats.failures), sim.stats


# --- snapshots without hard_sync ------------------------------------------------------------------------------
def _read_all(directory: str, key: bytes | None = None) -> tuple[tuple[int, int], list[tuple[int, int, bytes]]]:
    """The snapshot (index, term) and every entry of a directory, after a writable open (its recovery)."""
    with DiskStorage.open(directory, key=key, hard_sync=False) as st:
        meta = st.snapshot().metadata
        got = [(e.index, e.term, e.data) for e in st.entries(st.first_index(), st.last_index() + 1)]
    return (meta.index, meta.term), got


@pytest.mark.parametrize("then_sync", [False, True], ids=["returned", "then-synced"])
def test_create_snapshot_is_durable_without_hard_sync(scratch: Path, then_sync: bool) -> None:
    """Found by the non-durable power-loss test: without hard_sync ``create_snapshot`` renamed its new wal.meta with
    no directory sync, and a later ``sync()`` did not cover the rename either when no log file came or went: after
    a power cut the directory held the previous snapshot although a sync had completed."""
    d = str(scratch / "wal")
    fs = RecordingFS()
    with DiskStorage.open(d, hard_sync=False, fs=fs) as st:
        st.save(entries=[Entry(term=1, index=i, data=b"entry %d" % i) for i in range(1, 6)])
        st.sync()
        st.create_snapshot(3, ConfState(voters=[1]), b"state at 3")
        if then_sync:
            st.sync()
        disk = Disk(d)
        for c in fs.calls:
            disk.apply(c)
        state = disk.state(None, "durable")  # the power cut comes now
    sd = str(scratch / "state")
    state.materialize(sd)
    snap, got = _read_all(sd)
    assert snap == (3, 1)
    assert got == [(i, 1, b"entry %d" % i) for i in (4, 5)]


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_snapshot_through_save_never_continues_the_old_log(scratch: Path, encrypted: bool) -> None:
    """Found by the non-durable power-loss test: without hard_sync a save with a snapshot at the log's last index
    renamed its new wal.meta with no directory sync, then wrote its entries to the new log file. A power cut that
    kept the new file and its entries but not the rename left the old wal.meta and the old log, followed by the
    save's entries: entry 5 of term 1 (the old log's) before entries that follow the leader's entry 5 of term 2, a
    log no node ever held, which opened without complaint."""
    key = bytes(range(32)) if encrypted else None
    d = str(scratch / "wal")
    fs = RecordingFS()
    old = [(i, 1, b"old entry %d" % i) for i in range(1, 6)]
    new = [(i, 2, b"after the snapshot %d" % i) for i in range(6, 9)]
    with DiskStorage.open(d, key=key, hard_sync=False, fs=fs) as st:
        st.save(entries=[Entry(term=t, index=i, data=x) for i, t, x in old])
        st.sync()
        fs.mark("snapshot")
        snap = Snapshot(
            data=b"state at 5", metadata=SnapshotMetadata(index=5, term=2, conf_state=ConfState(voters=[1]))
        )
        st.save(HardState(term=2, commit=6), [Entry(term=t, index=i, data=x) for i, t, x in new], snap)
    disk, rest = disk_at_mark(d, fs)
    checked = 0
    for k, c in enumerate(rest):
        disk.apply(c)
        renames = [n for n, op in enumerate(disk.dir_ops) if op[0] == "rename"]
        saved = disk.dir_ops
        disk.dir_ops = saved[: renames[-1]] if renames else saved  # every write, the switch of wal.meta lost
        try:
            state = disk.state(None, "all")
        finally:
            disk.dir_ops = saved
        sd = str(scratch / f"state{k}")
        state.materialize(sd)
        snap_found, got = _read_all(sd, key)
        if snap_found == (0, 0):
            assert got == old[: len(got)], (k, c.kind, got)
        else:
            assert snap_found == (5, 2) and got == new[: len(got)], (k, c.kind, snap_found, got)
        checked += 1
    assert checked >= 8


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_dropped_data_mark_never_lands_before_its_record(scratch: Path, encrypted: bool) -> None:
    """Found by the non-durable async power-loss test: a slot with the dropped-data mark accepts its record's full
    data or none without a checksum of the data, so the mark must never reach the disk before the record. Without
    hard_sync ``truncate_entries_until`` marked entries whose records no sync had covered yet: a power cut that kept
    the mark and only the first sector of the record read back the rest as zeros (keystream bytes, encrypted)."""
    key = bytes(range(32)) if encrypted else None
    d = str(scratch / "wal")
    fs = RecordingFS()
    data = {i: random.Random(i).randbytes(3000) for i in (1, 2, 3)}
    with DiskStorage.open(d, key=key, hard_sync=False, fs=fs) as st:
        st.save(entries=[Entry(term=1, index=i, data=data[i]) for i in (1, 2, 3)])
        fs.mark("truncate")
        st.truncate_entries_until(3)
    disk, rest = disk_at_mark(d, fs)
    checked = 0
    for k, c in enumerate(rest):
        disk.apply(c)
        saved = {ino: list(ops) for ino, ops in disk.pending.items()}
        for ops in disk.pending.values():  # every record write still pending keeps only its first sector
            ops[:] = [("w", o, x[:512]) if kind == "w" and o >= DATA_START else (kind, o, x) for kind, o, x in ops]
        try:
            state = disk.state(None, "all")
        finally:
            disk.pending.update(saved)
        sd = str(scratch / f"state{k}")
        state.materialize(sd)
        _, got = _read_all(sd, key)
        bad = [i for i, t, x in got if x not in (data[i], b"")]
        assert not bad, f"after call {k} ({c.kind}): entries {bad} hold bytes never written for them"
        checked += 1
    assert checked >= 3
