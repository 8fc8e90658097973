"""The C accelerator (``aiowal._speedups``) against the pure-Python paths it replaces: the same record and slot
bytes for any batch, the same entries (and the same stop under a size budget) for any read, the same errors for
damaged records, and the CRC32C of the ``crc32c`` package; arguments out of range are refused; the sync worker's
rules; and the module builds without the sync worker where there is no eventfd. Skipped when it is not built."""

from __future__ import annotations

import errno
import os
import select
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiowal import CorruptionError, DiskStorage, checks, records, speedups
from aiowal.format import DATA_START, MAX_DATA_END, SLOT, SLOT_SIZE, U32, UNLIMITED
from aiowal.logfile import LogFile
from aiowal.raftpb import Entry

_speedups = pytest.importorskip("aiowal._speedups", reason="the C accelerator is not built")

U64_MAX = (1 << 64) - 1
I64_MAX = (1 << 63) - 1


@pytest.mark.skipif(os.environ.get("AIOWAL_PURE_PYTHON", "") not in ("", "0"), reason="AIOWAL_PURE_PYTHON is set")
def test_the_accelerator_is_built_and_used() -> None:
    # If this fails, the C paths below would not be what the rest of the suite ran.
    assert speedups.pack is _speedups.pack
    assert speedups.read is _speedups.read
    assert speedups.entries_ok is _speedups.entries_ok
    assert speedups.terms_ok is _speedups.terms_ok
    assert speedups.sync_worker is getattr(_speedups, "SyncWorker", None)


@given(st.binary(max_size=5000), st.integers(min_value=0, max_value=0xFFFF_FFFF))
def test_crc32c_matches_the_crc32c_package(data: bytes, value: int) -> None:
    assert _speedups.crc32c(data, value) == crc32c.crc32c(data, value)


