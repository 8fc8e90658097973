"""Model-based test: a Hypothesis state machine drives ``DiskStorage`` and a plain in-memory model of the Storage
contract with Raft-like saves (appends, overwrites of the uncommitted tail, snapshots through ``save`` and
``create_snapshot``), ``truncate_entries_until``, ``set_uint``, syncs and reopens, with log files rotating every 7
entries; every read must agree with the model.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from aiowal import (
    CompactedError,
    DiskStorage,
    MetaInfo,
    SnapOutOfDateError,
    UnavailableError,
)
from aiowal.logfile import LogFile
from aiowal.raftpb import ConfState, Entry, HardState, Snapshot, SnapshotMetadata

KEY = b"badger16byteskey"
PER_FILE = 7
SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

datas = st.one_of(st.just(b""), st.binary(min_size=1, max_size=48), st.binary(min_size=200, max_size=3000))
etypes = st.sampled_from([0, 0, 0, 1, 2])
u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


@dataclass
class Model:
    """What the Storage contract says the storage holds."""

    log: dict[int, tuple[int, int, bytes]] = field(default_factory=dict)  # index -> (term, type, data)
    snap_index: int = 0
    snap_term: int = 0
    snap_data: bytes | None = None
    snap_voters: list[int] = field(default_factory=list)
    hs: tuple[int, int, int] = (0, 0, 0)
    uints: dict[MetaInfo, int] = field(
        default_factory=lambda: {MetaInfo.RAFT_ID: 0, MetaInfo.GROUP_ID: 0, MetaInfo.CHECKPOINT_INDEX: 0}
    )
    term: int = 1  # the newest term seen; new entries never go below it (Raft's log is term-ordered)
    phys_low: int = 1  # lowest index that may still be physically present in a log file
    phys_exact: bool = True  # no create_snapshot since the log was last discarded: num_entries is exact

    def first(self) -> int:
        return self.snap_index + 1 if self.snap_index else (min(self.log) if self.log else 1)

    def last(self) -> int:
        return max(max(self.log, default=0), self.snap_index)

    def entry(self, i: int) -> Entry:
        term, etype, data = self.log[i]
        e = Entry(term=term, index=i, type=etype)
        if data:
            e.data = data
        return e

    def apply_entries(self, ents: list[Entry], floor: int) -> None:
        ents = [e for e in ents if e.index > floor]
        if not ents:
            return
        for i in [i for i in self.log if i >= ents[0].index]:
            del self.log[i]
        for e in ents:
            self.log[e.index] = (e.term, e.type, e.data)


class StorageMachine(RuleBasedStateMachine):
    def __init__(self, base: Path, key: bytes | None) -> None:
        super().__init__()
        self.key = key
        self.dir = Path(tempfile.mkdtemp(dir=base))
        self.st = DiskStorage.open(self.dir, key=key)
        self.m = Model()

    def teardown(self) -> None:
        self.st.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- helpers --------------------------------------------------------------------------------------------
    def _entries(self, data: st.DataObject, start: int, n: int, term: int) -> list[Entry]:
        out = []
        for i in range(start, start + n):
            e = Entry(term=term, index=i, type=data.draw(etypes))
            payload = data.draw(datas)
            if payload:
                e.data = payload
            out.append(e)
        return out

    def _hard_state(self, data: st.DataObject, top: int) -> HardState | None:
        if not data.draw(st.booleans()):
            return None
        t, _, c = self.m.hs
        term = data.draw(st.integers(min_value=t, max_value=max(t, self.m.term) + 1))
        vote = data.draw(st.integers(min_value=0, max_value=5))
        commit = data.draw(st.integers(min_value=c, max_value=max(c, top)))
        return HardState(term=term, vote=vote, commit=commit)

    def _apply_hs(self, hs: HardState | None) -> None:
        if hs is not None and (hs.term or hs.vote or hs.commit):
            self.m.hs = (hs.term, hs.vote, hs.commit)
            self.m.term = max(self.m.term, hs.term)

    def _snapshot_fields(self, s: Snapshot) -> tuple[int, int, bytes | None, list[int]]:
        md = s.metadata
        return md.index, md.term, (s.data if s.HasField("data") else None), list(md.conf_state.voters)

    def _check_unchanged(self) -> None:
        self.check_everything()

    # --- writes ---------------------------------------------------------------------------------------------
    @rule(data=st.data())
    def append(self, data: st.DataObject) -> None:
        """Raft-like append: new entries start anywhere in the uncommitted tail (an overwrite) or right after it;
        sometimes the batch repeats entries at or below the snapshot, which must be ignored."""
        m = self.m
        lo = max(m.first(), m.hs[2] + 1)
        start = data.draw(st.integers(min_value=lo, max_value=m.last() + 1), label="start")
        m.term += data.draw(st.integers(min_value=0, max_value=1), label="bump")
        n = data.draw(st.integers(min_value=1, max_value=16), label="n")
        ents = self._entries(data, start, n, m.term)
        if start == m.first() and m.snap_index and data.draw(st.booleans()):
            below = max(1, m.snap_index - 2)
            ents = [Entry(term=m.snap_term, index=i) for i in range(below, start)] + ents
        hs = self._hard_state(data, start + n - 1)
        self.st.save(hs, ents)
        m.apply_entries(ents, m.snap_index)
        self._apply_hs(hs)

    @rule(data=st.data())
    def save_snapshot(self, data: st.DataObject) -> None:
        """A snapshot through save (etcd ApplySnapshot): the log is discarded, entries after it may follow."""
        m = self.m
        index = data.draw(st.integers(min_value=max(m.snap_index + 1, m.hs[2], 1), max_value=m.last() + 5))
        m.term += data.draw(st.integers(min_value=0, max_value=1))
        payload = data.draw(st.one_of(st.none(), datas))
        voters = data.draw(st.lists(st.integers(min_value=1, max_value=9), max_size=3))
        s = Snapshot(metadata=SnapshotMetadata(index=index, term=m.term, conf_state=ConfState(voters=voters)))
        if payload is not None:
            s.data = payload
        start = data.draw(st.integers(min_value=max(1, index - 2), max_value=index + 1))
        ents = self._entries(data, start, data.draw(st.integers(min_value=0, max_value=5)), m.term)
        top = max(index, ents[-1].index) if ents else index
        hs = self._hard_state(data, top)
        self.st.save(hs, ents, s)
        m.log.clear()
        m.snap_index, m.snap_term, m.snap_data, m.snap_voters = index, m.term, payload, voters
        m.phys_low, m.phys_exact = index + 1, True
        m.apply_entries(ents, index)
        self._apply_hs(hs)

    @precondition(lambda self: self.m.snap_index > 0)
    @rule(data=st.data())
    def stale_snapshot_refused(self, data: st.DataObject) -> None:
        m = self.m
        index = data.draw(st.integers(min_value=1, max_value=m.snap_index))
        s = Snapshot(metadata=SnapshotMetadata(index=index, term=m.snap_term), data=b"stale")
        with pytest.raises(SnapOutOfDateError):
            self.st.save(HardState(term=m.term + 5, vote=1, commit=index), [Entry(term=m.term, index=index + 1)], s)

    @rule(data=st.data())
    def gap_refused(self, data: st.DataObject) -> None:
        m = self.m
        start = data.draw(st.integers(min_value=m.last() + 2, max_value=m.last() + 4))
        with pytest.raises(ValueError, match="gap"):
            self.st.save(HardState(term=m.term + 5, vote=9, commit=m.hs[2]), [Entry(term=m.term, index=start)])

    @precondition(lambda self: any(i > self.m.snap_index for i in self.m.log))
    @rule(data=st.data())
    def create_snapshot(self, data: st.DataObject) -> None:
        m = self.m
        i = data.draw(st.integers(min_value=m.first(), max_value=m.last()))
        payload = data.draw(st.one_of(st.none(), datas))
        voters = data.draw(st.lists(st.integers(min_value=1, max_value=9), max_size=3))
        self.st.create_snapshot(i, ConfState(voters=voters), payload)
        m.snap_index, m.snap_term, m.snap_data, m.snap_voters = i, m.log[i][0], payload, voters
        for k in [k for k in m.log if k <= i]:
            del m.log[k]
        m.phys_exact = False

    @rule(data=st.data())
    def create_snapshot_refused(self, data: st.DataObject) -> None:
        m = self.m
        if m.first() > 1 and data.draw(st.booleans()):
            i = data.draw(st.integers(min_value=0, max_value=m.first() - 1))
            with pytest.raises(SnapOutOfDateError):
                self.st.create_snapshot(i, ConfState(), b"x")
        else:
            i = data.draw(st.integers(min_value=m.last() + 1, max_value=m.last() + 3))
            with pytest.raises((UnavailableError, SnapOutOfDateError)):
                self.st.create_snapshot(i, ConfState(), b"x")

    @rule(data=st.data())
    def truncate_entries_until(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(min_value=0, max_value=self.m.last() + 2))
        self.st.truncate_entries_until(i)
        for k, (term, etype, _) in list(self.m.log.items()):
            if k < i and etype == 0:
                self.m.log[k] = (term, etype, b"")

    @rule(
        info=st.sampled_from([MetaInfo.RAFT_ID, MetaInfo.GROUP_ID, MetaInfo.CHECKPOINT_INDEX]),
        value=u64,
    )
    def set_uint(self, info: MetaInfo, value: int) -> None:
        self.st.set_uint(info, value)
        self.m.uints[info] = value

    @rule(data=st.data())
    def save_hard_state(self, data: st.DataObject) -> None:
        hs = self._hard_state(data, self.m.last())
        self.st.save(hard_state=hs)
        self._apply_hs(hs)

    @rule(hard_sync=st.booleans())
    def reopen(self, hard_sync: bool) -> None:
        self.st.close()
        self.st = DiskStorage.open(self.dir, key=self.key, hard_sync=hard_sync)
        assert self.st.repairs == []

    @rule()
    def sync(self) -> None:
        self.st.sync()

    # --- reads ----------------------------------------------------------------------------------------------
    @rule(data=st.data())
    def read_range(self, data: st.DataObject) -> None:
        m = self.m
        first, last = m.first(), m.last()
        lo = data.draw(st.integers(min_value=first, max_value=last + 1))
        hi = data.draw(st.integers(min_value=lo, max_value=last + 1))
        max_size = data.draw(st.one_of(st.none(), st.integers(min_value=0, max_value=400)))
        if hi > lo and data.draw(st.booleans()):
            # a limit right at (or one byte short of) the size of the first k entries
            k = data.draw(st.integers(min_value=1, max_value=hi - lo))
            edge = sum(m.entry(i).ByteSize() for i in range(lo, lo + k))
            max_size = edge - data.draw(st.integers(min_value=0, max_value=1))
        want: list[Entry] = []
        total = 0
        for i in range(lo, hi):
            e = m.entry(i)
            total += e.ByteSize()
            if want and max_size is not None and total > max_size:
                break
            want.append(e)
        assert self.st.entries(lo, hi, max_size) == want
        if first > 1:
            with pytest.raises(CompactedError):
                self.st.entries(data.draw(st.integers(min_value=0, max_value=first - 1)), hi)
        with pytest.raises(UnavailableError):
            self.st.entries(lo, last + 2 + data.draw(st.integers(min_value=0, max_value=3)))

    @rule()
    def read_only_view(self) -> None:
        """A read-only opener (no lock needed) beside the open writer sees what the writer made durable: a prefix
        of the log up to the durable mark, so all of it once the writer synced."""
        m = self.m
        with DiskStorage.open(self.dir, key=self.key, read_only=True) as ro:
            first, last = ro.first_index(), ro.last_index()
            assert first == m.first()
            assert max(m.snap_index, self.st.durable_index() or 0) <= last <= m.last()
            assert ro.entries(first, last + 1) == [m.entry(i) for i in range(first, last + 1)]
            assert self._snapshot_fields(ro.snapshot()) == (m.snap_index, m.snap_term, m.snap_data, m.snap_voters)
        self.st.sync()
        with DiskStorage.open(self.dir, key=self.key, read_only=True) as ro:
            self._check(ro)

    @invariant()
    def check_everything(self) -> None:
        self._check(self.st)

    def _check(self, s: DiskStorage) -> None:
        m = self.m
        first, last = m.first(), m.last()
        assert (s.first_index(), s.last_index()) == (first, last)
        for i in range(max(0, first - 2), last + 2):
            if i < m.snap_index:
                with pytest.raises(CompactedError):
                    s.term(i)
            elif i == m.snap_index:
                assert s.term(i) == m.snap_term
            elif i > last:
                with pytest.raises(UnavailableError):
                    s.term(i)
            else:
                assert s.term(i) == m.log[i][0]
        assert s.entries(first, last + 1) == [m.entry(i) for i in range(first, last + 1)]
        assert self._snapshot_fields(s.snapshot()) == (m.snap_index, m.snap_term, m.snap_data, m.snap_voters)
        hs = s.hard_state()
        term, vote, commit = m.hs
        if term or vote or commit:  # a non-empty HardState's commit is reported at least at the snapshot
            commit = max(commit, m.snap_index)
        assert (hs.term, hs.vote, hs.commit) == (term, vote, commit)
        assert s.initial_state()[1] == s.snapshot().metadata.conf_state
        assert {i: s.uint(i) for i in m.uints} == m.uints
        assert (s.uint(MetaInfo.SNAPSHOT_INDEX), s.uint(MetaInfo.SNAPSHOT_TERM)) == (m.snap_index, m.snap_term)
        assert s.checkpoint() == m.uints[MetaInfo.CHECKPOINT_INDEX]
        n = s.num_entries()
        if m.phys_exact:
            assert n == len(m.log)
        else:
            assert len(m.log) <= n <= max(last - m.phys_low + 1, 0)
        files = s.num_log_files()
        assert files >= -(-n // PER_FILE) - 1
        assert len(list(self.dir.glob("*.wal"))) == files + 1


@pytest.fixture
def small_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LogFile, "max_entries", PER_FILE)


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])  # encrypted files take the Python paths
def test_storage_matches_model(tmp_path: Path, small_files: None, key: bytes | None) -> None:
    assert LogFile.max_entries == PER_FILE
    run_state_machine_as_test(lambda: StorageMachine(tmp_path, key), settings=SETTINGS)
