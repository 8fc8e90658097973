"""The C accelerator (``aiowal._speedups``) against the pure-Python paths it replaces: the same record and slot
bytes for any batch, the same entries (and the same stop under a size budget) for any read, the same errors for
damaged records, and the CRC32C of the ``crc32c`` package."""

from __future__ import annotations

import os

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiowal import CorruptionError, DiskStorage, _speedups, logfile, speedups, storage
from aiowal.format import DATA_START, SLOT, SLOT_SIZE, U32, UNLIMITED
from aiowal.logfile import LogFile
from aiowal.raftpb import Entry

U64_MAX = (1 << 64) - 1


def test_the_accelerator_is_built_and_used() -> None:
    # make test builds it; if this fails, the C paths below would not be what the rest of the suite ran.
    assert speedups.pack is _speedups.pack
    assert speedups.read is _speedups.read


@given(st.binary(max_size=5000), st.integers(min_value=0, max_value=0xFFFF_FFFF))
def test_crc32c_matches_the_crc32c_package(data: bytes, value: int) -> None:
    assert _speedups.crc32c(data, value) == crc32c.crc32c(data, value)


def _pure_file(data_end: int, count: int) -> LogFile:
    """A LogFile with no file behind it, enough for the pack methods."""
    lf = LogFile.__new__(LogFile)
    lf.data_end, lf.count, lf.data_key = data_end, count, None
    return lf


@st.composite
def batches(draw: st.DrawFn) -> list[Entry]:
    n = draw(st.integers(min_value=1, max_value=40))
    first = draw(st.one_of(st.integers(min_value=1, max_value=1000), st.just(U64_MAX - n + 1)))
    term = draw(st.one_of(st.integers(min_value=0, max_value=5), st.just(U64_MAX)))
    out = []
    for i in range(n):
        e = Entry(term=term, index=first + i, type=draw(st.sampled_from([0, 1, 2])))
        data = draw(st.one_of(st.just(b""), st.binary(min_size=1, max_size=300)))
        if data:
            e.data = data
        out.append(e)
    return out


@settings(max_examples=300, deadline=None)
@given(batches(), st.data())
def test_pack_gives_the_bytes_of_the_python_path(batch: list[Entry], data: st.DataObject) -> None:
    data_end = data.draw(st.integers(min_value=DATA_START, max_value=DATA_START + 5000))
    cap = data_end + data.draw(st.integers(min_value=0, max_value=8000))  # the 1 GiB data cap, scaled down
    count = data.draw(st.sampled_from([0, 3]))
    start = data.draw(st.integers(min_value=0, max_value=len(batch) - 1))
    stop = data.draw(st.integers(min_value=start + 1, max_value=len(batch)))
    lf = _pure_file(data_end, count)
    old = logfile.MAX_DATA_END
    logfile.MAX_DATA_END = cap
    try:
        expected = lf._pack_one(batch[start]) if stop - start == 1 else lf._pack_many(batch[start:stop])
    finally:
        logfile.MAX_DATA_END = old
    got = _speedups.pack(batch, start, stop, data_end, cap, count == 0)
    if expected is None:
        assert got is None
        return
    assert got is not None
    records, *rest = expected
    assert (b"".join(records), *rest) == got


def _file_image(batch: list[Entry], tail: int = 0) -> bytes:
    """The bytes of a log file holding ``batch`` (packed by the Python path), plus ``tail`` zero bytes."""
    lf = _pure_file(DATA_START, 0)
    packed = lf._pack_many(batch) if len(batch) > 1 else lf._pack_one(batch[0])
    assert packed is not None
    records, slots = packed[0], packed[1]
    head = slots + bytes(DATA_START - len(slots))
    return head + b"".join(records) + bytes(tail)


def _reader(image: bytes, batch: list[Entry]) -> LogFile:
    lf = LogFile.__new__(LogFile)
    lf.mm = image  # type: ignore[assignment]  # any buffer does; a bytes image needs no file
    lf.size = len(image)
    lf.path = "image.wal"
    lf.data_key = None
    lf.key_id = 0
    lf.count = len(batch)
    lf.first, lf.last = batch[0].index, batch[-1].index
    lf.contiguous = True
    return lf


def _both_reads(lf: LogFile, s: int, stop: int, hi: int, budget: int, started: bool) -> None:
    head = [Entry(term=9, index=9)] if started else []
    c_out, py_out = list(head), list(head)
    c_left = lf.read(s, stop, hi, budget, c_out)
    accelerated = speedups.read
    speedups.read = None
    try:
        py_left = lf.read(s, stop, hi, budget, py_out)
    finally:
        speedups.read = accelerated
    assert c_out == py_out
    assert (c_left < 0) == (py_left < 0)
    if py_left >= 0 and budget < UNLIMITED:
        spent = sum(e.ByteSize() for e in c_out[len(head) :])
        assert c_left == budget - spent  # (the Python path may skip that sum when the limit cannot bite)


@settings(max_examples=300, deadline=None)
@given(batches(), st.data())
def test_read_gives_the_entries_of_the_python_path(batch: list[Entry], data: st.DataObject) -> None:
    lf = _reader(_file_image(batch), batch)
    n = len(batch)
    s = data.draw(st.integers(min_value=0, max_value=n))
    stop = data.draw(st.integers(min_value=s, max_value=n))
    hi = data.draw(st.one_of(st.integers(min_value=batch[0].index, max_value=batch[-1].index + 2), st.just(1 << 70)))
    budget = data.draw(st.one_of(st.just(UNLIMITED), st.integers(min_value=0, max_value=4000), st.just(1 << 80)))
    _both_reads(lf, s, stop, hi, budget, data.draw(st.booleans()))


