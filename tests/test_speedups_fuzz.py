"""Hypothesis drives the C accelerator's functions directly with any arguments, hostile ones included: random
buffers and slot numbers for ``read``, any offsets, ranges and items for ``pack``, lists mutated between calls, any
sequence of calls on a ``SyncWorker``. Each call must do what a plain statement of its contract says (compared with
the pure-Python paths where they are defined) or raise a clean Python error; ``make sanitize`` runs this file under
AddressSanitizer and UBSan, which stop at any read or write outside a buffer."""

from __future__ import annotations

import errno
import os
import select
import tempfile
import types
from collections.abc import Callable
from typing import Any

import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from aiowal import checks, records, speedups
from aiowal.format import DATA_START, SLOT, SLOT_SIZE, TYPE_MASK, U32, entry_size, record_crc, signed_type
from aiowal.logfile import LogFile
from aiowal.raftpb import Entry

_speedups = pytest.importorskip("aiowal._speedups", reason="the C accelerator is not built")

U64_MAX = (1 << 64) - 1
I64_MAX = (1 << 63) - 1
CLEAN = (ValueError, TypeError, OverflowError)
FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)

# Integers at and around every edge the C code converts or multiplies: 32 bits, slot offsets wrapping past 2**64,
# ssize_t, u64, and far beyond.
EDGES = [0, 1, 2, 31, 32, 33, (1 << 32) - 1, 1 << 32, 1 << 58, 1 << 59, (1 << 59) + 1, I64_MAX, 1 << 63, U64_MAX]
edge_ints = st.sampled_from(EDGES + [-e for e in EDGES] + [1 << 64, 1 << 100, -(1 << 63) - 1, -(1 << 100)])


def any_int(lo: int, hi: int) -> st.SearchStrategy[int]:
    """Mostly small values in [lo, hi], often an edge."""
    return st.one_of(st.integers(min_value=lo, max_value=hi), edge_ints)


class Hostile(Exception):
    """Raised by hostile items; a clean error the C code must pass on."""


# --- read -----------------------------------------------------------------------------------------------------
def read_contract(buf: bytes, s: int, stop: int, hi: int, budget: int, started: bool) -> Any:
    """What ``read`` does, slot by slot: ``(fields of each entry, budget left)``, or the error type it raises."""
    if not (-(1 << 63) <= s <= I64_MAX and -(1 << 63) <= stop <= I64_MAX and -(1 << 63) <= budget <= I64_MAX):
        return OverflowError
    if budget < 0 or s < 0 or stop < s or stop > len(buf) // SLOT_SIZE:
        return ValueError
    out = []
    for k in range(s, stop):
        term, index, off, word = SLOT.unpack_from(buf, k * SLOT_SIZE)
        etype = signed_type(word & TYPE_MASK)
        if index >= hi:
            break
        if off + 4 > len(buf):
            return ValueError
        n = U32.unpack_from(buf, off)[0]
        if off + 4 + n > len(buf):
            return ValueError
        cost = entry_size(term, index, etype, n)
        if started and cost > budget:
            return out, -1
        budget -= cost
        started = True
        out.append((term, index, etype, bytes(buf[off + 4 : off + 4 + n])))
        if budget < 0:
            break
    return out, budget


@st.composite
def crafted_files(draw: st.DrawFn) -> bytes:
    """A buffer of slots whose offsets and record lengths sit at the edges of the buffer, or random bytes."""
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        return draw(st.binary(max_size=600))
    n = draw(st.integers(min_value=0, max_value=6))
    size = draw(st.integers(min_value=n * SLOT_SIZE, max_value=n * SLOT_SIZE + 300))
    buf = bytearray(draw(st.binary(min_size=size, max_size=size)))
    for k in range(n):
        off = draw(st.one_of(st.integers(min_value=0, max_value=size + 4), st.sampled_from([U64_MAX, 1 << 63])))
        term = draw(st.one_of(st.integers(min_value=0, max_value=9), st.just(U64_MAX)))
        index = draw(st.one_of(st.integers(min_value=0, max_value=12), st.just(U64_MAX)))
        word = draw(st.one_of(st.integers(min_value=0, max_value=3), st.integers(min_value=0, max_value=U64_MAX)))
        SLOT.pack_into(buf, k * SLOT_SIZE, term, index, off, word)
        if off + 4 <= size:
            room = size - off - 4
            U32.pack_into(buf, off, draw(st.sampled_from([0, room, room + 1, max(room - 1, 0), 0xFFFF_FFFF])))
    return bytes(buf)