@pytest.mark.parametrize("size", [0, 7, 8, 191, 192, 193, 200, 384, 1024, 1056, 4096 + 5])
def test_crc32c_at_every_alignment_and_around_the_three_lane_blocks(size: int) -> None:
    """Every start alignment, and sizes at and around the 3 x 64-byte blocks the CRC instruction runs in."""
    data = bytes(range(256)) * (size // 256 + 2)
    for start in range(8):
        view = memoryview(data)[start : start + size]
        for value in (0, 0xFFFF_FFFF, 0x1234_5678):
            assert _speedups.crc32c(view, value) == crc32c.crc32c(bytes(view), value)


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
    expected = records.pack(batch, start, stop, data_end, cap, count == 0)
    got = _speedups.pack(batch, start, stop, data_end, cap, count == 0)
    if expected is None:
        assert got is None
        return
    assert got is not None
    payloads, *rest = expected
    assert (b"".join(payloads), *rest) == got


def _file_image(batch: list[Entry], tail: int = 0) -> bytes:
    """The bytes of a log file holding ``batch`` (packed by the Python path), plus ``tail`` zero bytes."""
    packed = records.pack(batch, 0, len(batch), DATA_START, MAX_DATA_END, True)
    assert packed is not None
    payloads, slots = packed[0], packed[1]
    head = slots + bytes(DATA_START - len(slots))
    return head + b"".join(payloads) + bytes(tail)


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
    packed = records.pack(batch, 0, len(batch), DATA_START, MAX_DATA_END, True)
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


@settings(max_examples=300)
@given(
    st.lists(st.one_of(st.integers(min_value=0, max_value=6), st.just(U64_MAX)), min_size=1, max_size=12),
    st.integers(min_value=0, max_value=6),
    st.integers(min_value=0, max_value=6),
)
def test_terms_ok_agrees_with_the_python_check(terms: list[int], prev_term: int, floor_term: int) -> None:
    """``check_terms`` passes exactly the batches ``terms_ok`` passes (it falls back to its own check, which names the
    entry, only when ``terms_ok`` refuses)."""
    ents = [Entry(term=t, index=i + 1) for i, t in enumerate(terms)]
    accelerated = speedups.terms_ok
    speedups.terms_ok = None
    try:
        checks.check_terms(ents, prev_term, floor_term)
    except ValueError:
        valid = False
    else:
        valid = True
    finally:
        speedups.terms_ok = accelerated
    assert _speedups.terms_ok(ents, max(prev_term, floor_term)) is valid


def test_terms_ok_of_a_list_emptied_by_a_getter_stops_at_its_new_end() -> None:
    owner: list[object] = []
    owner.extend(_Emptying(owner, i, "term") for i in range(1, 6))
    assert _speedups.terms_ok(owner, 1) is True  # the list ended after its first item
    assert owner == []


def _check_python(ents: list[object]) -> None:
    accelerated = speedups.entries_ok
    speedups.entries_ok = None
    try:
        checks.check_entries(ents)  # type: ignore[arg-type]
    finally:
        speedups.entries_ok = accelerated


# --- arguments out of range: a clean exception, never a silent wrap or a read outside the buffer ----------------
def _one_entry_image() -> bytes:
    return _file_image([Entry(term=1, index=1, data=b"abc")])


@pytest.mark.parametrize(
    ("s", "stop"),
    [
        (1 << 59, (1 << 59) + 1),  # stop * 32 wraps to 32: slot 1 << 59 would be read at the start of the buffer
        (0, 1 << 59),  # stop * 32 wraps to 0
        (0, I64_MAX),
        (0, 2),  # just past the end: the image holds DATA_START / 32 slots and the data after them
        (-1, 1),
        (1, 0),
    ],
)
def test_read_refuses_a_slot_range_outside_the_buffer(s: int, stop: int) -> None:
    image = _one_entry_image()
    stop = len(image) // SLOT_SIZE + 1 if stop == 2 else stop
    with pytest.raises(ValueError, match="slot range"):
        _speedups.read(Entry, image, s, stop, 1 << 64, UNLIMITED, False, [])


@pytest.mark.parametrize("s", [1 << 63, -(1 << 63) - 1])
def test_read_refuses_slot_numbers_past_ssize_t(s: int) -> None:
    with pytest.raises(OverflowError):
        _speedups.read(Entry, _one_entry_image(), s, 1, 1 << 64, UNLIMITED, False, [])
    with pytest.raises(OverflowError):
        _speedups.read(Entry, _one_entry_image(), 0, s, 1 << 64, UNLIMITED, False, [])


@pytest.mark.parametrize("budget", [-1, -(1 << 63)])
def test_read_refuses_a_negative_budget(budget: int) -> None:
    # A negative budget once let ``budget - cost`` overflow (undefined behaviour; UBSan stops there).
    out: list[Entry] = []
    with pytest.raises(ValueError, match="budget"):
        _speedups.read(Entry, _one_entry_image(), 0, 1, 1 << 64, budget, False, out)
    assert out == []
    with pytest.raises(OverflowError):
        _speedups.read(Entry, _one_entry_image(), 0, 1, 1 << 64, 1 << 63, False, out)


def test_read_with_a_negative_bound_checks_the_range_and_reads_nothing() -> None:
    out: list[Entry] = []
    assert _speedups.read(Entry, _one_entry_image(), 0, 1, -1, 100, False, out) == 100
    assert out == []
    with pytest.raises(ValueError, match="slot range"):
        _speedups.read(Entry, _one_entry_image(), 0, 1 << 59, -1, 100, False, out)


@pytest.mark.parametrize(
    "args",
    [
        (Entry, "not a buffer", 0, 1, 2, 0, False, []),
        (Entry, _file_image([Entry(term=1, index=1)]), 0, 1, 2.0, 0, False, []),  # hi must be an int
        (Entry, _file_image([Entry(term=1, index=1)]), 0, 1, 2, 0, False, ()),  # out must be a list
        (None, _file_image([Entry(term=1, index=1)]), 0, 1, 2, 0, False, []),  # entry_cls must be callable
        (Entry, _file_image([Entry(term=1, index=1)]), "0", 1, 2, 0, False, []),
    ],
)
def test_read_refuses_wrong_types(args: tuple[object, ...]) -> None:
    with pytest.raises(TypeError):
        _speedups.read(*args)


@pytest.mark.parametrize("bad", [-1, -(1 << 64), 1 << 64, 1 << 100])
def test_pack_refuses_offsets_outside_u64(bad: int) -> None:
    batch = [Entry(term=1, index=1, data=b"x")]
    with pytest.raises(OverflowError):
        _speedups.pack(batch, 0, 1, bad, MAX_DATA_END, True)
    with pytest.raises(OverflowError):
        _speedups.pack(batch, 0, 1, DATA_START, bad, True)


@pytest.mark.parametrize("data_end", [I64_MAX - 10, I64_MAX + 1, U64_MAX - 2, U64_MAX])
def test_pack_refuses_records_that_would_end_past_the_largest_file_offset(data_end: int) -> None:
    batch = [Entry(term=1, index=1, data=b"x" * 10)]
    with pytest.raises(OverflowError, match="file offset"):
        _speedups.pack(batch, 0, 1, data_end, U64_MAX, True)  # force_first: it would be packed if it could


def test_pack_at_the_largest_file_offset_and_a_cap_at_2_64() -> None:
    batch = [Entry(term=1, index=1, data=b"x" * 10)]
    got = _speedups.pack(batch, 0, 1, I64_MAX - 14, U64_MAX, False)
    assert got is not None and got[2] == I64_MAX
    assert _speedups.pack(batch, 0, 1, I64_MAX - 14, I64_MAX - 1, False) is None  # does not fit under the cap


@pytest.mark.parametrize(("start", "stop"), [(-1, 1), (0, 3), (2, 1), (-5, -1), (3, 3), (1, -1)])
def test_pack_refuses_a_range_outside_the_entries(start: int, stop: int) -> None:
    batch = [Entry(term=1, index=1), Entry(term=1, index=2)]
    with pytest.raises(ValueError, match="outside"):
        _speedups.pack(batch, start, stop, DATA_START, MAX_DATA_END, True)
    with pytest.raises(OverflowError):
        _speedups.pack(batch, 0, 1 << 63, DATA_START, MAX_DATA_END, True)
    assert _speedups.pack(batch, 2, 2, DATA_START, MAX_DATA_END, True) is None  # an empty range packs nothing


class _Item:
    """Entry-like, with any field values (a real Entry refuses values out of range itself)."""

    def __init__(self, term: object = 1, index: object = 1, type: object = 0, data: object = b"x") -> None:
        self.term, self.index, self.type, self.data = term, index, type, data


@pytest.mark.parametrize(
    ("item", "error"),
    [
        (_Item(term=-1), OverflowError),
        (_Item(index=1 << 64), OverflowError),
        (_Item(type=1 << 32), ValueError),  # the slot holds 32 bits of type beside the CRC
        (_Item(type=-1), OverflowError),
        (_Item(term="1"), TypeError),
        (_Item(data="x"), TypeError),
        (_Item(data=None), TypeError),
        (object(), AttributeError),
    ],
)
def test_pack_refuses_fields_out_of_range(item: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        _speedups.pack([item], 0, 1, DATA_START, MAX_DATA_END, True)


@pytest.mark.parametrize("value", [-1, 1 << 32, 1 << 64])
def test_crc32c_refuses_a_start_value_outside_u32(value: int) -> None:
    with pytest.raises(OverflowError):
        _speedups.crc32c(b"abc", value)


# --- Python code run during a call (a getter, __index__) may empty the caller's list; run under make sanitize -----
class _Emptying:
    """An entry-like item whose getter of ``field`` empties the list holding it (and so drops the other items)."""

    def __init__(self, owner: list[object], index: int, field: str) -> None:
        self.owner, self.field = owner, field
        self._values = {"term": 1, "index": index, "type": 0, "data": b"abc"}

    def __getattr__(self, name: str) -> object:
        if name not in ("term", "index", "type", "data"):
            raise AttributeError(name)
        if name == self.field:
            self.owner.clear()
        return self._values[name]


@pytest.mark.parametrize("field", ["data", "term", "index", "type"])
def test_pack_of_a_list_emptied_by_a_getter_packs_what_it_was_given(field: str) -> None:
    owner: list[object] = []
    owner.extend(_Emptying(owner, i, field) for i in range(1, 6))
    got = _speedups.pack(owner, 1, 5, DATA_START, MAX_DATA_END, True)
    assert owner == []
    assert got is not None
    assert got[3:6] == (4, 2, 5)  # count, first and last index: the four items of entries[1:5] as they were


def test_entries_ok_of_a_list_emptied_by_a_getter_stops_at_its_new_end() -> None:
    owner: list[object] = []
    owner.extend(_Emptying(owner, i, "index") for i in range(1, 6))
    assert _speedups.entries_ok(owner, _Emptying) is True  # the list ended after its first item: contiguous
    assert owner == []


class _EmptyingFd:
    def __init__(self, owner: list[object], fd: int) -> None:
        self.owner, self.fd = owner, fd

    def __index__(self) -> int:
        self.owner.clear()
        return self.fd


@pytest.fixture
def worker() -> object:
    if not hasattr(_speedups, "SyncWorker"):
        pytest.skip("this build has no sync worker (no eventfd)")
    w = _speedups.SyncWorker()
    yield w
    w.close()


def _wait(w: object) -> int:
    assert select.select([w.fileno()], [], [], 10)[0]  # type: ignore[attr-defined]
    result = w.result()  # type: ignore[attr-defined]
    assert result is not None
    return int(result)


def test_sync_worker_submit_of_a_list_emptied_by_index_syncs_what_it_was_given(worker: object, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_WRONLY)
    try:
        owner: list[object] = []
        owner.extend(_EmptyingFd(owner, fd) for _ in range(8))
        worker.submit(owner)  # type: ignore[attr-defined]
        assert owner == []
        assert _wait(worker) == 0
    finally:
        os.close(fd)


# --- the sync worker: one request at a time, its arguments, and its life --------------------------------------
def test_sync_worker_takes_one_request_at_a_time(worker: object, tmp_path: Path) -> None:
    w: _speedups.SyncWorker = worker  # type: ignore[name-defined]
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_WRONLY)
    try:
        assert w.result() is None  # nothing ran yet
        w.submit([fd, fd])
        with pytest.raises(RuntimeError, match="in flight"):
            w.submit([fd])  # the first one's result has not been taken yet
        assert _wait(w) == 0
        w.submit((fd,))
        assert _wait(w) == 0
        closed = os.open(os.devnull, os.O_RDONLY)
        os.close(closed)
        w.submit([fd, closed])
        assert _wait(w) == errno.EBADF  # the errno of the first fdatasync that failed
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("fds", "error"),
    [
        ([-1], ValueError),
        ([1 << 31], ValueError),
        ([1 << 64], OverflowError),
        ([0] * 17, ValueError),
        (range(10**12), ValueError),  # refused by its length, before anything is built from it
        ((fd for fd in [0]), TypeError),  # a sequence is needed, not any iterable
        (3, TypeError),
        (["0"], TypeError),
        ([1.0], TypeError),
    ],
)
def test_sync_worker_refuses_bad_descriptors(worker: object, fds: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        worker.submit(fds)  # type: ignore[attr-defined]
    assert worker.result() is None  # type: ignore[attr-defined]  # nothing was started


def test_a_closed_or_never_started_sync_worker_refuses_every_call() -> None:
    if not hasattr(_speedups, "SyncWorker"):
        pytest.skip("this build has no sync worker (no eventfd)")
    never = _speedups.SyncWorker.__new__(_speedups.SyncWorker)  # __init__ not run: no thread, no eventfd
    w = _speedups.SyncWorker()
    w.close()
    w.close()  # idempotent
    for x in (never, w):
        for call in (lambda x=x: x.submit([0]), x.result, x.fileno):
            with pytest.raises(RuntimeError, match="closed"):
                call()
    never.close()
    started = _speedups.SyncWorker()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            started.__init__()  # type: ignore[misc]  # a second thread would never be joined
        with pytest.raises(TypeError):
            _speedups.SyncWorker(1)
    finally:
        started.close()


def test_close_runs_the_sync_submitted_before_it(tmp_path: Path) -> None:
    # Once dropped when close() came before the thread woke up for the request: a sync asked for, never run.
    if not hasattr(_speedups, "SyncWorker"):
        pytest.skip("this build has no sync worker (no eventfd)")
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_WRONLY)
    try:
        for _ in range(20):
            w = _speedups.SyncWorker()
            watch = os.dup(w.fileno())
            try:
                w.submit([fd])
                w.close()
                assert _eventfd_count(watch) == 1
            finally:
                os.close(watch)
    finally:
        os.close(fd)


