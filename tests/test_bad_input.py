"""Bad input: wrong keys, truncated and garbled files, a missing or short wal.meta, a second opener, use after
close, and misused arguments. Every case ends in a clear aiowal error (or a logged repair of a torn tail), never
in another exception, a crash or lost acknowledged data."""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from aiowal import (
    CorruptionError,
    DiskStorage,
    EncryptionKeyError,
    MetaInfo,
    StorageClosedError,
    StorageError,
    StorageLockedError,
)
from aiowal.format import DATA_START, SLOT_SIZE
from aiowal.logfile import LogFile
from aiowal.raftpb import ConfState, Entry, HardState, Snapshot, SnapshotMetadata

KEY = b"badger16byteskey"
KEYS = [pytest.param(None, id="plain"), pytest.param(KEY, id="encrypted")]
PER_FILE = 5


def E(index: int, term: int, data: bytes = b"", etype: int = 0) -> Entry:
    e = Entry(term=term, index=index, type=etype)
    if data:
        e.data = data
    return e


def all_entries(st: DiskStorage) -> list[Entry]:
    return st.entries(st.first_index(), st.last_index() + 1)


def file_digest(p: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return p.stat().st_size, h.hexdigest()


@pytest.fixture
def small_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LogFile, "max_entries", PER_FILE)


