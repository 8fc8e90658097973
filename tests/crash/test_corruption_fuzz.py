"""Corrupted directories (Hypothesis): take a valid directory — written by aiowal (plain and encrypted, with and
without rotation, snapshots, overwrites, truncation) or by Dgraph itself (the fixtures) — flip bytes, zero or
overwrite ranges, truncate, extend and delete its files, then open it and read everything.

Opening and reading must either work or raise ``CorruptionError`` / ``EncryptionKeyError``: never another
exception, a hang (each case runs under an alarm) or a signal. Reads go through mappings of files whose size is
fixed while they are read, so a SIGBUS cannot come from here (a full tmpfs is covered by test_full_disk). The one
other error accepted is the read-only open of a directory left with neither log files nor a non-empty wal.meta
("not a WAL directory"). Checked as well: a read-only open changes nothing in the directory, and, for directories
written by aiowal, when a writable open succeeds the repaired directory accepts a write that a reopen shows.
(Dgraph's records carry no checksum: a damaged term in a Dgraph-written file can be kept as valid, and a later entry
with a lower term is then cut at the next open; such garbage is beyond what a structural check can see.)
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import fixtures
import pytest
from crashmodel import Model, execute, gen_op, small_files
from crashutil import SOAK, report, scratch_base
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from powersim import Content

from aiowal import CorruptionError, DiskStorage, EncryptionKeyError, StorageError, raftpb
from aiowal.format import DATA_START, ENC_OFFSET, SLOT_SIZE

KEY = bytes(range(100, 132))
BASE_SPECS = [
    # (name, key, entries per file, seed, operations)
    ("plain", None, 30_000, 11, 14),
    ("plain-rotation", None, 4, 12, 30),
    ("encrypted", KEY, 30_000, 13, 14),
    ("encrypted-rotation", KEY, 4, 14, 30),
]
DGRAPH_CASES = ["basic", "encrypted_basic", "save_with_snapshot"]
_BASES: dict[str, tuple[dict[str, Content], bytes | None]] = {}


def _bases() -> dict[str, tuple[dict[str, Content], bytes | None]]:
    """The valid directories, built once: name -> (files, key)."""
    if _BASES:
        return _BASES
    root = tempfile.mkdtemp(dir=scratch_base(), prefix="aiowal-fuzz-base-")
    try:
        for name, key, per_file, seed, n_ops in BASE_SPECS:
            d = os.path.join(root, name)
            rng = random.Random(seed)
            m = Model()
            with small_files(per_file):
                s = DiskStorage.open(d, key=key)
                for _ in range(n_ops):
                    op = gen_op(m, rng)
                    s = execute(s, op, d, key, None)
                    m = m.apply(op)
                s.close()
            _BASES[name] = (_read_dir(d), key)
        for case in DGRAPH_CASES:
            d = str(fixtures.extract(case, __import__("pathlib").Path(root)))
            _BASES["dgraph-" + case] = (_read_dir(d), fixtures.key_of(case))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return _BASES


def _read_dir(d: str) -> dict[str, Content]:
    return {n: Content.from_file(os.path.join(d, n)) for n in sorted(os.listdir(d))}


def _dir_digest(d: str) -> bytes:
    h = hashlib.sha256()
    for name in sorted(os.listdir(d)):
        h.update(name.encode() + b"\0")
        Content.from_file(os.path.join(d, name)).digest(h)
    return h.digest()


# --- mutations ------------------------------------------------------------------------------------------------
META_FIELDS = [(0, 8), (8, 8), (16, 8), (24, 8), (32, 8), (512, 4), (1024, 8), (1032, 8), (1040, 4)]


def _used_slots(c: Content) -> int:
    used = 0
    while used < 30_000 and c.read(used * SLOT_SIZE + 8, 8).strip(b"\0"):
        used += 1
    return used


def _hot_regions(name: str, c: Content) -> list[tuple[int, int]]:
    """Byte ranges where damage matters most for this kind of file."""
    size = c.size
    if name.endswith(".wal"):
        used = _used_slots(c)
        end = max((p + 1) * 4096 for p in c.pages) if c.pages else DATA_START
        regions = [(0, max(used, 1) * SLOT_SIZE), (ENC_OFFSET, DATA_START), (DATA_START, max(end, DATA_START + 1))]
        return [(a, min(b, size)) for a, b in regions if a < size]
    if name == "wal.meta":
        return [(0, 40), (512, 560), (1024, 1044), (1044, 1300)]
    return [(0, max(size, 1))]


def _mutate(files: dict[str, Content], muts: list[tuple[str, int, int, int, int]]) -> list[str]:
    """Apply ``muts`` to ``files`` in place; returns a description of what was done."""
    done = []
    for kind, which, region, pos, arg in muts:
        if not files:
            break
        name = sorted(files)[which % len(files)]
        c = files[name]
        if kind == "delete":
            del files[name]
            done.append(f"delete {name}")
            continue
        if kind == "truncate":
            choices = [0, 8, 512, 1044, DATA_START - 1, DATA_START, DATA_START + arg, c.size - arg, pos % (c.size + 1)]
            new = max(0, choices[region % len(choices)])
            if new < c.size:
                c.truncate(new)
                done.append(f"truncate {name} to {new}")
            continue
        if kind == "field":  # a slot or wal.meta field set to an extreme or an off-by-one value
            if name.endswith(".wal"):
                used = _used_slots(c)
                at, width = (pos % (used + 1)) * SLOT_SIZE + (region % 4) * 8, 8
            elif name == "wal.meta":
                at, width = META_FIELDS[region % len(META_FIELDS)]
            else:
                at, width = (pos % max(c.size - 3, 1)), 4
            old_v = int.from_bytes(c.read(at, width).ljust(width, b"\0"), "big")
            values = [0, 1, 1 << 63, (1 << 64) - 1, old_v + 1, old_v - 1, DATA_START, c.size, c.size - 4, 1 << 32]
            v = values[arg % len(values)] % (1 << (8 * width))
            c.write(at, v.to_bytes(width, "big"))
            done.append(f"set {name}@{at} ({width} bytes) from {old_v} to {v}")
            continue
        if kind == "extend":
            data = bytes(arg * 16) if region % 2 else random.Random(pos).randbytes(arg * 16)
            at = c.size if region % 3 else max(c.size, DATA_START + (pos % (4 << 20)))
            c.write(at, data)
            done.append(f"extend {name} by {len(data)} at {at}")
            continue
        regions = (_hot_regions(name, c) if region % 4 else []) or [(0, max(c.size, 1))]
        a, b = regions[pos % len(regions)]
        off = a + (pos // 7) % max(b - a, 1)
        if off >= c.size:
            continue
        old = c.read(off, 1)[0]
        if kind == "flip":
            c.write(off, bytes([old ^ (arg or 1)]))
            done.append(f"flip {name}@{off} ^{arg}")
        elif kind == "zero":
            n = min(arg * 8, c.size - off)
            c.write(off, bytes(n))
            done.append(f"zero {name}@{off}+{n}")
        else:
            n = min(arg, c.size - off)
            c.write(off, random.Random(pos).randbytes(n))
            done.append(f"garbage {name}@{off}+{n}")
    return done


# --- opening and reading --------------------------------------------------------------------------------------
class Hang(Exception):
    pass


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _read_everything(s: DiskStorage) -> int:
    s.initial_state()
    s.hard_state()
    snap = s.snapshot()
    s.checkpoint()
    s.num_entries()
    s.num_log_files()
    s.log_files()
    first, last = s.first_index(), s.last_index()
    if snap.metadata.index:
        assert s.term(snap.metadata.index) == snap.metadata.term
    if last < first:
        return 0
    ents = s.entries(first, last + 1)
    for e in ents:
        assert s.term(e.index) == e.term
        assert isinstance(e, raftpb.Entry)
    lo = first
    while lo <= last:  # as Raft reads: chunks under a size limit
        chunk = s.entries(lo, last + 1, max_size=2000)
        assert chunk and chunk[0].index >= lo
        lo = chunk[-1].index + 1
    return len(ents)


EXPECTED = (CorruptionError, EncryptionKeyError)


def _outcome(fn: Any) -> str:
    try:
        fn()
    except EXPECTED as exc:
        return type(exc).__name__
    return "ok"


def _check_files(files: dict[str, Content], key: bytes | None, base: str, what: str) -> str:
    """Write ``files`` into a fresh scratch directory and ``check_directory`` it (a write too, unless the base is a
    Dgraph directory); anything wrong fails with ``what`` in the message."""
    d = os.path.join(scratch_base(), f"aiowal-fuzz-{uuid.uuid4().hex[:12]}")
    os.makedirs(d)
    try:
        for name, c in files.items():
            c.materialize(os.path.join(d, name))
        try:
            with _alarm(20):
                return check_directory(d, key, not base.startswith("dgraph-"))
        except Exception as exc:
            raise AssertionError(f"{what}: {type(exc).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(d, ignore_errors=True)


def check_directory(d: str, key: bytes | None, write_after: bool) -> str:
    """Open ``d`` read-only and writable and read everything; returns the outcome, raises on anything wrong.
    With ``write_after``, a directory that opens must also take a write that a reopen shows."""
    before = _dir_digest(d)

    def read_only() -> None:
        with DiskStorage.open(d, key=key, read_only=True) as s:
            _read_everything(s)

    try:
        ro = _outcome(read_only)
    except StorageError as exc:
        meta = os.path.join(d, "wal.meta")
        has_wal = any(n.endswith(".wal") for n in os.listdir(d)) or (os.path.exists(meta) and os.path.getsize(meta))
        if has_wal or "not a WAL directory" not in str(exc):
            raise
        ro = "not a WAL directory"
    assert _dir_digest(d) == before, "a read-only open changed the directory"

    def writable() -> None:
        with DiskStorage.open(d, key=key) as s:
            _read_everything(s)

    rw = _outcome(writable)
    if rw == "ok" and write_after:
        # The repaired directory takes a durable write, and a reopen shows it. (A reopen may find damage the first
        # open did not look for: the records of rotated files are checked only once their file is current.)
        e = raftpb.Entry(index=0, data=b"after repair")

        def write() -> None:
            with DiskStorage.open(d, key=key, hard_sync=True) as s:
                last = s.last_index()
                e.index, e.term = last + 1, max(s.hard_state().term, s.term(last) if last else 0, 1)
                s.save(entries=[e])

        rw += ", write " + _outcome(write)
        if e.index:
            with DiskStorage.open(d, key=key, read_only=True) as s:
                assert s.last_index() == e.index
                assert s.entries(e.index, e.index + 1)[0].data == e.data
                _read_everything(s)
    return f"read-only {ro}, writable {rw}"


MUTATION = st.tuples(
    st.sampled_from(["flip", "flip", "field", "field", "zero", "garbage", "truncate", "extend", "delete"]),
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.integers(0, 1 << 30),
    st.integers(0, 255),
)


def corrupted_directories(n: int) -> None:
    t0 = time.monotonic()
    bases = _bases()
    names = sorted(bases)
    outcomes: Counter[str] = Counter()

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(base=st.sampled_from(names), muts=st.lists(MUTATION, min_size=1, max_size=4))
    def one_case(base: str, muts: list[tuple[str, int, int, int, int]]) -> None:
        files = {k: v.copy() for k, v in bases[base][0].items()}
        done = _mutate(files, muts)
        outcomes[_check_files(files, bases[base][1], base, f"{base} after {done}")] += 1

    one_case()
    total = sum(outcomes.values())
    report("corrupted directories opened and read", total, time.monotonic() - t0)
    for outcome, k in sorted(outcomes.items()):
        report(f"  corrupted directories: {outcome}", k, 0)
    assert total >= n * 0.98, outcomes
    # The cases are not vacuous: many are rejected, many still open (repaired or harmlessly damaged).
    assert sum(k for o, k in outcomes.items() if "writable CorruptionError" in o) > n // 20, outcomes
    assert sum(k for o, k in outcomes.items() if "writable ok" in o) > n // 20, outcomes


def test_corrupted_directories() -> None:
    corrupted_directories(1_000)


if SOAK:

    @pytest.mark.soak
    def test_corrupted_directories_soak() -> None:
        corrupted_directories(10_000)


EXTREMES = [0, 1, 1 << 63, (1 << 64) - 1, 1 << 32, (1 << 32) - 1, DATA_START, DATA_START - 16]


def extreme_fields(values: list[int]) -> None:
    """Every u64 of the first, a middle, the last and the first empty slot of every log file, and every field of
    wal.meta, set in turn to extreme values (the systematic complement of the fuzz)."""
    t0 = time.monotonic()
    n = 0
    for bname, (files0, key) in sorted(_bases().items()):
        for fname in sorted(files0):
            if fname.endswith(".wal"):
                used = _used_slots(files0[fname])
                slots = sorted({0, used // 2, max(used - 1, 0), used})
                targets = [(s * SLOT_SIZE + f * 8, 8) for s in slots for f in range(4)]
            elif fname == "wal.meta":
                targets = META_FIELDS
            else:
                continue
            for at, width in targets:
                for v in values:
                    files = {k: c.copy() for k, c in files0.items()}
                    files[fname].write(at, (v % (1 << (8 * width))).to_bytes(width, "big"))
                    _check_files(files, key, bname, f"{bname}: {fname} bytes {at}..{at + width} = {v}")
                    n += 1
    report("directories with a slot or wal.meta field set to an extreme", n, time.monotonic() - t0)


def test_extreme_fields() -> None:
    extreme_fields([0, 1 << 63, (1 << 64) - 1, DATA_START - 16])


if SOAK:

    @pytest.mark.soak
    def test_extreme_fields_soak() -> None:
        extreme_fields(EXTREMES)


@pytest.mark.parametrize("damage", ["wal.meta deleted", "log file garbage"])
def test_a_damaged_directory_that_stands_still_is_reported_at_once(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    """A read-only open retries while a writer changes the directory under it; damage in a directory that does not
    change is reported at the first attempt (a missing wal.meta made every attempt look like a change, and each open
    went through every retry and its back-off)."""
    d = str(tmp_path / "wal")
    with DiskStorage.open(d) as s:
        s.save(entries=[raftpb.Entry(term=1, index=i, data=b"entry %d" % i) for i in range(1, 6)])
    if damage == "wal.meta deleted":
        os.unlink(os.path.join(d, "wal.meta"))
    else:
        with open(os.path.join(d, "00001.wal"), "r+b") as fh:
            fh.write(random.Random(5).randbytes(SLOT_SIZE * 3))
    attempts: list[str] = []
    open_once = DiskStorage._open_once.__func__  # type: ignore[attr-defined]

    def counted(cls: type[DiskStorage], path: str, *args: Any, **kwargs: Any) -> DiskStorage:
        attempts.append(path)
        return open_once(cls, path, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(DiskStorage, "_open_once", classmethod(counted))
    with pytest.raises(CorruptionError):
        DiskStorage.open(d, read_only=True)
    assert len(attempts) == 1