def test_read_of_a_file_with_a_gap_stops_at_hi() -> None:
    # Dgraph leaves a gap inside a file when a snapshot arrives through Save: indexes rise, not contiguously.
    batch = [Entry(term=1, index=i, data=b"x" * i) for i in (5, 6, 7, 20, 21)]
    image = bytearray(_file_image([Entry(term=1, index=i, data=b"x" * i) for i in range(1, 6)]))
    lf0 = _pure_file(DATA_START, 0)
    packed = lf0._pack_many(batch)
    assert packed is not None
    image[: 5 * SLOT_SIZE] = packed[1]
    image[DATA_START : DATA_START + len(b"".join(packed[0]))] = b"".join(packed[0])
    lf = _reader(bytes(image), batch)
    lf.contiguous = False
    for hi in (6, 8, 19, 20, 21, 22, 1 << 64):
        _both_reads(lf, 0, 5, hi, UNLIMITED, False)
        _both_reads(lf, 0, 5, hi, 30, False)


def _damaged(kind: str) -> tuple[bytes, list[Entry]]:
    batch = [Entry(term=1, index=i, data=b"abc") for i in range(1, 4)]
    image = bytearray(_file_image(batch))
    term, index, off, word = SLOT.unpack_from(image, SLOT_SIZE)
    if kind == "offset":
        SLOT.pack_into(image, SLOT_SIZE, term, index, len(image) - 2, word)
    elif kind == "huge offset":
        SLOT.pack_into(image, SLOT_SIZE, term, index, U64_MAX, word)
    elif kind == "length":
        U32.pack_into(image, off, 1 << 20)
    elif kind == "type":
        SLOT.pack_into(image, SLOT_SIZE, term, index, off, (word & ~0xFFFF_FFFF) | 7)
    return bytes(image), batch


@pytest.mark.parametrize("kind", ["offset", "huge offset", "length", "type"])
@pytest.mark.parametrize("accelerated", [True, False])
def test_a_damaged_record_is_corruption_either_way(
    kind: str, accelerated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not accelerated:
        monkeypatch.setattr(speedups, "read", None)
    image, batch = _damaged(kind)
    lf = _reader(image, batch)
    with pytest.raises(CorruptionError, match=r"image\.wal"):
        lf.read(0, 3, 10, UNLIMITED, [])


def test_a_storage_written_by_one_path_reads_the_same_through_the_other(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [Entry(term=1 + i // 50, index=i, type=i % 3 if i % 7 == 0 else 0) for i in range(1, 400)]
    for e in entries:
        if e.index % 90:  # data is set only when not empty, as reads return it
            e.data = os.urandom(e.index % 90)
    monkeypatch.setattr(speedups, "pack", None)
    with DiskStorage.open(os.fspath(tmp_path) + "/py") as st:
        st.save(entries=entries)
    monkeypatch.undo()
    with DiskStorage.open(os.fspath(tmp_path) + "/c") as st:
        st.save(entries=entries)
    names = sorted(os.listdir(os.path.join(tmp_path, "py")))
    assert names == sorted(os.listdir(os.path.join(tmp_path, "c")))
    assert any(name.endswith(".wal") for name in names)
    for name in names:
        with open(os.path.join(tmp_path, "py", name), "rb") as a, open(os.path.join(tmp_path, "c", name), "rb") as b:
            assert a.read() == b.read(), name
    with DiskStorage.open(os.fspath(tmp_path) + "/py") as st:
        assert st.entries(1, 400) == entries
        assert st.entries(1, 400, max_size=5000) == entries[: len(st.entries(1, 400, max_size=5000))]
    monkeypatch.setattr(speedups, "read", None)
    with DiskStorage.open(os.fspath(tmp_path) + "/c") as st:
        assert st.entries(1, 400) == entries


@st.composite
def entry_lists(draw: st.DrawFn) -> list[object]:
    n = draw(st.integers(min_value=0, max_value=6))
    first = draw(st.sampled_from([0, 1, 7, U64_MAX - 2, U64_MAX]))
    steps = draw(st.lists(st.sampled_from([1, 1, 1, 0, 2, -1]), min_size=n, max_size=n))
    out: list[object] = []
    index = first
    for step in steps:
        out.append(Entry(index=index) if 0 <= index <= U64_MAX else Entry(index=0))
        index += step
    if out and draw(st.integers(min_value=0, max_value=5)) == 0:
        out[draw(st.integers(min_value=0, max_value=len(out) - 1))] = draw(st.sampled_from([None, 3, b"x"]))
    return out


@settings(max_examples=300)
@given(entry_lists())
def test_entries_ok_agrees_with_the_python_check(ents: list[object]) -> None:
    try:
        _check_python(ents)
    except (TypeError, ValueError):
        valid = False
    else:
        valid = True
    assert _speedups.entries_ok(ents, Entry) is valid  # type: ignore[arg-type]


def _check_python(ents: list[object]) -> None:
    accelerated = speedups.entries_ok
    speedups.entries_ok = None
    try:
        storage._check_entries(ents)  # type: ignore[arg-type]
    finally:
        speedups.entries_ok = accelerated
