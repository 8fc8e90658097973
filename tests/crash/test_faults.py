"""Injected I/O faults: ``FaultFS`` (over a ``RecordingFS``) fails the Nth call of one kind during a random hard_sync
workload, for every N (or a spread of them): EIO from fdatasync, fsync, fsync of the directory, ftruncate, rename,
unlink and open; ENOSPC and short writes from pwrite/pwritev.

For each fault: the failing call raises ``StorageIOError`` carrying the injected errno; every later write raises
``StorageFailedError`` and nothing is synced again (a failed sync is never retried); ``close()`` works and leaks no
file descriptor; reopening the directory (the page cache, as after a restart without power loss) gives the
acknowledged state plus possibly the failed operation's effects, within the invariants of ``check_recovered``; the
states a power cut could leave after the failure (only durable data, and random subsets of the unsynced writes)
satisfy the same invariants — the last durable state is intact; and the reopened directory accepts writes again.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from crashmodel import Model, Op, check_recovered, execute, gen_op, observe, post_recovery_write, small_files
from crashutil import SOAK, report
from fsdoubles import SHORT, FaultFS, RecordingFS
from powersim import Disk

from aiowal import DiskStorage, MetaInfo, StorageClosedError, StorageFailedError, StorageIOError
from aiowal.raftpb import ConfState, Entry

N_OPS = 30
PER_FILE = 5


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class Outcome:
    fired: bool
    op: Op | None = None
    states: int = 0


def _later_writes_refused(st: DiskStorage, m: Model) -> None:
    last = m.last_index()
    attempts = [
        lambda: st.save(entries=[Entry(term=m.term, index=last + 1, data=b"later")]),
        lambda: st.set_uint(MetaInfo.RAFT_ID, 5),
        lambda: st.create_snapshot(last, ConfState(voters=[1]), b"s"),
        lambda: st.truncate_entries_until(m.first_index()),
        lambda: st.sync(),
    ]
    for attempt in attempts:
        with pytest.raises(StorageFailedError):
            attempt()


def run_with_fault(root: Path, key: bytes | None, seed: int, kind: str, nth: int, error: int | str) -> Outcome:
    d = str(root / "wal")
    rec = RecordingFS()
    fs = FaultFS(rec)
    rng = random.Random(seed)
    m = Model()
    fds0 = _fds()
    fs.arm(kind, nth, error)
    failed: Op | None = None
    st: DiskStorage | None = None
    try:
        st = DiskStorage.open(d, key=key, hard_sync=True, fs=fs)
    except StorageIOError as exc:
        assert exc.errno == (errno.ENOSPC if error == SHORT else error), exc
        failed = Op("open")
    for _ in range(N_OPS if st is not None else 0):
        op = gen_op(m, rng)
        try:
            st = execute(st, op, d, key, fs)
        except StorageIOError as exc:
            assert exc.errno == (errno.ENOSPC if error == SHORT else error), exc
            assert fs.fired
            failed = op
            break
        m = m.apply(op)
    if failed is None:  # the fault may still hit the final sync of close()
        assert st is not None
        try:
            st.close()
        except StorageIOError as exc:
            assert exc.errno == (errno.ENOSPC if error == SHORT else error), exc
            failed = Op("close")
    if failed is None:
        shutil.rmtree(d)
        return Outcome(False)
    syncs = fs.counts["fdatasync"] + fs.counts["fsync"] + fs.counts["fsync_dir"]
    if st is not None and not st.closed:
        _later_writes_refused(st, m)
        assert fs.counts["fdatasync"] + fs.counts["fsync"] + fs.counts["fsync_dir"] == syncs, "a sync was retried"
    elif st is not None:  # the fault hit the close or the open of a reopen: the old storage is closed
        with pytest.raises(StorageClosedError):
            st.save(entries=[Entry(term=m.term, index=m.last_index() + 1)])
    fs.disarm()
    if st is not None:
        st.close()
    assert _fds() == fds0, "file descriptors leaked"
    b = m.apply(failed)
    checked = 0
    # A power cut after the failure: what is durable must be a valid state (the last durable one, or more).
    disk = Disk(d)
    for call in rec.calls:
        disk.apply(call)
    state_rng = random.Random(seed * 31 + nth)
    for mode in ("durable", "subset", "torn"):
        sd = str(root / f"state-{mode}")
        disk.state(state_rng, mode).materialize(sd)
        with DiskStorage.open(sd, key=key, hard_sync=True) as st2:
            problems = check_recovered(observe(st2), m, b, failed)
        assert not problems, f"power cut after {kind} #{nth} failed in {failed.describe()} ({mode}): {problems}"
        shutil.rmtree(sd)
        checked += 1
    # A restart without power loss: the page cache holds the acknowledged state and maybe part of the failed op.
    with DiskStorage.open(d, key=key, hard_sync=True) as st3:
        o = observe(st3)
    problems = check_recovered(o, m, b, failed)
    assert not problems, f"reopen after {kind} #{nth} failed in {failed.describe()}: {problems}"
    problems = post_recovery_write(d, key, o)
    assert not problems, f"writing after {kind} #{nth} failed: {problems}"
    shutil.rmtree(d)
    return Outcome(True, failed, checked + 1)


CASES = [
    ("fdatasync", errno.EIO),
    ("fsync", errno.EIO),
    ("fsync_dir", errno.EIO),
    ("pwrite", errno.ENOSPC),
    ("pwrite", SHORT),
    ("pwrite", errno.EIO),
    ("ftruncate", errno.ENOSPC),
    ("rename", errno.EIO),
    ("unlink", errno.EIO),
    ("open", errno.ENOSPC),
]


def faults(scratch: Path, kind: str, error: int | str, encrypted: bool, seed: int, limit: int) -> None:
    t0 = time.monotonic()
    key = bytes(range(16)) if encrypted else None
    # Count the calls of this kind in the workload, then fail each one in turn (a spread of them if too many).
    probe = FaultFS()
    with small_files(PER_FILE):
        st = DiskStorage.open(str(scratch / "probe"), key=key, hard_sync=True, fs=probe)
        m = Model()
        rng = random.Random(seed)
        for _ in range(N_OPS):
            op = gen_op(m, rng)
            st = execute(st, op, str(scratch / "probe"), key, probe)
            m = m.apply(op)
        st.close()
        shutil.rmtree(scratch / "probe")
        total = probe.counts[kind]
        assert total > 0, f"the workload makes no {kind} call"
        positions = list(range(1, total + 1))
        if len(positions) > limit:
            positions = sorted(random.Random(seed).sample(positions, limit))
        fired = 0
        states = 0
        for nth in positions:
            out = run_with_fault(scratch, key, seed, kind, nth, error)
            if out.fired:
                fired += 1
                states += out.states
    assert fired >= len(positions) * 0.9, (fired, len(positions))
    report(f"injected faults ({kind})", fired, time.monotonic() - t0)
    report("states checked after injected faults", states, 0)


CASE_IDS = [f"{k}-{e}" for k, e in CASES]


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize(("kind", "error"), CASES, ids=CASE_IDS)
def test_fault_at_every_call(scratch: Path, kind: str, error: int | str, encrypted: bool) -> None:
    faults(scratch, kind, error, encrypted, 4242 + encrypted, limit=40)


if SOAK:  # make soak: other workloads, and every call of each kind

    @pytest.mark.soak
    @pytest.mark.parametrize("seed", [5001, 5002, 5003])
    @pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
    @pytest.mark.parametrize(("kind", "error"), CASES, ids=CASE_IDS)
    def test_fault_at_every_call_soak(scratch: Path, kind: str, error: int | str, encrypted: bool, seed: int) -> None:
        faults(scratch, kind, error, encrypted, seed, limit=1_000_000)