def _eventfd_count(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("eventfd-count:"))


def test_a_close_during_another_close_leaves_the_eventfd_open_until_the_thread_ended(tmp_path: Path) -> None:
    """close() lets go of the GIL while it joins the thread (which first ends the sync in flight). A close() from
    another thread meanwhile once joined the thread a second time and closed the eventfd under the running sync,
    which then wrote to a closed (or reused) descriptor."""
    if not hasattr(_speedups, "SyncWorker"):
        pytest.skip("this build has no sync worker (no eventfd)")
    chunk = os.urandom(1 << 20)
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_WRONLY)
    overlaps = 0
    try:
        for _ in range(5):  # until one round had the two close() calls overlap (the first one almost always does)
            if overlaps:
                break
            for k in range(64):  # dirty pages: the fdatasync below takes a while
                os.pwrite(fd, chunk, k << 20)
            w = _speedups.SyncWorker()
            efd = w.fileno()
            watch = os.dup(efd)  # the same eventfd, kept open here: its count says whether the sync ended
            try:
                w.submit([fd])
                threading.Event().wait(0.005)  # the thread took the request and is in fdatasync
                first = threading.Thread(target=w.close)
                first.start()
                deadline = time.monotonic() + 0.003
                while time.monotonic() < deadline:  # until the first close() let go of the GIL to join
                    try:
                        w.fileno()
                    except RuntimeError:
                        break
                w.close()
                still_open = os.path.exists(f"/proc/self/fd/{efd}")
                sync_running = _eventfd_count(watch) == 0
                assert still_open or not sync_running, "the eventfd was closed while the sync still ran"
                overlaps += still_open and sync_running
                first.join()
                assert _eventfd_count(watch) == 1  # the sync in flight ended and reported
            finally:
                os.close(watch)
    finally:
        os.close(fd)
    assert overlaps, "the second close() never ran while the first one joined the thread"