read_args = st.tuples(
    crafted_files(),
    any_int(-2, 8),
    any_int(-2, 8),
    st.one_of(any_int(-2, 14), st.sampled_from([U64_MAX, 1 << 64, 1 << 70])),
    st.one_of(any_int(-2, 2000), st.sampled_from([1 << 62])),
    st.booleans(),
)


def _fields(e: Any) -> tuple[int, int, int, bytes]:
    return e.term, e.index, e.type, getattr(e, "data", b"")


@FUZZ
@given(read_args, st.sampled_from([bytes, bytearray, memoryview]))
def test_read_of_any_buffer_does_what_its_contract_says(args: tuple[Any, ...], kind: Callable[[bytes], Any]) -> None:
    buf, s, stop, hi, budget, started = args
    expected = read_contract(buf, s, stop, hi, budget, started)
    out: list[Any] = []
    try:
        left = _speedups.read(types.SimpleNamespace, kind(buf), s, stop, hi, budget, started, out)
    except CLEAN as exc:
        assert type(exc) is expected, (exc, expected)
        return
    assert not isinstance(expected, type), expected
    assert ([_fields(e) for e in out], left) == expected


@FUZZ
@given(read_args)
def test_read_into_entries_refuses_a_type_that_is_not_an_entry_type(args: tuple[Any, ...]) -> None:
    buf, s, stop, hi, budget, started = args
    expected = read_contract(buf, s, stop, hi, budget, started)
    out: list[Entry] = []
    try:
        left = _speedups.read(Entry, buf, s, stop, hi, budget, started, out)
    except CLEAN as exc:
        bad_type = not isinstance(expected, type) and any(f[2] not in (0, 1, 2) for f in expected[0])
        assert type(exc) is (ValueError if bad_type else expected), (exc, expected)
        return
    assert not isinstance(expected, type), expected
    got = [(e.term, e.index, int(e.type), e.data) for e in out]
    assert (got, left) == expected


@st.composite
def batches(draw: st.DrawFn) -> list[Entry]:
    n = draw(st.integers(min_value=1, max_value=12))
    first = draw(st.one_of(st.integers(min_value=1, max_value=100), st.just(U64_MAX - n + 1)))
    term = draw(st.one_of(st.integers(min_value=0, max_value=3), st.just(U64_MAX)))
    return [
        Entry(term=term, index=first + i, type=draw(st.sampled_from([0, 1, 2])), data=draw(st.binary(max_size=90)))
        for i in range(n)
    ]


IMAGE_DATA_START = 512  # room for the slots of a batch (a log file's is DATA_START): small images, fast examples


def _image(batch: list[Entry]) -> bytes:
    """A log file's bytes holding ``batch``, packed by the Python path."""
    packed = records.pack(batch, 0, len(batch), IMAGE_DATA_START, 1 << 30, True)
    assert packed is not None
    return packed[1] + bytes(IMAGE_DATA_START - len(packed[1])) + b"".join(packed[0])


