"""Power-loss simulation of ``AsyncDiskStorage``: 16-64 concurrent callers (appends, HardStates, overwrites by a
new term, snapshots through ``save``, ``create_snapshot``, ``set_uint``, ``sync``; rotation every few entries) run
on asyncio or uvloop, plain or encrypted, through a ``RecordingFS``, which keeps the C ``SyncWorker`` in use: its
syncs are recorded through ``FS.synced``. At every point of the trace the states a power cut may leave (only durable
data; everything; random subsets of the unsynced writes, some torn at 512-byte sectors) are built with ``powersim``,
opened and checked: with ``hard_sync`` against the acknowledged prefix of the calls and the calls in flight
(``asyncmodel.check_concurrent``), without it (``truncate_entries_until`` calls too) against the last acknowledged
``sync``, ``close`` or snapshot and the calls since (``nondurable.check_nondurable``); every fourth one must then take
a durable write through ``AsyncDiskStorage`` that a reopen shows.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from asyncmodel import LOOPS, AsyncRun, OpSource, call, check_concurrent, run_loop, run_rounds
from crashmodel import Ent, Model, Observed, Op, Snap, observe, small_files
from crashutil import SOAK, report
from fsdoubles import RecordingFS
from nondurable import SYNC_POINTS, check_nondurable, is_snapshot
from powersim import CrashState, Disk

from aiowal import AsyncDiskStorage, DiskStorage, speedups
from aiowal.format import DATA_START
from aiowal.raftpb import Entry


@dataclass
class SimStats:
    states: int = 0
    torn_states: int = 0
    unopenable: int = 0  # states whose open (or first read) raised
    acked_checked: int = 0  # acknowledged entries found intact, summed over the states
    failures: list[str] = field(default_factory=list)


async def _write_after_recovery(directory: str, key: bytes | None, o: Observed) -> list[str]:
    """The recovered directory takes a durable write through ``AsyncDiskStorage``; a reopen shows it after the
    recovered log, with nothing else changed."""
    term = max(o.hs[0], o.log[o.last].term if o.last in o.log else o.snap.term, 1)
    e = Entry(term=term, index=o.last + 1, data=b"after the crash %d" % o.last)
    st = await AsyncDiskStorage.open(directory, key=key, hard_sync=True)
    try:
        await st.save(entries=[e])
    finally:
        await st.close()
    with DiskStorage.open(directory, key=key, read_only=True) as st:
        o2 = observe(st)
    want = {**o.log, e.index: Ent(e.term, 0, e.data)}
    out = list(o2.problems)
    if o2.log != want:
        out.append(f"after a write and reopen the log differs at {sorted(set(o2.log) ^ set(want))[:5]}")
    if (o2.snap, o2.hs, o2.uints) != (o.snap, o.hs, o.uints):
        out.append("after a write and reopen the snapshot, hard state or u64 fields changed")
    return out


class Simulator:
    def __init__(
        self, root: Path, key: bytes | None, rng: random.Random, loop: str, post_every: int = 4, hard_sync: bool = True
    ) -> None:
        self.root = root
        self.key = key
        self.rng = rng
        self.loop = loop
        self.hard_sync = hard_sync
        # Without hard_sync: the last acknowledged sync point, and the last acknowledged sync point or snapshot.
        self.synced = self.snapshotted = 0
        self.post_every = post_every
        self.stats = SimStats()
        self.seen: set[tuple[bytes, int, int, int, int]] = set()
        self._n = 0

    def check(self, state: CrashState, run: AsyncRun, p: int, q: int, context: str) -> None:
        self._n += 1
        d = str(self.root / f"state{self._n}")
        state.materialize(d)
        try:
            try:
                with DiskStorage.open(d, key=self.key, hard_sync=self.hard_sync) as st:
                    o = observe(st)
            except Exception as exc:
                self.stats.unopenable += 1
                self._fail(context, state, [f"open/read raised {type(exc).__name__}: {exc}"])
                return
            if self.hard_sync:
                problems = check_concurrent(o, run.models, run.ops, p, q)
            else:
                problems = check_nondurable(o, run.models, run.ops, self.synced, self.snapshotted, q)
            if not problems and self._n % self.post_every == 0:
                try:
                    problems = run_loop(self.loop, lambda: _write_after_recovery(d, self.key, o))
                except Exception as exc:
                    problems = [f"the write after recovery raised {type(exc).__name__}: {exc}"]
            if problems:
                self._fail(context, state, problems)
            else:
                base = p if self.hard_sync else self.synced  # what was made durable
                self.stats.acked_checked += sum(1 for i in run.models[base].log if i in o.log)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        self.stats.states += 1
        self.stats.torn_states += bool(state.torn)

    def _fail(self, context: str, state: CrashState, problems: list[str]) -> None:
        files = {n: c.size for n, c in sorted(state.files.items())}
        self.stats.failures.append(f"{context}: {problems} (files {files}, pending applied {state.pending_applied})")

    def states_at(self, disk: Disk, run: AsyncRun, p: int, q: int, modes: list[str], where: str) -> None:
        for mode in modes:
            state = disk.state(self.rng, mode)
            key = (state.digest(), p, q, self.synced, self.snapshotted)  # what the check depends on
            if key in self.seen:
                continue
            self.seen.add(key)
            since = "" if self.hard_sync else f", ops {self.synced + 1}..{q} since the sync"
            self.check(state, run, p, q, f"{where}, ops {p + 1}..{q} in flight{since}, {mode}")

    def run(self, run: AsyncRun, fs: RecordingFS, directory: str, samples: int, label: str) -> None:
        """Crash at every point of the trace: after each fs call (all kinds of state) and after each
        acknowledgement (the same disk, checked against the longer acknowledged prefix)."""
        disk = Disk(directory)
        p = q = 0
        for k, c in enumerate(fs.calls):
            if c.kind == "mark":
                if c.label == "call":
                    q = max(q, c.info)
                    continue
                p = max(p, c.info)
                if run.ops[c.info].kind in SYNC_POINTS:
                    self.synced = max(self.synced, c.info)
                if run.ops[c.info].kind in SYNC_POINTS or is_snapshot(run.ops[c.info]):
                    self.snapshotted = max(self.snapshotted, c.info)
                modes = ["durable", "subset"] if disk.n_pending() else ["durable"]
            else:
                disk.apply(c)
                modes = ["durable", "all"] + ["subset", "torn"] * samples if disk.n_pending() else ["durable"]
            self.states_at(disk, run, p, q, modes, f"{label} call {k} ({c.kind} {os.path.basename(c.path)})")


# (label, loop, encrypted, hard_sync, seed, rounds, ops per caller, entries per log file)
WORKLOADS = [
    ("asyncio-plain", "asyncio", False, True, 21, 2, 2, 8),
    ("uvloop-encrypted", "uvloop", True, True, 22, 2, 2, 8),
    ("asyncio-plain-nondurable", "asyncio", False, False, 20, 1, 2, 4),
    ("uvloop-encrypted-nondurable", "uvloop", True, False, 35, 1, 2, 5),
]
SOAK_WORKLOADS = [
    (
        f"{loop}-{'encrypted' if enc else 'plain'}{'' if durable else '-nondurable'}",
        loop,
        enc,
        durable,
        seed,
        3,
        3,
        files,
    )
    for durable, base, size in ((True, 500, 5), (False, 600, 3))
    for k, (loop, enc) in enumerate([("asyncio", False), ("asyncio", True), ("uvloop", False), ("uvloop", True)])
    for seed, files in [(base + k, size + k)]
]
PARAMS = ("label", "loop", "encrypted", "hard_sync", "seed", "rounds", "ops_per_caller", "per_file")


def async_power_loss(
    scratch: Path,
    label: str,
    loop: str,
    encrypted: bool,
    hard_sync: bool,
    seed: int,
    rounds: int,
    ops_per_caller: int,
    per_file: int,
) -> SimStats:
    t0 = time.monotonic()
    key = random.Random(seed).randbytes(32) if encrypted else None
    live = str(scratch / "live")
    fs = RecordingFS()
    workers: list[bool] = []

    def worker_in_use(st: AsyncDiskStorage) -> None:
        workers.append(st._worker is not None)

    with small_files(per_file):
        run = run_loop(
            loop,
            lambda: run_rounds(live, fs, key, seed, rounds, ops_per_caller, check=worker_in_use, hard_sync=hard_sync),
        )
        states_dir = scratch / "states"
        states_dir.mkdir()
        sim = Simulator(states_dir, key, random.Random(seed), loop, hard_sync=hard_sync)
        sim.run(run, fs, live, samples=2 if SOAK else 1, label=label)
    st = sim.stats
    saves = sum(1 for op in run.ops if op.kind == "save")
    loop_thread = threading.current_thread().name
    worker_syncs = sum(1 for c in fs.calls if c.kind == "sync" and c.how == "fdatasync" and c.thread == loop_thread)
    what = "async power-loss crash states" + ("" if hard_sync else " without hard_sync")
    report(what, st.states, time.monotonic() - t0)
    report(f"{what} (of which torn)", st.torn_states, 0)
    report(f"{what} (of which unopenable)", st.unopenable, 0)
    if hard_sync:
        report("async power-loss acknowledged saves (each checked at every later crash point)", saves, 0)
        report("async power-loss acknowledged entries found intact (summed over the states)", st.acked_checked, 0)
    else:
        report(
            "async power-loss without hard_sync: synced entries found intact (summed over the states)",
            st.acked_checked,
            0,
        )
    report("async power-loss fdatasyncs by the C sync worker", worker_syncs, 0)
    assert not st.failures, f"{len(st.failures)} bad crash states, first ones:\n" + "\n".join(st.failures[:8])
    # The production sync path was inside what was crashed: the C worker ran the plain fdatasync steps (it reports
    # them on the loop thread) whenever the accelerator is there.
    has_worker = speedups.sync_worker is not None
    assert workers == [has_worker] * rounds
    assert (worker_syncs > 0) == has_worker, (worker_syncs, has_worker)
    # The workload did what it is meant to exercise.
    kinds = {op.kind for op in run.ops}
    assert {"save", "create_snapshot", "set_uint", "sync"} <= kinds, kinds
    assert hard_sync or "truncate" in kinds, kinds
    assert sum(1 for op in run.ops if op.kind == "save" and op.snap is not None) >= 2
    assert any(m.overwrite_point(op) for m, op in zip(run.models, run.ops[1:], strict=False))
    assert all(16 <= n <= 64 for n in run.callers) and run.max_batch >= 8, (run.callers, run.max_batch)
    assert {"create", "write", "truncate", "sync", "dirsync", "rename", "unlink"} <= {c.kind for c in fs.calls}
    assert st.torn_states > 0
    return st


@pytest.mark.parametrize(PARAMS, WORKLOADS)
def test_async_power_loss(
    scratch: Path,
    label: str,
    loop: str,
    encrypted: bool,
    hard_sync: bool,
    seed: int,
    rounds: int,
    ops_per_caller: int,
    per_file: int,
) -> None:
    st = async_power_loss(scratch, label, loop, encrypted, hard_sync, seed, rounds, ops_per_caller, per_file)
    assert st.states >= 500, st


if SOAK:  # make soak: more rounds and callers, both loops, plain and encrypted, more states per crash point

    @pytest.mark.soak
    @pytest.mark.parametrize(PARAMS, SOAK_WORKLOADS)
    def test_async_power_loss_soak(
        scratch: Path,
        label: str,
        loop: str,
        encrypted: bool,
        hard_sync: bool,
        seed: int,
        rounds: int,
        ops_per_caller: int,
        per_file: int,
    ) -> None:
        st = async_power_loss(scratch, label, loop, encrypted, hard_sync, seed, rounds, ops_per_caller, per_file)
        assert st.states >= 2500, st  # four workloads of each kind: at least 10,000 states of each


# --- a snapshot through save behind appends of the same batch -------------------------------------------------
def _without_records(disk: Disk) -> CrashState:
    """Every pending directory operation and write, except the records (the slots arrive, their data does not)."""
    saved = {ino: list(ops) for ino, ops in disk.pending.items()}
    for ino, ops in disk.pending.items():
        disk.pending[ino] = [op for op in ops if not (op[0] == "w" and op[1] >= DATA_START)]
    try:
        return disk.state(None, "all")
    finally:
        disk.pending.update(saved)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_snapshot_through_save_behind_unsynced_appends(scratch: Path, loop: str, encrypted: bool) -> None:
    """One batch: plain appends (written, not yet synced), then a save with a snapshot, which makes a new log file.
    A power cut once that file exists can leave the old file torn (slots without their records) behind a newer,
    empty one. Opening must neither fail nor return an entry with bytes that were never written for it."""
    key = bytes(range(32)) if encrypted else None
    live = str(scratch / "live")
    fs = RecordingFS()
    source = OpSource(0, Model())
    acked = [Op("save", ((i, Ent(1, 0, b"acked %d " % i * 40)),), (1, 1, i)) for i in range(1, 4)]
    appends = [Op("save", ((i, Ent(1, 0, b"in flight %d " % i * 300)),), (1, 1, i - 1)) for i in range(4, 10)]
    snapshot = Op("save", ((41, Ent(2, 0, b"after the snapshot")),), (2, 1, 40), Snap(40, 2, b"state", (1, 2, 3)))

    async def main() -> int:
        st = await AsyncDiskStorage.open(live, key=key, hard_sync=True, fs=fs)
        try:
            for op in acked:
                await call(st, op)
                fs.mark("ack", source.add(op))
            calls = []
            for op in [*appends, snapshot]:
                fs.mark("call", source.add(op))
                calls.append(call(st, op))
            await asyncio.gather(*calls)
            fs.mark("ack", len(source.ops) - 1)
            return int(st.stats()["batch_size"]["max"])
        finally:
            await st.close()

    assert run_loop(loop, main) == len(appends) + 1  # the appends and the snapshot went in one batch
    disk = Disk(live)
    p = q = 0
    new_files = states = 0
    problems: list[str] = []
    for k, c in enumerate(fs.calls):
        if c.kind == "mark":
            p, q = (p, max(q, c.info)) if c.label == "call" else (max(p, c.info), q)
            continue
        disk.apply(c)
        if q <= len(acked):
            continue  # the batch has not been called yet
        new_files += c.kind == "create" and c.path.endswith(".wal")
        crash_states = {
            "durable": disk.state(None, "durable"),
            "all": disk.state(None, "all"),
            "slots without records": _without_records(disk),
        }
        for mode, state in crash_states.items():
            d = str(scratch / f"state{k}-{len(mode)}")
            state.materialize(d)
            try:
                with DiskStorage.open(d, key=key) as st:
                    found = check_concurrent(observe(st), source.models, source.ops, p, q)
            except Exception as exc:
                found = [f"open/read raised {type(exc).__name__}: {exc}"]
            problems += [f"call {k} ({c.kind} {os.path.basename(c.path)}), {mode}: {x}" for x in found]
            states += 1
            shutil.rmtree(d)
    assert new_files >= 1 and states > 20, (new_files, states)
    assert not problems, "\n".join(problems[:6])


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_stale_slots_behind_an_empty_first_slot_are_dropped(scratch: Path, encrypted: bool) -> None:
    """Found by the soak: a save with a snapshot writes its first entry to slot 0 of a fresh file, then appends of
    the same batch write slots 1..3; a power cut before the batch's sync keeps the later slot write and not the
    first. The file then looks empty (slot 0 is), and the next append filled slot 0 and brought the stale entries
    after it back to life: after a reopen they followed an entry they were never written after."""
    key = bytes(range(32)) if encrypted else None
    live = str(scratch / "live")
    fs = RecordingFS()
    snapshot = Op("save", ((11, Ent(2, 0, b"first after the snapshot" * 9)),), (2, 1, 10), Snap(10, 2, b"s", (1,)))
    appends = Op("save", tuple((i, Ent(2, 0, b"stale %d" % i * 20)) for i in (12, 13, 14)), (2, 1, 11))

    async def main() -> int:
        st = await AsyncDiskStorage.open(live, key=key, hard_sync=True, fs=fs)
        try:
            fs.mark("batch")
            await asyncio.gather(call(st, snapshot), call(st, appends))
            return int(st.stats()["batch_size"]["max"])
        finally:
            await st.close()

    assert run_loop("asyncio", main) == 2
    start = next(k for k, c in enumerate(fs.calls) if c.kind == "mark")
    fresh = next(c for c in fs.calls[start:] if c.kind == "create" and c.path.endswith(".wal"))
    slot_writes = [k for k, c in enumerate(fs.calls) if c.kind == "write" and c.ino == fresh.ino and c.offset < 4096]
    assert [fs.calls[k].offset for k in slot_writes[:2]] == [0, 32]  # slot 0, then slots 1..3
    sync = next(k for k, c in enumerate(fs.calls) if k > slot_writes[1] and c.kind == "sync" and c.ino == fresh.ino)
    disk = Disk(live)
    for c in fs.calls[:sync]:
        disk.apply(c)
    disk.pending[fresh.ino] = [op for op in disk.pending[fresh.ino] if not (op[0] == "w" and op[1] == 0)]
    d = str(scratch / "state")
    disk.state(None, "all").materialize(d)
    with DiskStorage.open(d, key=key) as st:
        assert (st.snapshot().metadata.index, st.first_index(), st.last_index()) == (10, 11, 10)
        st.save(entries=[Entry(term=2, index=11, data=b"written after the crash")])
    with DiskStorage.open(d, key=key, read_only=True) as st:
        got = [(e.index, e.term, e.data) for e in st.entries(st.first_index(), st.last_index() + 1)]
    assert got == [(11, 2, b"written after the crash")]
