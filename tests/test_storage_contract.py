"""The Storage contract of ``DiskStorage``: etcd's MemoryStorage cases (``storage_test.go``), Dgraph's raftwal
tests (format notes §8) re-expressed for ``save``/``create_snapshot``, and the rules of docs/api.md.

Where aiowal deliberately follows etcd instead of Dgraph (a snapshot through ``save`` discards the log, gaps are
refused), the tests assert aiowal's behaviour and say so.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from fsdoubles import CountingFS

from aiowal import (
    CompactedError,
    DiskStorage,
    EncryptionKeyError,
    MetaInfo,
    SnapOutOfDateError,
    StorageClosedError,
    StorageError,
    StorageLockedError,
    UnavailableError,
)
from aiowal.format import DATA_START, LOG_FILE_SIZE, MAX_DATA_END
from aiowal.logfile import LogFile
from aiowal.raft import Config, RawNode
from aiowal.raftpb import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata

KEY = b"badger16byteskey"
OTHER_KEY = b"other16byteskeys"
KEYS = [pytest.param(None, id="plain"), pytest.param(KEY, id="encrypted")]


# --- helpers ------------------------------------------------------------------------------------------------------
def E(index: int, term: int, data: bytes = b"", etype: int = EntryType.EntryNormal) -> Entry:
    """An entry as DiskStorage returns it: term, index and type set; data only when not empty."""
    e = Entry(term=term, index=index, type=etype)
    if data:
        e.data = data
    return e


def snap(index: int, term: int, data: bytes | None = None, voters: Sequence[int] = ()) -> Snapshot:
    s = Snapshot(metadata=SnapshotMetadata(index=index, term=term, conf_state=ConfState(voters=voters)))
    if data is not None:
        s.data = data
    return s


def all_entries(st: DiskStorage) -> list[Entry]:
    return st.entries(st.first_index(), st.last_index() + 1)


def pairs(es: Sequence[Entry]) -> list[tuple[int, int]]:
    return [(e.index, e.term) for e in es]


def wal_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("*.wal"))


def tree_digest(d: Path) -> dict[str, tuple[int, str]]:
    """Size and a hash of the allocated data of every file (holes of sparse files are skipped, not read)."""
    out = {}
    for p in sorted(d.iterdir()):
        h = hashlib.sha256()
        fd = os.open(p, os.O_RDONLY)
        try:
            size, off = os.fstat(fd).st_size, 0
            while off < size:
                try:
                    start = os.lseek(fd, off, os.SEEK_DATA)
                except OSError:  # ENXIO: only a hole is left
                    break
                end = os.lseek(fd, start, os.SEEK_HOLE)
                h.update(start.to_bytes(8, "big") + os.pread(fd, end - start, start))
                off = end
        finally:
            os.close(fd)
        out[p.name] = (p.stat().st_size, h.hexdigest())
    return out


def state(st: DiskStorage) -> dict[str, object]:
    """Everything the public read API shows."""
    first, last = st.first_index(), st.last_index()
    terms = {}
    for i in range(max(first - 2, 0), last + 2):
        try:
            terms[i] = st.term(i)
        except CompactedError:
            terms[i] = "compacted"
        except UnavailableError:
            terms[i] = "unavailable"
    return {
        "first": first,
        "last": last,
        "entries": [e.SerializeToString() for e in all_entries(st)],
        "terms": terms,
        "hard_state": st.hard_state().SerializeToString(),
        "snapshot": st.snapshot().SerializeToString(),
        "uints": [st.uint(i) for i in MetaInfo],
        "num_entries": st.num_entries(),
        "num_log_files": st.num_log_files(),
    }


def reopened(st: DiskStorage, key: bytes | None = None) -> DiskStorage:
    path = st.path
    st.close()
    return DiskStorage.open(path, key=key)


def etcd_storage(path: Path, key: bytes | None = None) -> DiskStorage:
    """etcd's ``ents = [3/3, 4/4, 5/5]``: entry 3 is the dummy, i.e. a snapshot at 3/3 and entries 4/4, 5/5."""
    st = DiskStorage.open(path, key=key)
    st.save(snapshot=snap(3, 3))
    st.save(entries=[E(4, 4), E(5, 5)])
    return st


def dgraph_storage(path: Path, ents: Sequence[Entry], key: bytes | None = None) -> DiskStorage:
    """Dgraph's ``reset(ents)``: a log that starts at ``ents[0]`` (a snapshot just below it makes that possible)."""
    st = DiskStorage.open(path, key=key)
    if ents[0].index > 1:
        st.save(snapshot=snap(ents[0].index - 1, ents[0].term))
    st.save(entries=ents)
    return st