@FUZZ
@given(batches(), st.data(), any_int(-2, 14), st.booleans())
def test_the_contract_of_read_is_the_python_path_on_written_files(
    batch: list[Entry], data: st.DataObject, hi: int, started: bool
) -> None:
    # read_contract above is only worth what it agrees with: on files aiowal writes, the pure-Python path.
    s = data.draw(st.integers(min_value=0, max_value=len(batch)))
    stop = data.draw(st.integers(min_value=s, max_value=len(batch)))
    budget = data.draw(st.one_of(st.integers(min_value=0, max_value=3000), st.sampled_from([1 << 62, I64_MAX])))
    hi = batch[0].index + hi if abs(hi) < 1 << 32 else hi
    lf = LogFile.__new__(LogFile)
    lf.mm = _image(batch)  # type: ignore[assignment]
    lf.size, lf.path, lf.data_key, lf.count = len(lf.mm), "image.wal", None, len(batch)
    lf.first, lf.last, lf.contiguous = batch[0].index, batch[-1].index, False
    head = [Entry(term=9, index=9)] if started else []
    out = list(head)
    left = lf._read_python(s, stop, hi, budget, out)
    contract = read_contract(lf.mm, s, stop, hi, budget, started)
    assert not isinstance(contract, type)
    assert [(e.term, e.index, e.type, e.data) for e in out[len(head) :]] == contract[0]
    assert (left < 0) == (contract[1] < 0)


class _Mutating:
    """An entry class whose construction does something hostile to the read in progress."""

    def __init__(self, how: str, buf: bytearray, out: list[Any]) -> None:
        self.how, self.buf, self.out = how, buf, out

    def __call__(self) -> Any:
        if self.how == "scribble":  # rewrite the slots and records being read
            self.buf[:] = os.urandom(len(self.buf))
        elif self.how == "resize":  # refused: the buffer is held while read runs
            self.buf.extend(b"x")
        elif self.how == "grow out":
            self.out.extend([None] * 100)
        elif self.how == "raise":
            raise Hostile
        return types.SimpleNamespace()


@FUZZ
@given(batches(), st.sampled_from(["scribble", "resize", "grow out", "raise"]))
def test_read_survives_an_entry_class_that_mutates_its_arguments(batch: list[Entry], how: str) -> None:
    buf = bytearray(_image(batch))
    out: list[Any] = []
    try:
        _speedups.read(_Mutating(how, buf, out), buf, 0, len(batch), 1 << 64, 1 << 62, False, out)
    except (*CLEAN, BufferError, Hostile) as exc:
        assert how in ("resize", "raise") or isinstance(exc, ValueError), exc  # scribbled offsets: ValueError
    else:
        assert how in ("scribble", "grow out")
    assert len(buf) == len(_image(batch))


def test_read_of_a_buffer_that_is_not_contiguous_is_refused() -> None:
    buf = memoryview(_image([Entry(term=1, index=1)]) * 2)[::2]
    with pytest.raises(BufferError):
        _speedups.read(Entry, buf, 0, 1, 2, 0, False, [])


# --- pack -----------------------------------------------------------------------------------------------------
class _Item:
    """Entry-like, with any field values; a field may raise when read."""

    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def __getattr__(self, name: str) -> Any:
        value = self._fields.get(name)
        if value is Hostile:
            raise Hostile(name)
        if value is None:
            raise AttributeError(name)
        return value


u64ish = st.one_of(st.integers(min_value=0, max_value=9), edge_ints)
items = st.one_of(
    st.builds(
        lambda t, i, y, d: _Item(term=t, index=i, type=y, data=d),
        u64ish,
        u64ish,
        st.one_of(st.sampled_from([0, 1, 2]), edge_ints),
        st.one_of(st.binary(max_size=40), st.sampled_from(["str", None, Hostile, 7, bytearray(b"b")])),
    ),
    st.sampled_from([None, 3, b"x", Hostile]).map(lambda v: _Item(data=v)),
    st.sampled_from([None, 3, b"x"]),
)