# --- the module without the sync worker: what builds where there is no eventfd --------------------------------
_WITHOUT_WORKER = """
import asyncio, importlib.machinery, importlib.util, sys
path, directory = sys.argv[1], sys.argv[2]
loader = importlib.machinery.ExtensionFileLoader("aiowal._speedups", path)
spec = importlib.util.spec_from_file_location("aiowal._speedups", path, loader=loader)
module = importlib.util.module_from_spec(spec)
loader.exec_module(module)
sys.modules["aiowal._speedups"] = module  # before aiowal is imported: speedups picks this build
from aiowal import AsyncDiskStorage, DiskStorage, speedups
from aiowal.raftpb import Entry
assert not hasattr(module, "SyncWorker")
assert speedups.sync_worker is None
assert (speedups.pack, speedups.read, speedups.entries_ok, speedups.terms_ok) == (
    module.pack, module.read, module.entries_ok, module.terms_ok
)
entries = [Entry(term=1, index=i, type=0, data=bytes([i]) * i) for i in range(1, 200)]
async def main():
    st = await AsyncDiskStorage.open(directory, hard_sync=True)
    try:
        assert st._worker is None  # every sync runs on the Python sync thread
        await asyncio.gather(*(st.save(entries=[e]) for e in entries))
        assert st.entries(1, 200) == entries
    finally:
        await st.close()
asyncio.run(main())
with DiskStorage.open(directory, read_only=True) as st:
    assert st.entries(1, 200) == entries
print("ok")
"""


@pytest.mark.parametrize("flag", ["-DAIOWAL_NO_EVENTFD", "-U__linux__"])
def test_the_module_builds_and_works_without_the_sync_worker(flag: str, tmp_path: Path) -> None:
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        pytest.skip("no C compiler")
    built = tmp_path / ("_speedups" + sysconfig.get_config_var("EXT_SUFFIX"))
    source = Path(_speedups.__file__).with_name("_speedups.c")
    include = sysconfig.get_paths()["include"]
    subprocess.run([cc, flag, "-O1", "-shared", "-fPIC", f"-I{include}", str(source), "-o", str(built)], check=True)
    child = subprocess.run(
        [sys.executable, "-c", _WITHOUT_WORKER, str(built), str(tmp_path / "wal")],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "AIOWAL_PURE_PYTHON"},
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout == "ok\n"
    with DiskStorage.open(tmp_path / "wal", read_only=True) as st:  # and this build reads what that one wrote
        assert [e.index for e in st.entries(1, 200)] == list(range(1, 200))