@pytest.fixture
def per_file(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Lets a test lower LogFile.max_entries (restored afterwards)."""
    yield monkeypatch


def set_per_file(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    monkeypatch.setattr(LogFile, "max_entries", n)


# --- etcd storage_test.go / Dgraph storage_test.go -----------------------------------------------------------------
@pytest.mark.parametrize("reopen", [False, True])
def test_term(tmp_path: Path, reopen: bool) -> None:
    st = etcd_storage(tmp_path)
    if reopen:
        st = reopened(st)
    with st:
        with pytest.raises(CompactedError):
            st.term(2)
        assert [st.term(i) for i in (3, 4, 5)] == [3, 4, 5]
        with pytest.raises(UnavailableError):
            st.term(6)


ENTS_3456 = [E(3, 3), E(4, 4), E(5, 5), E(6, 6)]


@pytest.mark.parametrize(
    ("lo", "hi", "max_size", "want"),
    [
        (2, 6, None, CompactedError),
        (4, 5, None, [4]),
        (4, 6, None, [4, 5]),
        (4, 7, None, [4, 5, 6]),
        (4, 7, 0, [4]),  # at least one entry
        (4, 7, 12, [4, 5]),
        (4, 7, 15, [4, 5]),
        (4, 7, 17, [4, 5]),
        (4, 7, 18, [4, 5, 6]),
        (3, 7, 18, [3, 4, 5]),
        (4, 8, None, UnavailableError),
        (5, 5, None, []),
    ],
)
def test_entries_dgraph(tmp_path: Path, lo: int, hi: int, max_size: int | None, want: object) -> None:
    """Dgraph's TestStorageEntries: reset([3,4,5,6]), each entry without data has Size 6."""
    with dgraph_storage(tmp_path, ENTS_3456) as st:
        assert st.first_index() == 3
        assert [e.ByteSize() for e in all_entries(st)] == [6, 6, 6, 6]
        if isinstance(want, type):
            with pytest.raises(want):
                st.entries(lo, hi, max_size)
        else:
            got = st.entries(lo, hi, max_size)
            assert got == [E(i, i) for i in want]  # type: ignore[attr-defined]
            assert not any(e.HasField("data") for e in got)


def test_entries_etcd(tmp_path: Path) -> None:
    """etcd's TestStorageEntries: ents [3,4,5,6] with 3 the dummy, limits built from each entry's size."""
    st = DiskStorage.open(tmp_path, key=None)
    st.save(snapshot=snap(3, 3))
    st.save(entries=[E(4, 4, b"four"), E(5, 5, b"five!"), E(6, 6, b"six")])
    s4, s5, s6 = (e.ByteSize() for e in all_entries(st))
    assert (s4, s5, s6) == (12, 13, 11)
    cases: list[tuple[int, int, int | None, object]] = [
        (2, 6, None, CompactedError),
        (3, 4, None, CompactedError),
        (4, 5, None, [4]),
        (4, 6, None, [4, 5]),
        (4, 7, None, [4, 5, 6]),
        (4, 7, 0, [4]),
        (4, 7, s4 - 1, [4]),
        (4, 7, s4 + s5, [4, 5]),
        (4, 7, s4 + s5 + s6 // 2, [4, 5]),
        (4, 7, s4 + s5 + s6 - 1, [4, 5]),
        (4, 7, s4 + s5 + s6, [4, 5, 6]),
        (5, 7, s5, [5]),
        (4, 8, None, UnavailableError),
    ]
    data = {4: b"four", 5: b"five!", 6: b"six"}
    for lo, hi, max_size, want in cases:
        if isinstance(want, type):
            with pytest.raises(want):
                st.entries(lo, hi, max_size)
        else:
            got = st.entries(lo, hi, max_size)
            assert got == [E(i, i, data[i]) for i in want], (lo, hi, max_size)  # type: ignore[attr-defined]
            if max_size is not None and len(got) > 1:
                assert sum(e.ByteSize() for e in got) <= max_size
    st.close()


def test_entries_range_arguments(tmp_path: Path) -> None:
    with dgraph_storage(tmp_path, ENTS_3456) as st:
        with pytest.raises(ValueError):
            st.entries(5, 4)
        with pytest.raises(UnavailableError):
            st.entries(7, 8)
        assert st.entries(7, 7) == []


def test_last_index(tmp_path: Path) -> None:
    st = dgraph_storage(tmp_path / "a", [E(3, 3), E(4, 4), E(5, 5)])
    assert st.last_index() == 5
    st.save(entries=[E(6, 5)])
    assert st.last_index() == 6
    assert reopened(st).last_index() == 6
    # Dgraph: reset([6/5]) -> LastIndex 6
    with dgraph_storage(tmp_path / "b", [E(6, 5)]) as st:
        assert (st.first_index(), st.last_index()) == (6, 6)


def test_first_index(tmp_path: Path) -> None:
    st = dgraph_storage(tmp_path, [E(3, 3), E(4, 4), E(5, 5)])
    assert st.first_index() == 3
    st.create_snapshot(4, ConfState(), None)  # etcd's Compact(4)
    assert st.first_index() == 5
    assert st.term(4) == 4
    st = reopened(st)
    assert (st.first_index(), st.last_index()) == (5, 5)
    st.close()


@pytest.mark.parametrize(
    ("i", "err", "first", "remaining"),
    [
        (2, SnapOutOfDateError, 4, [4, 5]),
        (3, SnapOutOfDateError, 4, [4, 5]),
        (4, None, 5, [5]),
        (5, None, 6, []),
    ],
)
def test_compact(tmp_path: Path, i: int, err: type[Exception] | None, first: int, remaining: list[int]) -> None:
    """etcd's TestStorageCompact via create_snapshot: at or below the snapshot is out of date."""
    with etcd_storage(tmp_path) as st:
        if err is not None:
            with pytest.raises(err):
                st.create_snapshot(i, ConfState(), b"x")
            assert st.snapshot().metadata.index == 3
        else:
            st.create_snapshot(i, ConfState(), b"x")
            assert (st.snapshot().metadata.index, st.snapshot().metadata.term) == (i, i)
        assert st.first_index() == first
        assert st.term(first - 1) == first - 1
        assert [e.index for e in st.entries(first, 6)] == remaining


@pytest.mark.parametrize("i", [4, 5])
def test_create_snapshot(tmp_path: Path, i: int) -> None:
    cs = ConfState(voters=[1, 2, 3])
    with dgraph_storage(tmp_path, [E(3, 3), E(4, 4), E(5, 5)]) as st:
        st.create_snapshot(i, cs, b"data")
        want = snap(i, i, b"data", voters=[1, 2, 3])
        want.metadata.conf_state.auto_leave = False
        assert st.snapshot() == want
        assert st.initial_state() == (HardState(term=0, vote=0, commit=0), want.metadata.conf_state)
        assert st.first_index() == i + 1
        assert st.last_index() == 5
        assert st.term(i) == i
        with pytest.raises(SnapOutOfDateError):
            st.create_snapshot(i, cs, b"again")
    with DiskStorage.open(tmp_path) as st:
        assert st.snapshot() == want


def test_create_snapshot_past_last_index(tmp_path: Path) -> None:
    with dgraph_storage(tmp_path, [E(3, 3), E(4, 4), E(5, 5)]) as st:
        with pytest.raises(UnavailableError):
            st.create_snapshot(6, ConfState(), b"")
        assert st.snapshot().metadata.index == 2
        with pytest.raises(SnapOutOfDateError):
            st.create_snapshot(1, ConfState(), b"")


def test_create_snapshot_without_data(tmp_path: Path) -> None:
    with dgraph_storage(tmp_path, [E(1, 1), E(2, 1)]) as st:
        st.create_snapshot(2, None, None)
        s = st.snapshot()
        assert not s.HasField("data")
        assert (s.metadata.index, s.metadata.term) == (2, 1)
        assert list(s.metadata.conf_state.voters) == []


def test_apply_snapshot(tmp_path: Path) -> None:
    """etcd's TestStorageApplySnapshot: a newer snapshot applies; an older one is ErrSnapOutOfDate."""
    with DiskStorage.open(tmp_path) as st:
        st.save(snapshot=snap(4, 4, b"data", voters=[1, 2, 3]))
        assert st.snapshot().metadata.index == 4
        before = state(st)
        for bad in (snap(3, 3, b"data"), snap(4, 4, b"again")):
            with pytest.raises(SnapOutOfDateError):
                st.save(HardState(term=9, vote=1, commit=2), [E(5, 4)], bad)
            assert state(st) == before
        # an empty snapshot (index 0) is no snapshot at all
        st.save(snapshot=Snapshot())
        assert state(st) == before


@pytest.mark.parametrize(
    ("new", "want"),
    [
        ([E(1, 1), E(2, 2)], [(3, 3), (4, 4), (5, 5)]),
        ([E(3, 3), E(4, 4), E(5, 5)], [(3, 3), (4, 4), (5, 5)]),
        ([E(3, 3), E(4, 6), E(5, 6)], [(3, 3), (4, 6), (5, 6)]),
        ([E(3, 3), E(4, 4), E(5, 5), E(6, 5)], [(3, 3), (4, 4), (5, 5), (6, 5)]),
        ([E(2, 3), E(3, 3), E(4, 5)], [(3, 3), (4, 5)]),  # incoming 2 trimmed, 5 removed
        ([E(4, 5)], [(3, 3), (4, 5)]),  # truncate the existing log
        ([E(6, 5)], [(3, 3), (4, 4), (5, 5), (6, 5)]),  # append
    ],
)
@pytest.mark.parametrize("key", KEYS)
def test_append(tmp_path: Path, new: list[Entry], want: list[tuple[int, int]], key: bytes | None) -> None:
    """Dgraph's and etcd's TestStorageAppend on [3/3, 4/4, 5/5]."""
    st = dgraph_storage(tmp_path, [E(3, 3), E(4, 4), E(5, 5)], key=key)
    st.save(entries=new)
    assert pairs(all_entries(st)) == want
    assert st.last_index() == want[-1][0]
    st = reopened(st, key)
    assert pairs(all_entries(st)) == want
    assert st.num_entries() == len(want)
    st.close()


def test_meta_file(tmp_path: Path) -> None:
    """Dgraph's TestMetaFile, and the bytes it leaves in wal.meta. Dgraph stores a HardState whose commit (30) is
    past its empty log; aiowal refuses it, so the entries it commits come first here."""
    with DiskStorage.open(tmp_path) as st:
        assert st.uint(MetaInfo.RAFT_ID) == 0
        st.set_uint(MetaInfo.RAFT_ID, 10)
        assert st.uint(MetaInfo.RAFT_ID) == 10
        assert st.hard_state() == HardState(term=0, vote=0, commit=0)
        with pytest.raises(ValueError, match="commit 30 is past the last index 0"):
            st.save(hard_state=HardState(term=10, vote=20, commit=30))
        assert st.hard_state() == HardState(term=0, vote=0, commit=0)
        st.save(hard_state=HardState(term=10, vote=20, commit=30), entries=[E(i, 1) for i in range(1, 31)])
        assert st.hard_state() == HardState(term=10, vote=20, commit=30)
        assert st.snapshot() == Snapshot()
        st.save(snapshot=snap(12, 200, b"foo"))
        got = st.snapshot()
        assert (got.data, got.metadata.index, got.metadata.term) == (b"foo", 12, 200)
    raw = (tmp_path / "wal.meta").read_bytes()
    assert len(raw) == 1 << 20
    assert raw[0:8] == (10).to_bytes(8, "big")
    assert raw[512:522] == bytes.fromhex("00000006080a1014181e")
    assert raw[1024:1040] == (12).to_bytes(8, "big") + (200).to_bytes(8, "big")
    assert raw[1040:1060] == bytes.fromhex("00000010") + bytes.fromhex("0a03666f6f12090a022800100c18c801")
    with DiskStorage.open(tmp_path, read_only=True) as ro:
        # Dgraph #9111: a stored commit past the last index (12: the snapshot discarded the log) reads clamped
        assert ro.hard_state() == HardState(term=10, vote=20, commit=12)
        assert any("commit 30" in r for r in ro.repairs)
    assert (tmp_path / "wal.meta").read_bytes()[512:522] == bytes.fromhex("00000006080a1014181e")  # read-only
    with DiskStorage.open(tmp_path) as st:
        assert st.uint(MetaInfo.RAFT_ID) == 10
        assert st.hard_state() == HardState(term=10, vote=20, commit=12)
        assert any("commit 30" in r for r in st.repairs)
        assert st.snapshot().data == b"foo"
        assert st.uint(MetaInfo.SNAPSHOT_INDEX) == 12
        assert st.uint(MetaInfo.SNAPSHOT_TERM) == 200
    # a writable open stores the repair, so it is made once and not reported again
    assert (tmp_path / "wal.meta").read_bytes()[512:522] == bytes.fromhex("00000006080a1014180c")
    with DiskStorage.open(tmp_path) as st:
        assert st.repairs == []


def test_entry_file(tmp_path: Path) -> None:
    """Dgraph's TestEntryFile."""
    with DiskStorage.open(tmp_path) as st:
        assert (st.first_index(), st.last_index()) == (1, 0)
        assert st.term(0) == 0
        with pytest.raises(UnavailableError):
            st.term(2)
        with pytest.raises(UnavailableError):
            st.entries(1, 2)
        st.save(entries=[E(1, 1, b"abc")])
        assert st.entries(1, 2, 10000) == [E(1, 1, b"abc")]
        with pytest.raises(CompactedError):
            st.entries(0, 2)
    assert wal_files(tmp_path) == ["00001.wal"]
    assert (tmp_path / "00001.wal").stat().st_size == LOG_FILE_SIZE


def _truncate_entry(idx: int) -> Entry:
    i = idx - 1
    return E(idx, idx, f"entry {idx}".encode(), EntryType.EntryConfChange if i % 3 == 0 else EntryType.EntryNormal)


def _check_truncated(st: DiskStorage, n: int, until: int) -> None:
    got = st.entries(1, n + 1)
    assert [e.index for e in got] == list(range(1, n + 1))
    for e in got:
        i = e.index - 1
        assert e.term == e.index
        if e.index < until and i % 3 != 0:
            assert not e.HasField("data"), e.index
        else:
            assert e.data == f"entry {e.index}".encode(), e.index


@pytest.mark.parametrize("key", KEYS)
def test_truncate_storage(tmp_path: Path, per_file: pytest.MonkeyPatch, key: bytes | None) -> None:
    """Dgraph's TestTruncateStorage with 300 entries per file (45000/30000 scaled down)."""
    set_per_file(per_file, 300)
    st = DiskStorage.open(tmp_path, key=key)
    for idx in range(1, 451):
        st.save(entries=[_truncate_entry(idx)])
    assert st.num_log_files() == 1
    _check_truncated(st, 450, 0)
    st.truncate_entries_until(225)
    _check_truncated(st, 450, 225)
    assert st.num_entries() == 450
    for idx in range(451, 751):
        st.save(entries=[E(idx, idx, f"entry {idx}".encode())])
    _check_truncated(st, 750, 225)
    st = reopened(st, key)
    _check_truncated(st, 750, 225)
    assert st.num_log_files() == 2
    st.close()


@pytest.mark.parametrize("key", KEYS)
def test_storage_only_snap(tmp_path: Path, key: bytes | None) -> None:
    data = random.Random(1).randbytes(128)
    with DiskStorage.open(tmp_path, key=key) as st:
        st.save(snapshot=snap(1000, 7, data))
        assert st.snapshot().metadata.index == 1000
        assert (st.first_index(), st.last_index()) == (1001, 1000)
        assert st.term(1000) == 7
    with DiskStorage.open(tmp_path, key=key) as st:
        assert st.snapshot().data == data
        assert (st.first_index(), st.last_index()) == (1001, 1000)


def _check_range(st: DiskStorage, a: int, b: int) -> None:
    got = st.entries(a, b)
    assert [e.index for e in got] == list(range(a, b)), (a, b)


@pytest.mark.parametrize("key", KEYS)
def test_storage_big(tmp_path: Path, per_file: pytest.MonkeyPatch, key: bytes | None) -> None:
    """Dgraph's TestStorageBig scaled down 100x: 300 entries per file, N = 1000 (3 full files + current)."""
    set_per_file(per_file, 300)
    n = 1000
    st = DiskStorage.open(tmp_path, key=key)
    for idx in range(1, n + 1):
        st.save(entries=[E(idx, 1)])
        assert st.last_index() == idx
    assert st.num_entries() == n
    assert st.num_log_files() == 3
    with pytest.raises(CompactedError):
        st.entries(0, 1)
    ranges = [(3, n), (100, 200), (200, 330), (330, 450), (450, n), (1, n), (300, n), (301, n), (600, n)]
    ranges += [(601, n), (600, 900), (n, n + 1)]

    def check_all() -> None:
        for a, b in ranges:
            _check_range(st, a, b)
        with pytest.raises(UnavailableError):
            st.entries(n + 1, n + 10)

    check_all()
    # Re-append 333..N one at a time: the first one truncates back into the second file.
    for idx in range(333, n + 1):
        st.save(entries=[E(idx, 1)])
        if idx == 333:
            assert st.last_index() == 333
            # the later files are gone; an encrypted file that was cut gets no new data (no keystream reuse)
            assert st.num_log_files() == (1 if key is None else 2)
    check_all()
    assert st.num_log_files() == (3 if key is None else 4)
    data = random.Random(2).randbytes(128)
    st.create_snapshot(n - 60, ConfState(), data)
    assert st.first_index() == n - 59
    assert (st.snapshot().metadata.index, st.snapshot().data) == (n - 60, data)
    assert st.num_log_files() == 0
    assert len(wal_files(tmp_path)) == 1
    # Dgraph keeps later entries on AddEntries([N-50]); aiowal overwrites from N-50 (etcd's Append).
    st.save(entries=[E(n - 50, 1)])
    want = list(range(n - 59, n - 49))
    assert [e.index for e in st.entries(n - 59, st.last_index() + 1)] == want
    # Dgraph appends [N] leaving a gap; aiowal refuses the gap and writes nothing.
    with pytest.raises(ValueError, match="gap"):
        st.save(entries=[E(n, 1)])
    assert st.last_index() == n - 50
    st.sync()
    st = reopened(st, key)
    assert [e.index for e in st.entries(n - 59, st.last_index() + 1)] == want
    assert st.snapshot().data == data
    st.close()


def test_entry_read_write_encryption(tmp_path: Path) -> None:
    """Dgraph's TestEntryReadWrite: an encrypted entry reads back, with the same key only."""
    rng = random.Random(3)
    data = rng.randbytes(rng.randint(1, 1000))
    with DiskStorage.open(tmp_path, key=KEY) as st:
        st.save(entries=[E(1, 1, data)])
        assert st.entries(1, 2) == [E(1, 1, data)]
    assert data not in (tmp_path / "00001.wal").read_bytes()
    assert (tmp_path / "KEYREGISTRY").exists()
    with DiskStorage.open(tmp_path, key=KEY) as st:
        assert st.entries(1, 2) == [E(1, 1, data)]
    with pytest.raises(EncryptionKeyError, match=r"^Encryption key mismatch$"):
        DiskStorage.open(tmp_path, key=OTHER_KEY)
    with pytest.raises(EncryptionKeyError, match=r"00001\.wal: Logfile is encrypted but encryption key is nil$"):
        DiskStorage.open(tmp_path)
    # a failed open leaves the directory usable
    with DiskStorage.open(tmp_path, key=KEY) as st:
        assert st.entries(1, 2) == [E(1, 1, data)]


@pytest.mark.parametrize("key", KEYS)
def test_log_rotate(tmp_path: Path, per_file: pytest.MonkeyPatch, key: bytes | None) -> None:
    """Dgraph's TestLogRotate scaled down: random data lengths in [0, 65536), one entry per save, rotation by
    count; rotated files are cut to the end of their data."""
    set_per_file(per_file, 50)
    rng = random.Random(4)
    want = [E(i, 1, rng.randbytes(rng.randrange(65536))) for i in range(1, 121)]
    want[10] = E(11, 1)  # a zero-length entry reads back empty
    with DiskStorage.open(tmp_path, key=key) as st:
        for e in want:
            st.save(entries=[e])
    assert wal_files(tmp_path) == ["00001.wal", "00002.wal", "00003.wal"]
    with DiskStorage.open(tmp_path, key=key) as st:
        assert st.entries(1, 121) == want
        assert st.num_log_files() == 2
        assert st.num_entries() == 120
        files = st.log_files()
    for f in files[:2]:
        assert f["apparent_size"] == f["data_end"]
        assert f["entries"] == 50
    assert (tmp_path / "00001.wal").stat().st_size == DATA_START + sum(4 + len(e.data) for e in want[:50])
    assert (tmp_path / "00003.wal").stat().st_size == LOG_FILE_SIZE


@pytest.mark.parametrize("key", KEYS)
def test_log_grow_one_save(tmp_path: Path, per_file: pytest.MonkeyPatch, key: bytes | None) -> None:
    """Dgraph's TestLogGrow scaled down: 5 KiB entries in a single save spanning several files."""
    set_per_file(per_file, 400)
    rng = random.Random(5)
    want = [E(i, 1, rng.randbytes(5 << 10)) for i in range(1, 1001)]
    with DiskStorage.open(tmp_path, key=key) as st:
        st.save(entries=want)
        assert st.num_log_files() == 2
    with DiskStorage.open(tmp_path, key=key) as st:
        assert st.entries(1, 1001) == want


def _big_entries(count: int, size: int, seed: int) -> list[Entry]:
    block = random.Random(seed).randbytes(size)
    return [E(i, 1, i.to_bytes(8, "big") + block[8:]) for i in range(1, count + 1)]


@pytest.mark.parametrize("key", KEYS)
def test_log_grow_past_256_mib(tmp_path: Path, key: bytes | None) -> None:
    """A real growth: 3 MiB entries push the current file past its initial 256 MiB; it doubles (Dgraph's rule)
    and every entry reads back, also after reopening."""
    want = _big_entries(95, 3 << 20, 6)  # about 285 MiB
    with DiskStorage.open(tmp_path, key=key) as st:
        st.save(entries=want[:10])
        early = st.entries(1, 11)  # read before the file is remapped: must be copies, not views of the mapping
        for k in range(10, len(want), 10):
            st.save(entries=want[k : k + 10])
        assert st.num_log_files() == 0
        assert st.entries(1, 96) == want
    assert wal_files(tmp_path) == ["00001.wal"]
    assert (tmp_path / "00001.wal").stat().st_size == 2 * LOG_FILE_SIZE
    assert early == want[:10]
    with DiskStorage.open(tmp_path, key=key) as st:
        got = st.entries(1, 96)
        assert len(got) == len(want)
        assert all(g == w for g, w in zip(got, want, strict=True))
        # entries() honours max_size over big entries too
        assert len(st.entries(1, 96, max_size=(3 << 20) * 2 + 100)) == 2


def test_rotation_by_data_size(tmp_path: Path) -> None:
    """Dgraph's 1 GiB rule: rotate before ``offset + 4 + len`` would pass 1 GiB; the rotated file keeps its exact
    data size."""
    size = 16 << 20
    block = random.Random(7).randbytes(size - 8)

    def entry(i: int) -> Entry:
        return E(i, 1, i.to_bytes(8, "big") + block)

    with DiskStorage.open(tmp_path) as st:
        for i in range(1, 67):  # 66 * 16 MiB = 1056 MiB
            st.save(entries=[entry(i)])
        assert st.num_log_files() == 1
        files = st.log_files()
    per_file = (MAX_DATA_END - DATA_START) // (size + 4)
    assert [f["entries"] for f in files] == [per_file, 66 - per_file]
    assert files[0]["apparent_size"] == DATA_START + per_file * (size + 4) <= MAX_DATA_END
    with DiskStorage.open(tmp_path) as st:
        assert st.entries(per_file - 1, per_file + 2) == [entry(i) for i in range(per_file - 1, per_file + 2)]
        assert st.num_entries() == 66
    for name in wal_files(tmp_path):
        os.unlink(tmp_path / name)  # free the disk space early


# --- save rules (docs/api.md) ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", KEYS)
def test_snapshot_through_save_discards_the_log(
    tmp_path: Path, per_file: pytest.MonkeyPatch, key: bytes | None
) -> None:
    """etcd ApplySnapshot: every log entry goes, whatever its index (Dgraph keeps them)."""
    set_per_file(per_file, 4)
    st = DiskStorage.open(tmp_path, key=key)
    st.save(entries=[E(i, 1 + i // 5, b"d%d" % i) for i in range(1, 15)])
    assert st.num_log_files() == 3
    st.save(snapshot=snap(7, 9, b"snap"))  # a different history: term 9 at index 7
    for reopen in (False, True):
        if reopen:
            st = reopened(st, key)
        assert (st.first_index(), st.last_index()) == (8, 7)
        assert st.term(7) == 9
        with pytest.raises(CompactedError):
            st.term(6)
        with pytest.raises(UnavailableError):
            st.term(8)
        with pytest.raises(UnavailableError):
            st.entries(8, 9)
        assert st.entries(8, 8) == []
        assert st.num_entries() == 0
        assert st.num_log_files() == 0
    assert len(wal_files(tmp_path)) == 1
    st.save(entries=[E(8, 9, b"new")])
    assert all_entries(st) == [E(8, 9, b"new")]
    st = reopened(st, key)
    assert all_entries(st) == [E(8, 9, b"new")]
    st.close()


def test_snapshot_past_the_log(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as st:
        st.save(entries=[E(1, 1), E(2, 1)])
        st.save(snapshot=snap(20, 3))
        assert (st.first_index(), st.last_index(), st.term(20)) == (21, 20, 3)
        with pytest.raises(ValueError, match="gap"):
            st.save(entries=[E(22, 3)])
        st.save(entries=[E(21, 3)])
        assert all_entries(st) == [E(21, 3)]


def test_snapshot_and_entries_in_one_save(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as st:
        st.save(entries=[E(i, 1) for i in range(1, 6)])
        st.save(HardState(term=2, vote=1, commit=8), [E(i, 2) for i in range(4, 10)], snap(6, 2, b"s"))
        assert (st.first_index(), st.last_index()) == (7, 9)
        assert all_entries(st) == [E(7, 2), E(8, 2), E(9, 2)]
        assert st.hard_state() == HardState(term=2, vote=1, commit=8)
    with DiskStorage.open(tmp_path) as st:
        assert all_entries(st) == [E(7, 2), E(8, 2), E(9, 2)]
        assert st.snapshot().data == b"s"


def test_snapshot_sizes_around_meta_growth(tmp_path: Path) -> None:
    """Dgraph bug B2: a snapshot proto within 4 bytes of the room left in wal.meta was cut short. Every size must
    read back, and wal.meta doubles only when the proto and its length prefix do not fit."""
    room = (1 << 20) - 1044
    with DiskStorage.open(tmp_path / "probe") as st:
        st.save(snapshot=snap(1, 1, bytes(1_000_000)))
    overhead = int.from_bytes((tmp_path / "probe" / "wal.meta").read_bytes()[1040:1044], "big") - 1_000_000
    index = 0
    st = DiskStorage.open(tmp_path / "d")
    for delta in (6, 5, 4, 3, 2, 1, 0, -1):
        index += 1
        data = random.Random(delta).randbytes(room - delta - overhead)
        st.save(snapshot=snap(index, 1, data))
        assert st.snapshot().data == data
        raw = (tmp_path / "d" / "wal.meta").read_bytes()
        assert int.from_bytes(raw[1040:1044], "big") == room - delta
        assert len(raw) == (1 << 20 if delta >= 0 else 2 << 20)
        st = reopened(st)
        assert st.snapshot().data == data
    st.save(entries=[E(index + 1, 1)])
    big = random.Random(9).randbytes(3 << 20)
    st.create_snapshot(index + 1, ConfState(voters=[1]), big)
    st.close()
    assert (tmp_path / "d" / "wal.meta").stat().st_size == 4 << 20
    with DiskStorage.open(tmp_path / "d") as st:
        assert st.snapshot().data == big
        assert (st.first_index(), st.last_index()) == (index + 2, index + 1)


def test_entries_at_or_below_snapshot_are_ignored(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as st:
        st.save(entries=[E(i, 1) for i in range(1, 11)])
        st.create_snapshot(5, ConfState(), b"")
        st.save(entries=[E(3, 1), E(4, 1), E(5, 1)])  # all ignored
        assert pairs(all_entries(st)) == [(i, 1) for i in range(6, 11)]
        st.save(entries=[E(i, 2) for i in range(3, 8)])  # 3..5 ignored, overwrite from 6
        assert pairs(all_entries(st)) == [(6, 2), (7, 2)]
        assert st.term(5) == 1
    with DiskStorage.open(tmp_path) as st:
        assert pairs(all_entries(st)) == [(6, 2), (7, 2)]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("at", [1, 3, 6, 7, 11, 13, 17, 18])
def test_overwrite_across_files(tmp_path: Path, per_file: pytest.MonkeyPatch, key: bytes | None, at: int) -> None:
    """An overwrite discards every entry from its index on, in the file that holds it and all later files."""
    set_per_file(per_file, 5)
    st = DiskStorage.open(tmp_path, key=key)
    old = [E(i, 1, b"old %d" % i) for i in range(1, 18)]
    st.save(entries=old)
    assert st.num_log_files() == 3
    new = [E(i, 2, b"new %d" % i) for i in range(at, at + 4)]
    st.save(entries=new)
    want = old[: at - 1] + new
    assert all_entries(st) == want
    assert st.num_entries() == len(want)
    st = reopened(st, key)
    assert all_entries(st) == want
    # and the log keeps growing correctly afterwards
    more = [E(i, 3, b"more %d" % i) for i in range(at + 4, at + 12)]
    st.save(entries=more)
    st = reopened(st, key)
    assert all_entries(st) == want + more
    assert st.first_index() == 1
    st.close()


def _save_refused(st: DiskStorage, d: Path, *args: object, match: str) -> None:
    before = state(st)
    files = tree_digest(d)
    with pytest.raises(ValueError, match=match):
        st.save(*args)  # type: ignore[arg-type]
    assert state(st) == before
    assert tree_digest(d) == files


def test_gap_writes_nothing(tmp_path: Path) -> None:
    st = DiskStorage.open(tmp_path)
    st.save(HardState(term=1, vote=1, commit=1), [E(1, 1, b"a"), E(2, 1, b"b")])
    st.sync()
    _save_refused(st, tmp_path, HardState(term=2, vote=2, commit=4), [E(4, 2), E(5, 2)], match="gap")
    _save_refused(st, tmp_path, None, [E(4, 2)], snap(1, 1, b"s"), match="gap")
    assert pairs(all_entries(st)) == [(1, 1), (2, 1)]
    st.create_snapshot(2, ConfState(), b"s")
    st.sync()
    _save_refused(st, tmp_path, HardState(term=2, vote=2, commit=4), [E(7, 2), E(8, 2)], snap(5, 2), match="gap")
    after = state(st)
    st = reopened(st)
    assert state(st) == after
    # The stored HardState is untouched (commit 1); it is reported at the snapshot index, 2, below which no commit
    # can be (see test_commit_below_the_snapshot_is_reported_at_the_snapshot).
    assert st.hard_state() == HardState(term=1, vote=1, commit=2)
    st.close()


@pytest.mark.parametrize(
    "bad",
    [
        [E(1, 1), E(2, 1), E(4, 1)],
        [E(2, 1), E(1, 1)],
        [E(1, 1), E(1, 1)],
        [E(3, 1), E(4, 1), E(3, 1)],
        [E(0, 1)],
    ],
)
def test_non_contiguous_entries_write_nothing(tmp_path: Path, bad: list[Entry]) -> None:
    st = DiskStorage.open(tmp_path)
    st.save(HardState(term=1, vote=1, commit=1), [E(1, 1, b"a"), E(2, 1, b"b"), E(3, 1)])
    st.sync()
    _save_refused(st, tmp_path, HardState(term=5, vote=5, commit=5), bad, match="contiguous|index 0")
    st = reopened(st)
    assert pairs(all_entries(st)) == [(1, 1), (2, 1), (3, 1)]
    assert st.hard_state() == HardState(term=1, vote=1, commit=1)
    st.close()


def test_hard_state_rules(tmp_path: Path) -> None:
    fs = CountingFS()
    st = DiskStorage.open(tmp_path, hard_sync=True, fs=fs)
    st.save(HardState(term=1, vote=2, commit=0), [E(1, 1), E(2, 1), E(3, 1)])
    assert st.hard_state() == HardState(term=1, vote=2, commit=0)
    # a commit-only change is written but costs no sync by itself
    n = fs.syncs
    st.save(HardState(term=1, vote=2, commit=2))
    assert fs.syncs == n
    assert st.hard_state() == HardState(term=1, vote=2, commit=2)
    # the same HardState again: nothing to do
    st.save(HardState(term=1, vote=2, commit=2))
    assert fs.syncs == n
    # an all-zero HardState (or None) changes nothing
    st.save(HardState())
    st.save(None, [])
    assert st.hard_state() == HardState(term=1, vote=2, commit=2)
    assert fs.syncs == n
    # a term or vote change is synced
    st.save(HardState(term=2, vote=0, commit=3))
    assert fs.syncs > n
    n = fs.syncs
    st.save(entries=[E(4, 2)])
    assert fs.syncs > n
    st.close()
    with DiskStorage.open(tmp_path) as st:
        assert st.hard_state() == HardState(term=2, vote=0, commit=3)
        assert st.initial_state() == (HardState(term=2, vote=0, commit=3), ConfState())


def test_hard_sync_round_trip(tmp_path: Path, per_file: pytest.MonkeyPatch) -> None:
    set_per_file(per_file, 3)
    st = DiskStorage.open(tmp_path, hard_sync=True, key=KEY)
    st.save(HardState(term=1, vote=1, commit=1), [E(i, 1, b"%d" % i) for i in range(1, 11)])
    st.save(HardState(term=2, vote=1, commit=5), [E(i, 2, b"x%d" % i) for i in range(5, 9)])
    st.create_snapshot(4, ConfState(voters=[1]), b"snap")
    st.truncate_entries_until(6)
    st.set_uint(MetaInfo.CHECKPOINT_INDEX, 5)
    st.sync()
    before = state(st)
    st = reopened(st, KEY)
    assert state(st) == before
    assert pairs(all_entries(st)) == [(5, 2), (6, 2), (7, 2), (8, 2)]
    assert [e.data for e in all_entries(st)] == [b"", b"x6", b"x7", b"x8"]
    st.close()


# --- round trips -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", KEYS)
def test_close_reopen_round_trip(tmp_path: Path, per_file: pytest.MonkeyPatch, key: bytes | None) -> None:
    set_per_file(per_file, 6)
    rng = random.Random(8)
    st = DiskStorage.open(tmp_path, key=key)
    st.set_uint(MetaInfo.RAFT_ID, 3)
    st.set_uint(MetaInfo.GROUP_ID, 1)
    ents = [E(i, 1 + i // 7, rng.randbytes(rng.randrange(300)), rng.choice([0, 0, 1, 2])) for i in range(1, 30)]
    st.save(HardState(term=5, vote=3, commit=20), ents)
    st.create_snapshot(9, ConfState(voters=[1, 2, 3], learners=[4], auto_leave=True), b"snapshot data")
    st.save(entries=[E(25, 6, b"over")])
    st.set_uint(MetaInfo.CHECKPOINT_INDEX, 15)
    before = state(st)
    st = reopened(st, key)
    assert state(st) == before
    st.close()
    with DiskStorage.open(tmp_path, key=key) as st:
        assert state(st) == before
        assert all_entries(st) == [*ents[9:24], E(25, 6, b"over")]
        assert st.snapshot().metadata.conf_state == ConfState(voters=[1, 2, 3], learners=[4], auto_leave=True)
        assert st.checkpoint() == 15


@pytest.mark.parametrize("overwrite_at", [3, 8, 14])
def test_encrypted_rotation_and_overwrite(tmp_path: Path, per_file: pytest.MonkeyPatch, overwrite_at: int) -> None:
    """Overwrites in encrypted mode (into a rotated file or the current one) read back right after reopen; no
    plaintext reaches the disk."""
    set_per_file(per_file, 5)
    marker = b"PLAINTEXT-MARKER"
    st = DiskStorage.open(tmp_path, key=KEY)
    old = [E(i, 1, marker + b" old %d" % i) for i in range(1, 15)]
    for k in range(0, len(old), 3):
        st.save(entries=old[k : k + 3])
    new = [E(i, 2, marker + b" new %d" % i) for i in range(overwrite_at, overwrite_at + 6)]
    st.save(entries=new[:2])
    st.save(entries=new[2:])
    want = old[: overwrite_at - 1] + new
    assert all_entries(st) == want
    st = reopened(st, KEY)
    assert all_entries(st) == want
    st.save(entries=[E(want[-1].index + 1, 3, marker + b" after")])
    want.append(E(want[-1].index + 1, 3, marker + b" after"))
    st = reopened(st, KEY)
    assert all_entries(st) == want
    st.close()
    for name in wal_files(tmp_path):
        assert marker not in (tmp_path / name).read_bytes()[DATA_START:]
    with pytest.raises(EncryptionKeyError):
        DiskStorage.open(tmp_path)


@pytest.mark.parametrize("key", KEYS)
def test_truncate_entries_until_then_reopen(tmp_path: Path, per_file: pytest.MonkeyPatch, key: bytes | None) -> None:
    set_per_file(per_file, 4)
    types = [EntryType.EntryNormal, EntryType.EntryConfChange, EntryType.EntryConfChangeV2]
    ents = [E(i, 1, b"data %d" % i, types[i % 3]) for i in range(1, 20)]
    st = DiskStorage.open(tmp_path, key=key)
    st.save(entries=ents)
    st.truncate_entries_until(11)

    def want(upto: int) -> list[Entry]:
        return [E(e.index, e.term, b"" if (e.index < upto and e.type == 0) else e.data, e.type) for e in ents]

    assert all_entries(st) == want(11)
    st = reopened(st, key)
    assert all_entries(st) == want(11)
    st.truncate_entries_until(16)
    st.truncate_entries_until(2)  # lower than before: nothing more to do
    st = reopened(st, key)
    assert all_entries(st) == want(16)
    assert st.num_entries() == 19
    # appending after a truncation that reached the last entry still works
    st.truncate_entries_until(100)
    st.save(entries=[E(20, 1, b"twenty")])
    st = reopened(st, key)
    assert all_entries(st) == [*want(100), E(20, 1, b"twenty")]
    st.close()


def test_uints_and_checkpoint(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as st:
        assert [st.uint(i) for i in MetaInfo] == [0, 0, 0, 0, 0]
        st.set_uint(MetaInfo.RAFT_ID, 7)
        st.set_uint(MetaInfo.GROUP_ID, (1 << 64) - 1)
        st.set_uint(MetaInfo.CHECKPOINT_INDEX, 42)
        assert st.checkpoint() == 42
        assert st.uint(2) == 42  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            st.set_uint(MetaInfo.RAFT_ID, 1 << 64)
        with pytest.raises(ValueError):
            st.set_uint(MetaInfo.RAFT_ID, -1)
        with pytest.raises(ValueError):
            st.set_uint(MetaInfo.SNAPSHOT_INDEX, 5)
        with pytest.raises(ValueError):
            st.uint(5)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            st.uint("RAFT_ID")  # type: ignore[arg-type]
        st.save(entries=[E(1, 1), E(2, 3)])
        st.create_snapshot(2, ConfState(), b"")
        assert (st.uint(MetaInfo.SNAPSHOT_INDEX), st.uint(MetaInfo.SNAPSHOT_TERM)) == (2, 3)
        assert st.uint(MetaInfo.RAFT_ID) == 7
    raw = (tmp_path / "wal.meta").read_bytes()
    assert raw[0:24] == (7).to_bytes(8, "big") + b"\xff" * 8 + (42).to_bytes(8, "big")
    assert raw[1024:1040] == (2).to_bytes(8, "big") + (3).to_bytes(8, "big")
    with DiskStorage.open(tmp_path) as st:
        assert [st.uint(i) for i in MetaInfo] == [7, (1 << 64) - 1, 42, 2, 3]
        assert st.checkpoint() == 42


def test_num_entries_and_num_log_files(tmp_path: Path, per_file: pytest.MonkeyPatch) -> None:
    set_per_file(per_file, 5)
    with DiskStorage.open(tmp_path) as st:
        assert (st.num_entries(), st.num_log_files()) == (0, 0)
        st.save(entries=[E(i, 1) for i in range(1, 13)])
        # files 1-5, 6-10 and the current 11-12: num_log_files does not count the current file
        assert (st.num_entries(), st.num_log_files()) == (12, 2)
        st.save(entries=[E(i, 1) for i in range(13, 16)])
        assert (st.num_entries(), st.num_log_files()) == (15, 2)
        st.save(entries=[E(16, 1)])  # rotation happens when the next entry comes
        assert (st.num_entries(), st.num_log_files()) == (16, 3)
        # a snapshot deletes only the files wholly below the one that holds it; entries below the snapshot
        # in that file are still physically present and counted
        st.create_snapshot(8, ConfState(), b"")
        assert (st.num_entries(), st.num_log_files()) == (11, 2)
        assert st.first_index() == 9
        st.create_snapshot(11, ConfState(), b"")
        assert (st.num_entries(), st.num_log_files()) == (6, 1)
        st.save(entries=[E(7 + 5, 2)])  # overwrite from 12: the last file goes
        assert (st.num_entries(), st.num_log_files(), st.last_index()) == (2, 0, 12)
    with DiskStorage.open(tmp_path) as st:
        assert (st.num_entries(), st.num_log_files()) == (2, 0)
        st.save(snapshot=snap(20, 2))
        assert (st.num_entries(), st.num_log_files()) == (0, 0)


# --- locking, close, read-only ---------------------------------------------------------------------------------------
_HOLDER = textwrap.dedent(
    """
    import sys
    from aiowal import DiskStorage, StorageLockedError
    try:
        st = DiskStorage.open(sys.argv[1])
    except StorageLockedError:
        print("locked", flush=True)
        sys.exit(3)
    print("open", flush=True)
    sys.stdin.readline()
    st.close()
    """
)


def test_second_opener_same_process(tmp_path: Path) -> None:
    st = DiskStorage.open(tmp_path)
    with pytest.raises(StorageLockedError):
        DiskStorage.open(tmp_path)
    with pytest.raises(StorageLockedError):
        DiskStorage.open(tmp_path, key=KEY, hard_sync=True)
    # the refused opener changed nothing and the first still works
    st.save(entries=[E(1, 1, b"a")])
    st.close()
    with DiskStorage.open(tmp_path) as st:
        assert all_entries(st) == [E(1, 1, b"a")]


def test_second_opener_other_process(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as st:
        st.save(entries=[E(1, 1)])
        child = subprocess.run(
            [sys.executable, "-c", _HOLDER, str(tmp_path)], input="\n", capture_output=True, text=True, timeout=60
        )
        assert (child.returncode, child.stdout.strip()) == (3, "locked"), child.stderr
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StorageLockedError):
            DiskStorage.open(tmp_path)
        # read-only inspection takes no lock
        with DiskStorage.open(tmp_path, read_only=True) as ro:
            assert ro.last_index() == 1
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    with DiskStorage.open(tmp_path) as st:  # released when the holder closed
        assert st.last_index() == 1


def test_closed_storage_refuses_everything(tmp_path: Path) -> None:
    st = DiskStorage.open(tmp_path)
    st.save(entries=[E(1, 1)])
    st.close()
    st.close()  # idempotent
    assert st.closed
    calls = [
        lambda: st.initial_state(),
        lambda: st.hard_state(),
        lambda: st.entries(1, 2),
        lambda: st.term(1),
        lambda: st.first_index(),
        lambda: st.last_index(),
        lambda: st.snapshot(),
        lambda: st.save(entries=[E(2, 1)]),
        lambda: st.save(HardState(term=1)),
        lambda: st.create_snapshot(1, ConfState(), b""),
        lambda: st.truncate_entries_until(1),
        lambda: st.checkpoint(),
        lambda: st.set_uint(MetaInfo.RAFT_ID, 1),
        lambda: st.uint(MetaInfo.RAFT_ID),
        lambda: st.num_entries(),
        lambda: st.num_log_files(),
        lambda: st.sync(),
    ]
    for call in calls:
        with pytest.raises(StorageClosedError):
            call()
    with DiskStorage.open(tmp_path) as st2:
        assert st2.last_index() == 1
    assert st2.closed
    with pytest.raises(StorageClosedError):
        st2.last_index()


@pytest.mark.parametrize("key", KEYS)
def test_read_only(tmp_path: Path, per_file: pytest.MonkeyPatch, key: bytes | None) -> None:
    set_per_file(per_file, 4)
    with DiskStorage.open(tmp_path, key=key) as st:
        st.save(HardState(term=1, vote=1, commit=3), [E(i, 1, b"%d" % i) for i in range(1, 11)])
        st.create_snapshot(3, ConfState(voters=[1]), b"snap")
        want = state(st)
    digest = tree_digest(tmp_path)
    writer = DiskStorage.open(tmp_path, key=key)  # holds the lock; a read-only opener does not need it
    ro = DiskStorage.open(tmp_path, key=key, read_only=True)
    writer.close()
    assert tree_digest(tmp_path) == digest
    assert ro.read_only
    assert state(ro) == want
    writes = [
        lambda: ro.save(entries=[E(11, 1)]),
        lambda: ro.save(HardState(term=2, vote=1, commit=3)),
        lambda: ro.save(snapshot=snap(20, 2)),
        lambda: ro.create_snapshot(5, ConfState(), b""),
        lambda: ro.truncate_entries_until(8),
        lambda: ro.set_uint(MetaInfo.RAFT_ID, 9),
        lambda: ro.sync(),
    ]
    for w in writes:
        with pytest.raises(StorageError):
            w()
    assert state(ro) == want
    ro.close()
    assert tree_digest(tmp_path) == digest
    # no lock was taken: a writer may open while a reader is open
    with DiskStorage.open(tmp_path, key=key, read_only=True) as ro, DiskStorage.open(tmp_path, key=key) as st:
        assert ro.last_index() == st.last_index() == 10


def test_read_only_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        DiskStorage.open(tmp_path / "nope", read_only=True)
    assert not (tmp_path / "nope").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageError):
        DiskStorage.open(tmp_path / "empty", read_only=True)
    assert list((tmp_path / "empty").iterdir()) == []


def test_open_creates_directory(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b"
    with DiskStorage.open(d) as st:
        assert (st.first_index(), st.last_index()) == (1, 0)
        assert st.snapshot() == Snapshot()
        assert st.initial_state() == (HardState(term=0, vote=0, commit=0), ConfState())
    assert sorted(p.name for p in d.iterdir()) == ["00001.wal", "wal.meta"]
    assert (d / "wal.meta").stat().st_size == 1 << 20


def test_commit_below_the_snapshot_is_reported_at_the_snapshot(tmp_path: Path) -> None:
    """A kill between a save's snapshot switch of wal.meta and its HardState leaves a stored commit below the
    snapshot index (the soak of the Raft cluster hit it). A snapshot holds only committed entries: the commit is
    reported at the snapshot index, and a Raft node starts from the directory."""
    with DiskStorage.open(tmp_path, hard_sync=True) as st:
        st.save(HardState(term=2, vote=1, commit=3), [E(i, 2, b"x") for i in range(1, 9)])
        # The snapshot half of a save whose HardState (commit 8) never reached wal.meta.
        st.save(snapshot=snap(8, 2, b"state"))
    with DiskStorage.open(tmp_path) as st:
        assert st.hard_state() == HardState(term=2, vote=1, commit=8)
        assert st.initial_state()[0].commit == 8
        assert st.repairs == []  # a reading rule, not a repair: wal.meta is not changed
        rn = RawNode(Config(id=1, storage=st, voters=(1,), rng=random.Random(1)))
        assert rn.raft.raft_log.committed == 8