def check_packed(
    got: tuple[bytes, bytes, int, int, int, int, int], ents: list[Any], start: int, stop: int, data_end: int, cap: int
) -> None:
    """The result of ``pack`` against its contract: records and slots of a prefix of ``ents[start:stop]`` laid out
    from ``data_end``, each slot with its record's CRC, and as many entries as fit under ``cap``."""
    records, slots, end, count, first, last, last_term = got
    assert 1 <= count <= stop - start
    assert len(slots) == count * SLOT_SIZE and len(records) == end - data_end
    off = data_end
    for k in range(count):
        e = ents[start + k]
        term, index, at, word = SLOT.unpack_from(slots, k * SLOT_SIZE)
        n = U32.unpack_from(records, off - data_end)[0]
        data = records[off - data_end + 4 : off - data_end + 4 + n]
        assert (term, index, at, word & TYPE_MASK, data) == (e.term, e.index, off, e.type, e.data)
        assert word >> 32 == record_crc(term, index, off, e.type, data)
        off += 4 + n
    assert off == end <= I64_MAX
    assert end <= cap or count == 1
    assert (first, last, last_term) == (ents[start].index, ents[start + count - 1].index, ents[start + count - 1].term)
    if count < stop - start:  # stopped by the cap: the next one does not fit
        nxt = ents[start + count].data
        assert end + 4 + len(nxt) > cap


@FUZZ
@given(
    st.lists(items, max_size=6),
    any_int(-1, 7),
    any_int(-1, 7),
    st.one_of(any_int(0, 400), st.sampled_from([I64_MAX - 30, U64_MAX - 3])),
    st.one_of(any_int(0, 500), st.just(U64_MAX)),
    st.booleans(),
)
def test_pack_of_any_items_and_arguments_keeps_its_contract(
    ents: list[Any], start: int, stop: int, data_end: int, cap: int, force_first: bool
) -> None:
    try:
        got = _speedups.pack(ents, start, stop, data_end, cap, force_first)
    except (*CLEAN, AttributeError, Hostile):
        return  # which error for which argument: test_speedups.py; here, that nothing else happens
    assert 0 <= start <= stop <= len(ents) and 0 <= data_end <= I64_MAX and 0 <= cap <= U64_MAX
    if got is None:
        first = ents[start].data if start < stop else b""
        assert start == stop or not force_first
        assert start == stop or data_end + 4 + len(first) > cap
        return
    check_packed(got, ents, start, stop, data_end, cap)
    if got[3] == 1 and got[2] > cap:
        assert force_first


def test_pack_refuses_a_force_first_whose_truth_raises() -> None:
    class Undecided:
        def __bool__(self) -> bool:
            raise Hostile

    with pytest.raises(Hostile):
        _speedups.pack([Entry(index=1)], 0, 1, DATA_START, 1 << 30, Undecided())


def _python_pack(ents: list[Entry], data_end: int, cap: int, force_first: bool) -> Any:
    packed = records.pack(ents, 0, len(ents), data_end, cap, force_first)
    return None if packed is None else (b"".join(packed[0]), *packed[1:])


def _check_python(ents: list[Any]) -> bool:
    accelerated = speedups.entries_ok
    speedups.entries_ok = None
    try:
        checks.check_entries(ents)
    except (TypeError, ValueError):
        return False
    finally:
        speedups.entries_ok = accelerated
    return True


# One change to a list of entries between two calls.
mutations = st.one_of(
    st.tuples(st.just("append"), st.binary(max_size=60)),
    st.tuples(st.just("pop"), st.integers(min_value=0, max_value=50)),
    st.tuples(st.just("data"), st.integers(min_value=0, max_value=50), st.binary(max_size=200)),
    st.tuples(st.just("term"), st.integers(min_value=0, max_value=50), st.sampled_from([0, 7, U64_MAX])),
    st.tuples(st.just("index"), st.integers(min_value=0, max_value=50), st.sampled_from([0, 1, 5, U64_MAX])),
    st.tuples(st.just("foreign"), st.integers(min_value=0, max_value=50), st.sampled_from([None, 3, b"x"])),
    st.tuples(st.just("same object twice"), st.integers(min_value=0, max_value=50)),
)