def build(d: Path, key: bytes | None, n: int = 12, seed: int = 0) -> list[Entry]:
    """A directory with log files 1-5, 6-10 and a current file 11-12 (with PER_FILE = 5)."""
    rng = random.Random(seed)
    ents = [E(i, 1 + i // 4, rng.randbytes(rng.choice([0, 1, 50, 700, 3000])), i % 2) for i in range(1, n + 1)]
    with DiskStorage.open(d, key=key) as st:
        st.set_uint(MetaInfo.RAFT_ID, 1)
        for k in range(0, n, 3):
            st.save(HardState(term=ents[k].term, vote=1, commit=ents[k].index), ents[k : k + 3])
    return ents


def slot_count(path: Path) -> int:
    raw = path.read_bytes()[: 30000 * SLOT_SIZE]
    n = 0
    while raw[n * SLOT_SIZE + 8 : n * SLOT_SIZE + 16] != bytes(8):
        n += 1
    return n


def data_end(path: Path, count: int) -> int:
    raw = path.read_bytes()
    s = (count - 1) * SLOT_SIZE
    off = int.from_bytes(raw[s + 16 : s + 24], "big")
    return off + 4 + int.from_bytes(raw[off : off + 4], "big")


def open_outcome(d: Path, key: bytes | None, read_only: bool = False) -> DiskStorage | CorruptionError:
    """Open ``d``: a storage, or the CorruptionError it raised. Any other exception fails the test."""
    try:
        return DiskStorage.open(d, key=key, read_only=read_only)
    except CorruptionError as exc:
        return exc


# --- keys -----------------------------------------------------------------------------------------------------------
def test_wrong_and_missing_key(tmp_path: Path) -> None:
    ents = build(tmp_path, KEY)
    before = {p.name: file_digest(p) for p in tmp_path.iterdir()}
    with pytest.raises(EncryptionKeyError, match="Encryption key mismatch"):
        DiskStorage.open(tmp_path, key=b"other16byteskeys")
    with pytest.raises(EncryptionKeyError, match="Encryption key mismatch"):
        DiskStorage.open(tmp_path, key=b"x" * 32)
    for no_key in (None, b""):
        with pytest.raises(EncryptionKeyError, match="encryption key is nil"):
            DiskStorage.open(tmp_path, key=no_key)
        with pytest.raises(EncryptionKeyError, match="encryption key is nil"):
            DiskStorage.open(tmp_path, key=no_key, read_only=True)
    # the refused opens changed nothing and released the lock
    assert {p.name: file_digest(p) for p in tmp_path.iterdir()} == before
    with DiskStorage.open(tmp_path, key=KEY) as st:
        assert all_entries(st) == ents


@pytest.mark.parametrize("bad", [b"short", b"x" * 15, b"x" * 17, b"x" * 31, b"x" * 33, b"x" * 64])
def test_key_of_bad_length(tmp_path: Path, bad: bytes) -> None:
    with pytest.raises(EncryptionKeyError, match="16, 24, or 32 bytes"):
        DiskStorage.open(tmp_path / "new", key=bad)
    assert not (tmp_path / "new").exists()
    build(tmp_path / "old", KEY)
    with pytest.raises(EncryptionKeyError):
        DiskStorage.open(tmp_path / "old", key=bad)


def test_key_of_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        DiskStorage.open(tmp_path, key="badger16byteskey")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("size", [16, 24, 32])
def test_key_sizes_round_trip(tmp_path: Path, size: int, small_files: None) -> None:
    key = bytes(range(size))
    ents = build(tmp_path, key)
    with DiskStorage.open(tmp_path, key=key) as st:
        assert all_entries(st) == ents
    with pytest.raises(EncryptionKeyError):
        DiskStorage.open(tmp_path, key=bytes(range(1, size + 1)))


def test_key_registry_missing_or_short(tmp_path: Path) -> None:
    build(tmp_path, KEY)
    reg = tmp_path / "KEYREGISTRY"
    saved = reg.read_bytes()
    reg.unlink()
    with pytest.raises(CorruptionError, match=r"KEYREGISTRY: missing, but .*00001\.wal is encrypted with data key"):
        DiskStorage.open(tmp_path, key=KEY)
    assert not reg.exists()
    reg.write_bytes(saved[:20])
    with pytest.raises(CorruptionError, match="KEYREGISTRY"):
        DiskStorage.open(tmp_path, key=KEY)
    reg.write_bytes(saved)
    with DiskStorage.open(tmp_path, key=KEY) as st:
        assert st.last_index() == 12


# --- truncated log files ----------------------------------------------------------------------------------------------
def _cut_points(rng: random.Random, end: int, count: int) -> list[int]:
    points = {0, 1, 4096, DATA_START - 17, DATA_START - 1, DATA_START, DATA_START + 1, DATA_START + 4, end - 1, end}
    points |= {end + 1, end + 4096}
    points |= {rng.randrange(DATA_START, end + 1) for _ in range(count)}
    points |= {rng.randrange(0, DATA_START) for _ in range(3)}
    return sorted(points)


@pytest.mark.parametrize("key", KEYS)
def test_truncated_current_file(tmp_path: Path, small_files: None, key: bytes | None) -> None:
    """Every entry of a closed directory was synced: cutting the current file anywhere before the end of its data
    loses acknowledged entries, so opening (read-only or not) raises CorruptionError naming the file and an offset
    and changes nothing; a cut past the data end loses nothing, and the directory then takes new entries."""
    rng = random.Random(10)
    probe = tmp_path / "probe"
    ents = build(probe, key)
    cur = probe / "00003.wal"
    end = data_end(cur, slot_count(cur))
    outcomes = {"ok": 0, "corrupt": 0}
    for k, cut in enumerate(_cut_points(rng, end, 24)):
        d = tmp_path / f"t{k}"
        assert build(d, key) == ents
        with open(d / "00003.wal", "r+b") as fh:
            fh.truncate(cut)
        before = {p.name: file_digest(p) for p in d.iterdir()}
        ro = open_outcome(d, key, read_only=True)
        st = open_outcome(d, key)
        assert {p.name: file_digest(p) for p in d.iterdir()} == before or not isinstance(st, CorruptionError)
        if isinstance(st, CorruptionError):
            assert isinstance(ro, CorruptionError)
            assert "00003.wal" in str(st) and "offset" in str(st) and "made durable" in str(st)
            assert cut < end
            outcomes["corrupt"] += 1
            shutil.rmtree(d)
            continue
        assert isinstance(ro, DiskStorage)
        assert all_entries(st) == all_entries(ro) == ents
        ro.close()
        assert cut >= end
        outcomes["ok"] += 1
        nxt = E(13, 9, b"after the cut")
        st.save(entries=[nxt])
        st.close()
        with DiskStorage.open(d, key=key) as st:
            assert all_entries(st) == [*ents, nxt]
            assert st.repairs == []
        shutil.rmtree(d)
    assert outcomes["ok"] and outcomes["corrupt"]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("name", ["00001.wal", "00002.wal"])
def test_truncated_older_file(tmp_path: Path, small_files: None, key: bytes | None, name: str) -> None:
    """An older (rotated) file holds acknowledged entries: any cut is CorruptionError naming it."""
    rng = random.Random(11)
    probe = tmp_path / "probe"
    build(probe, key)
    size = (probe / name).stat().st_size
    points = _cut_points(rng, size, 12)
    for k, cut in enumerate(p for p in points if p < size):
        d = tmp_path / f"t{k}"
        build(d, key)
        with open(d / name, "r+b") as fh:
            fh.truncate(cut)
        for read_only in (True, False):
            with pytest.raises(CorruptionError, match=name) as info:
                DiskStorage.open(d, key=key, read_only=read_only)
            assert "offset" in str(info.value)
        shutil.rmtree(d)


# --- garbage in slots and records ---------------------------------------------------------------------------------
@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("slot", [0, 1, 2, 3])
def test_garbage_slot_in_current_file(tmp_path: Path, small_files: None, key: bytes | None, slot: int) -> None:
    """Garbage at slot ``slot`` of the current file (it holds 11, 12, both synced): over a used slot it is damage
    to acknowledged entries (CorruptionError naming the file and offset, nothing changed); past them it is a
    tail no sync covered, which open cuts and logs in ``repairs``."""
    ents = build(tmp_path, key)
    rng = random.Random(slot)
    with open(tmp_path / "00003.wal", "r+b") as fh:
        fh.seek(slot * SLOT_SIZE)
        fh.write(rng.randbytes(SLOT_SIZE))
    before = file_digest(tmp_path / "00003.wal")
    if slot < 2:
        for read_only in (True, False):
            with pytest.raises(CorruptionError, match=r"00003\.wal: offset \d+: .*made durable"):
                DiskStorage.open(tmp_path, key=key, read_only=read_only)
        assert file_digest(tmp_path / "00003.wal") == before
        return
    with DiskStorage.open(tmp_path, key=key, read_only=True) as ro:
        assert all_entries(ro) == ents
        assert ro.repairs
    assert file_digest(tmp_path / "00003.wal") == before
    with DiskStorage.open(tmp_path, key=key) as st:
        assert all_entries(st) == ents
        assert any(f"00003.wal: offset {slot * SLOT_SIZE}" in r for r in st.repairs)
        st.save(entries=[E(13, 9, b"new")])
    with DiskStorage.open(tmp_path, key=key) as st:
        assert all_entries(st) == [*ents, E(13, 9, b"new")]
        assert st.repairs == []


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("slot", [0, 2, 4, 5, 100, 29999])
def test_garbage_slot_in_older_file(tmp_path: Path, small_files: None, key: bytes | None, slot: int) -> None:
    build(tmp_path, key)
    with open(tmp_path / "00002.wal", "r+b") as fh:
        fh.seek(slot * SLOT_SIZE)
        fh.write(random.Random(slot).randbytes(SLOT_SIZE))
    before = file_digest(tmp_path / "00002.wal")
    for read_only in (True, False):
        with pytest.raises(CorruptionError, match=r"00002\.wal") as info:
            DiskStorage.open(tmp_path, key=key, read_only=read_only)
        if slot:
            assert f"00002.wal: offset {slot * SLOT_SIZE}: slot {slot}" in str(info.value)
        else:  # slot 0 decides where the file sorts: the gap it leaves is reported, naming the file
            assert re.search(r"\.wal: offset 0: first entry 11 leaves a gap .*00002\.wal", str(info.value))
    assert file_digest(tmp_path / "00002.wal") == before


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("name", ["00002.wal", "00003.wal"])
def test_zeroed_index_of_slot_0_before_used_slots(
    tmp_path: Path, small_files: None, key: bytes | None, name: str
) -> None:
    """Found by the corruption fuzz: slot 0's index set to 0 while the slots after it stay used. The search for the
    first empty slot (a bisection, as Dgraph's) stepped over the hole, the file counted 0 as its first index and
    sorted before the others, and a read-only open then answered reads of acknowledged entries with "a gap in the
    log". It is damage to acknowledged entries: CorruptionError naming the file, nothing changed."""
    build(tmp_path, key)
    with open(tmp_path / name, "r+b") as fh:
        fh.seek(8)
        fh.write(bytes(8))
    before = file_digest(tmp_path / name)
    for read_only in (True, False):
        with pytest.raises(CorruptionError, match="entries up to 12 were made durable") as info:
            DiskStorage.open(tmp_path, key=key, read_only=read_only)
        assert re.search(rf"holding no entries: \S*{re.escape(name)}", str(info.value))
        if name == "00003.wal":  # the newest file: what is wrong with it is said first
            assert str(info.value).startswith(f"{tmp_path / name}: offset {SLOT_SIZE}: slot 1 is not empty after")
    assert file_digest(tmp_path / name) == before


@pytest.mark.parametrize("key", KEYS)
def test_index_of_an_older_files_last_slot_raised_past_a_gap(
    tmp_path: Path, small_files: None, key: bytes | None
) -> None:
    """Found by the corruption fuzz: a damaged index that still increases (the last slot of 00002.wal, 10, read as
    65546) opens a gap inside the file above the snapshot, and made the next file (11, 12) look like a torn tail
    after entry 65546, past the durable mark: a writable open cut the acknowledged entries 11 and 12. A gap above
    the snapshot is damage: CorruptionError naming the slot, nothing cut."""
    build(tmp_path, key)
    with open(tmp_path / "00002.wal", "r+b") as fh:
        fh.seek(4 * SLOT_SIZE + 8)
        fh.write((10 + (1 << 16)).to_bytes(8, "big"))
    before = {p.name: file_digest(p) for p in tmp_path.iterdir()}
    for read_only in (True, False):
        with pytest.raises(CorruptionError, match=rf"00002\.wal: offset {4 * SLOT_SIZE}: slot 4 \(index 65546\)"):
            DiskStorage.open(tmp_path, key=key, read_only=read_only)
    assert {p.name: file_digest(p) for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("which", [0, 1])
def test_flipped_data_byte_in_current_file(tmp_path: Path, small_files: None, key: bytes | None, which: int) -> None:
    """A synced record whose bytes no longer match its slot's CRC is damage to an acknowledged entry:
    CorruptionError naming the file and the slot's offset, and nothing is cut (not a torn tail to repair)."""
    ents = build(tmp_path, key, seed=3)
    assert ents[10].data and ents[11].data
    cur = tmp_path / "00003.wal"
    raw = cur.read_bytes()[: 2 * SLOT_SIZE]
    off = int.from_bytes(raw[which * SLOT_SIZE + 16 : which * SLOT_SIZE + 24], "big")
    with open(cur, "r+b") as fh:
        fh.seek(off + 4)
        b = fh.read(1)
        fh.seek(off + 4)
        fh.write(bytes([b[0] ^ 0x40]))
    before = file_digest(cur)
    for read_only in (True, False):
        with pytest.raises(CorruptionError, match=rf"00003\.wal: offset {which * SLOT_SIZE}: .*checksum"):
            DiskStorage.open(tmp_path, key=key, read_only=read_only)
    assert file_digest(cur) == before


def test_overlapping_log_files(tmp_path: Path, small_files: None) -> None:
    build(tmp_path, None)
    shutil.copyfile(tmp_path / "00001.wal", tmp_path / "00007.wal")
    for read_only in (True, False):
        with pytest.raises(CorruptionError, match=r"\.wal: offset"):
            DiskStorage.open(tmp_path, read_only=read_only)


def test_stray_files_are_ignored(tmp_path: Path, small_files: None) -> None:
    ents = build(tmp_path, None)
    (tmp_path / "7.wal").write_bytes(b"junk")
    (tmp_path / "abc.wal").write_bytes(b"junk")
    (tmp_path / "notes.txt").write_bytes(b"junk")
    (tmp_path / "00042.wal").mkdir()
    with DiskStorage.open(tmp_path) as st:
        assert all_entries(st) == ents
        assert st.num_log_files() == 2
    assert (tmp_path / "7.wal").read_bytes() == b"junk"


def test_empty_newest_log_file(tmp_path: Path, small_files: None) -> None:
    """A crash right after a rotation created the next file: it opens as the (empty) current file."""
    ents = build(tmp_path, None)
    (tmp_path / "00004.wal").write_bytes(b"")
    with DiskStorage.open(tmp_path) as st:
        assert all_entries(st) == ents
        st.save(entries=[E(13, 9, b"thirteen")])
    with DiskStorage.open(tmp_path) as st:
        assert all_entries(st) == [*ents, E(13, 9, b"thirteen")]


# --- wal.meta -------------------------------------------------------------------------------------------------------
def test_missing_meta_beside_log_files(tmp_path: Path, small_files: None) -> None:
    build(tmp_path, None)
    (tmp_path / "wal.meta").unlink()
    names = sorted(p.name for p in tmp_path.iterdir())
    for read_only in (True, False):
        with pytest.raises(CorruptionError, match=r"wal\.meta"):
            DiskStorage.open(tmp_path, read_only=read_only)
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # nothing created
    (tmp_path / "wal.meta").write_bytes(b"")
    with pytest.raises(CorruptionError, match=r"wal\.meta"):
        DiskStorage.open(tmp_path)


@pytest.mark.parametrize("size", [1, 8, 100, 511, 512, 520, 1023, 1040, 1043])
def test_short_meta(tmp_path: Path, size: int) -> None:
    build(tmp_path, None)
    with open(tmp_path / "wal.meta", "r+b") as fh:
        fh.truncate(size)
    for read_only in (True, False):
        with pytest.raises(CorruptionError, match=r"wal\.meta: offset"):
            DiskStorage.open(tmp_path, read_only=read_only)


def test_meta_cut_inside_snapshot(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as st:
        st.save(entries=[E(i, 1) for i in range(1, 5)])
        st.create_snapshot(3, ConfState(voters=[1, 2]), b"s" * 300)
    saved = (tmp_path / "wal.meta").read_bytes()
    end = 1044 + int.from_bytes(saved[1040:1044], "big")
    for cut in (1044, 1050, end - 1, end, end + 1, 1 << 19):
        (tmp_path / "wal.meta").write_bytes(saved[:cut])
        if cut < end:
            with pytest.raises(CorruptionError, match=r"wal\.meta: offset 1040"):
                DiskStorage.open(tmp_path)
        else:
            with DiskStorage.open(tmp_path) as st:
                assert st.snapshot().data == b"s" * 300
                assert (st.first_index(), st.last_index()) == (4, 4)


@pytest.mark.parametrize(
    ("offset", "raw", "match"),
    [
        (512, (600).to_bytes(4, "big"), "offset 512"),
        (512, (5).to_bytes(4, "big") + b"\xff" * 5, "cannot parse hardState"),
        (1040, (1 << 31).to_bytes(4, "big"), "offset 1040"),
        (1040, (6).to_bytes(4, "big") + b"\xff" * 6, "cannot parse snapshot"),
    ],
)
def test_garbage_meta_fields(tmp_path: Path, offset: int, raw: bytes, match: str) -> None:
    build(tmp_path, None)
    with open(tmp_path / "wal.meta", "r+b") as fh:
        fh.seek(offset)
        fh.write(raw)
    for read_only in (True, False):
        with pytest.raises(CorruptionError, match=match):
            DiskStorage.open(tmp_path, read_only=read_only)


def test_leftover_meta_rewrite_is_discarded(tmp_path: Path) -> None:
    ents = build(tmp_path, None)
    (tmp_path / "wal.meta.tmp").write_bytes(b"half a snapshot rewrite")
    with DiskStorage.open(tmp_path, read_only=True) as ro:
        assert all_entries(ro) == ents
    assert (tmp_path / "wal.meta.tmp").exists()  # read-only changes nothing
    with DiskStorage.open(tmp_path) as st:
        assert all_entries(st) == ents
        assert st.hard_state().commit == 10
    assert not (tmp_path / "wal.meta.tmp").exists()


# --- misuse ---------------------------------------------------------------------------------------------------------
def test_second_opener(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as st:
        for key in (None, KEY):
            with pytest.raises(StorageLockedError):
                DiskStorage.open(tmp_path, key=key)
        st.save(entries=[E(1, 1)])
    with DiskStorage.open(tmp_path) as st:
        assert st.last_index() == 1


def test_use_after_close(tmp_path: Path) -> None:
    st = DiskStorage.open(tmp_path)
    st.close()
    for call in (
        st.first_index,
        st.snapshot,
        st.sync,
        lambda: st.save(entries=[E(1, 1)]),
        lambda: st.entries(1, 1),
        lambda: st.set_uint(MetaInfo.RAFT_ID, 1),
    ):
        with pytest.raises(StorageClosedError):
            call()
    with DiskStorage.open(tmp_path) as st:
        assert st.last_index() == 0


def _ready(tmp_path: Path) -> DiskStorage:
    st = DiskStorage.open(tmp_path)
    st.save(HardState(term=1, vote=1, commit=2), [E(1, 1, b"a"), E(2, 1, b"b"), E(3, 1, b"c")])
    st.sync()
    return st


def _unchanged(st: DiskStorage) -> None:
    assert all_entries(st) == [E(1, 1, b"a"), E(2, 1, b"b"), E(3, 1, b"c")]
    assert st.hard_state() == HardState(term=1, vote=1, commit=2)
    assert st.snapshot() == Snapshot()
    assert [st.uint(i) for i in MetaInfo] == [0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    "bad",
    [
        [E(4, 1), E(6, 1)],
        [E(4, 1), E(5, 1), E(5, 1)],
        [E(4, 1), E(3, 1)],
        [E(2, 1), E(4, 1)],
        [E(0, 1), E(1, 1)],
    ],
)
def test_non_contiguous(tmp_path: Path, bad: list[Entry]) -> None:
    st = _ready(tmp_path)
    with pytest.raises(ValueError):
        st.save(HardState(term=2, vote=2, commit=3), bad)
    _unchanged(st)
    st.close()
    with DiskStorage.open(tmp_path) as st:
        _unchanged(st)


def _type_errors(st: DiskStorage) -> list[Callable[[], object]]:
    x: object = "1"
    return [
        lambda: st.save(hard_state=x),  # type: ignore[arg-type]
        lambda: st.save(entries=[x]),  # type: ignore[list-item]
        lambda: st.save(entries=[E(4, 1), x]),  # type: ignore[list-item]
        lambda: st.save(entries=x),  # type: ignore[arg-type]
        lambda: st.save(entries=[HardState(term=1)]),  # type: ignore[list-item]
        lambda: st.save(snapshot=HardState(term=5)),  # type: ignore[arg-type]
        lambda: st.save(HardState(term=5), [E(4, 2)], x),  # type: ignore[arg-type]
        lambda: st.entries(x, 2),  # type: ignore[arg-type]
        lambda: st.entries(1, 2.0),  # type: ignore[arg-type]
        lambda: st.entries(1, 2, "10"),  # type: ignore[arg-type]
        lambda: st.entries(True, 2),
        lambda: st.term(1.0),  # type: ignore[arg-type]
        lambda: st.term(None),  # type: ignore[arg-type]
        lambda: st.create_snapshot(x, ConfState(), b""),  # type: ignore[arg-type]
        lambda: st.create_snapshot(2, x, b""),  # type: ignore[arg-type]
        lambda: st.create_snapshot(2, ConfState(), x),  # type: ignore[arg-type]
        lambda: st.truncate_entries_until(x),  # type: ignore[arg-type]
        lambda: st.truncate_entries_until(None),  # type: ignore[arg-type]
        lambda: st.set_uint(MetaInfo.RAFT_ID, x),  # type: ignore[arg-type]
        lambda: st.set_uint(MetaInfo.RAFT_ID, 1.5),  # type: ignore[arg-type]
        lambda: st.set_uint(x, 1),  # type: ignore[arg-type]
        lambda: st.uint(x),  # type: ignore[arg-type]
        lambda: st.uint(None),  # type: ignore[arg-type]
    ]


def _all_refused(st: DiskStorage, tmp_path: Path, calls: list[Callable[[], object]], error: type[Exception]) -> None:
    """Each call raises ``error`` and changes nothing, in memory or (after a reopen) on disk."""
    for call in calls:
        with pytest.raises(error):
            call()
        _unchanged(st)
    st.close()
    with DiskStorage.open(tmp_path) as st:
        _unchanged(st)


def test_wrong_argument_types(tmp_path: Path) -> None:
    st = _ready(tmp_path)
    _all_refused(st, tmp_path, _type_errors(st), TypeError)


def test_negative_indexes(tmp_path: Path) -> None:
    st = _ready(tmp_path)
    calls: list[Callable[[], object]] = [
        lambda: st.entries(-1, 2),
        lambda: st.entries(1, -2),
        lambda: st.entries(1, 2, -1),
        lambda: st.term(-1),
        lambda: st.create_snapshot(-1, ConfState(), b""),
        lambda: st.truncate_entries_until(-1),
        lambda: st.set_uint(MetaInfo.CHECKPOINT_INDEX, -5),
        lambda: st.uint(-1),  # type: ignore[arg-type]
    ]
    _all_refused(st, tmp_path, calls, ValueError)


def test_errors_are_storage_errors() -> None:
    for cls in (CorruptionError, EncryptionKeyError, StorageLockedError, StorageClosedError):
        assert issubclass(cls, StorageError)


def test_snapshot_with_bad_metadata_type(tmp_path: Path) -> None:
    st = _ready(tmp_path)
    with pytest.raises(TypeError):
        st.save(snapshot=SnapshotMetadata(index=5))  # type: ignore[arg-type]
    _unchanged(st)
    st.close()
    assert os.path.exists(tmp_path / "wal.meta")


# --- errors name the real cause ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["00001.wal", "00002.wal"])
def test_a_log_file_of_random_bytes_is_corruption_naming_it(tmp_path: Path, name: str) -> None:
    """Random bytes in a .wal (the only file, or beside a healthy log) are damage, named as such: not "encrypted
    but encryption key is nil" (a random key id is not an encrypted file in a directory without KEYREGISTRY)."""
    if name == "00002.wal":
        build(tmp_path, None)
    else:
        with DiskStorage.open(tmp_path) as st:
            st.save(entries=[E(1, 1, b"one")])
    (tmp_path / name).write_bytes(random.Random(7).randbytes(DATA_START + 5000))
    before = {p.name: file_digest(p) for p in tmp_path.iterdir()}
    for read_only in (True, False):
        with pytest.raises(CorruptionError, match=rf"{name}: offset \d+: .*no KEYREGISTRY"):
            DiskStorage.open(tmp_path, read_only=read_only)
    assert {p.name: file_digest(p) for p in tmp_path.iterdir()} == before


def test_a_data_key_missing_from_the_registry_names_the_registry(tmp_path: Path) -> None:
    build(tmp_path, KEY)
    with open(tmp_path / "00001.wal", "r+b") as fh:  # the header names a key id the registry does not hold
        fh.seek(DATA_START - 16)
        fh.write((99).to_bytes(8, "big"))
    with pytest.raises(CorruptionError, match=r"00001\.wal: offset \d+: data key 99 is not in .*KEYREGISTRY"):
        DiskStorage.open(tmp_path, key=KEY)