def _mutate(ents: list[Any], op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "append":
        last = ents[-1].index if ents and isinstance(ents[-1], Entry) else 0
        ents.append(Entry(term=1, index=min(last + 1, U64_MAX), data=op[1]))
        return
    if not ents:
        return
    k = op[1] % len(ents)
    if kind == "pop":
        ents.pop(k)
    elif kind == "foreign":
        ents[k] = op[2]
    elif kind == "same object twice":
        ents.append(ents[k])
    elif isinstance(ents[k], Entry):  # Entry fields change in place: the list holds the same objects
        setattr(ents[k], kind, op[2])


@FUZZ
@given(batches(), st.lists(mutations, max_size=12), st.integers(min_value=DATA_START, max_value=DATA_START + 600))
def test_entries_mutated_between_calls_pack_and_check_as_the_python_paths_do(
    batch: list[Entry], ops: list[tuple[Any, ...]], data_end: int
) -> None:
    ents: list[Any] = list(batch)
    cap = data_end + 700
    for op in ops:
        _mutate(ents, op)
        assert _speedups.entries_ok(ents, Entry) is _check_python(ents)
        if not all(isinstance(e, Entry) for e in ents):  # the Python path takes Entry objects only
            try:
                got = _speedups.pack(ents, 0, len(ents), data_end, cap, True)
            except AttributeError:  # a foreign item among those that fit
                continue
            if got is not None:
                check_packed(got, ents, 0, len(ents), data_end, cap)
            continue
        for force_first in (True, False):
            expected = _python_pack(ents, data_end, cap, force_first) if ents else None
            assert _speedups.pack(ents, 0, len(ents), data_end, cap, force_first) == expected


def test_a_file_past_its_data_cap_takes_no_more_entries_on_either_path() -> None:
    # Reached through DiskStorage when an entry larger than the 1 GiB data cap went into an empty file and the next
    # save has two entries or more: always on encrypted files, which take the Python path.
    ents = [Entry(term=1, index=i, data=b"x") for i in (1, 2, 3)]
    assert _speedups.pack(ents, 0, 3, 200, 100, False) is None
    assert _python_pack(ents, 200, 100, False) is None


# --- entries_ok -----------------------------------------------------------------------------------------------
@FUZZ
@given(st.lists(st.one_of(items, st.builds(lambda i: Entry(index=i), st.integers(0, 4))), max_size=6))
def test_entries_ok_of_any_items_agrees_with_its_contract(ents: list[Any]) -> None:
    for cls in (Entry, _Item):
        try:
            got = _speedups.entries_ok(ents, cls)
        except (*CLEAN, AttributeError, Hostile):
            assert cls is _Item  # only a duck's index can be missing, raise, or be out of range
            continue
        indexes = [_index_or_none(e) for e in ents]
        contiguous = (
            all(isinstance(e, cls) for e in ents)
            and all(isinstance(i, int) and 0 <= i <= U64_MAX for i in indexes)
            and (not ents or (indexes[0] >= 1 and indexes == list(range(indexes[0], indexes[0] + len(ents)))))
        )
        assert got is contiguous
        if cls is Entry:
            assert got is _check_python(ents)


def _index_or_none(e: Any) -> Any:
    try:
        return e.index
    except (AttributeError, Hostile):
        return None


@pytest.mark.parametrize("cls", [None, 3, Entry(index=1), "Entry"])
def test_entries_ok_refuses_a_class_that_is_not_a_type(cls: object) -> None:
    with pytest.raises(TypeError):
        _speedups.entries_ok([Entry(index=1)], cls)


# --- crc32c ---------------------------------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=300), st.one_of(st.integers(min_value=0, max_value=0xFFFF_FFFF), edge_ints))
def test_crc32c_of_any_value_is_the_packages_or_overflow(data: bytes, value: int) -> None:
    if 0 <= value <= 0xFFFF_FFFF:
        assert _speedups.crc32c(bytearray(data), value) == _speedups.crc32c(data, value) == crc32c.crc32c(data, value)
    else:
        with pytest.raises(OverflowError):
            _speedups.crc32c(data, value)


# --- SyncWorker -----------------------------------------------------------------------------------------------
NOT_OPEN = 1 << 30  # a valid descriptor number above any limit: never open, fdatasync says EBADF

bad_fd_lists = st.one_of(
    st.lists(st.sampled_from([-1, 1 << 31, -(1 << 63)]), min_size=1, max_size=3).map(lambda v: (v, ValueError)),
    st.lists(st.sampled_from([1 << 64, 1 << 100]), min_size=1, max_size=3).map(lambda v: (v, OverflowError)),
    st.integers(min_value=17, max_value=40).map(lambda n: ([0] * n, ValueError)),
    st.sampled_from([(None, TypeError), (3, TypeError), (["0"], TypeError), ([1.5], TypeError), ({0}, TypeError)]),
)


class SyncWorkerMachine(RuleBasedStateMachine):
    """Any sequence of calls on one SyncWorker against its rules: one request at a time, its result once, nothing
    after close()."""

    def __init__(self) -> None:
        super().__init__()
        self.worker = _speedups.SyncWorker()
        self.efd = self.worker.fileno()
        self.tmp = tempfile.NamedTemporaryFile()  # noqa: SIM115  # closed in teardown
        self.closed = False
        self.in_flight: int | None = None  # the errno the request in flight will report

    @rule(data=st.data(), n=st.integers(min_value=0, max_value=16))
    def submit(self, data: st.DataObject, n: int) -> None:
        fds = data.draw(st.lists(st.sampled_from([self.tmp.fileno(), NOT_OPEN]), min_size=n, max_size=n))
        if self.closed or self.in_flight is not None:
            with pytest.raises(RuntimeError, match="closed" if self.closed else "in flight"):
                self.worker.submit(fds)
            return
        self.worker.submit(tuple(fds) if n % 2 else fds)
        self.in_flight = errno.EBADF if NOT_OPEN in fds else 0

    @rule(bad=bad_fd_lists)
    def submit_bad_descriptors(self, bad: tuple[Any, type[Exception]]) -> None:
        fds, error = bad
        with pytest.raises(error):  # the arguments are checked first, whatever the state
            self.worker.submit(fds)

    @rule()
    def wait_for_the_result(self) -> None:
        if self.closed or self.in_flight is None:
            self.poll()
            return
        assert select.select([self.efd], [], [], 10)[0]
        assert self.worker.result() == self.in_flight
        self.in_flight = None
        assert self.worker.result() is None  # taken once

    @rule()
    def poll(self) -> None:
        if self.closed:
            with pytest.raises(RuntimeError, match="closed"):
                self.worker.result()
            return
        got = self.worker.result()
        if self.in_flight is None:
            assert got is None
        elif got is not None:
            assert got == self.in_flight
            self.in_flight = None

    @rule()
    def close(self) -> None:
        self.worker.close()
        self.closed = True

    @invariant()
    def fileno_until_closed(self) -> None:
        if self.closed:
            with pytest.raises(RuntimeError, match="closed"):
                self.worker.fileno()
        else:
            assert self.worker.fileno() == self.efd

    def teardown(self) -> None:
        self.worker.close()
        self.tmp.close()


def test_any_sequence_of_sync_worker_calls_follows_its_rules() -> None:
    if not hasattr(_speedups, "SyncWorker"):
        pytest.skip("this build has no sync worker (no eventfd)")
    run_state_machine_as_test(
        SyncWorkerMachine, settings=settings(max_examples=60, stateful_step_count=25, deadline=None)
    )
