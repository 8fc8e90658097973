"""Dgraph-written directories open in aiowal and read exactly what Dgraph read; replaying their operations in
aiowal gives the same reads and the same wal.meta bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from fixtures import CASES, apply_op, dump, expected_dump, extract, key_of, ops

from aiowal import DiskStorage, EncryptionKeyError
from aiowal.format import (
    DURABLE_MARK,
    DURABLE_MARK_MAGIC,
    DURABLE_MARK_OFFSET,
    META_EXT_MAGIC,
    SLOT,
    SLOT_AREA,
    TYPE_MASK,
    crc32c,
)


def _tree_digest(path: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for name in sorted(os.listdir(path)):
        data = (path / name).read_bytes()
        out[name] = (len(data), hashlib.sha256(data).hexdigest())
    return out


def _allowed(case: str, exp: dict, got: dict, replayed: bool) -> dict:
    """Apply the differences the fixtures README allows."""
    exp = dict(exp)
    # etcd's contract: Term past the last index is ErrUnavailable (Dgraph's empty log says ErrCompacted).
    last = exp["last_index"]
    exp["terms"] = [(i, t, "unavailable" if (i > last and err == "compacted") else err) for i, t, err in exp["terms"]]
    if replayed and exp["snapshot"]["index"]:
        # A snapshot arriving through save() discards the log here (etcd semantics).
        exp["num_entries"] = got["num_entries"]
        exp["num_log_files"] = got["num_log_files"]
    return exp


@pytest.mark.parametrize("case", CASES)
def test_open_dgraph_directory_reads_what_dgraph_read(case: str, tmp_path: Path) -> None:
    d = extract(case, tmp_path)
    before = _tree_digest(d)
    with DiskStorage.open(d, key=key_of(case)) as st:
        got = dump(st)
        assert st.repairs == []
    exp = _allowed(case, expected_dump(case), got, replayed=False)
    assert got == exp
    # Opening (and closing) a valid directory changes no byte of it.
    assert _tree_digest(d) == before


@pytest.mark.parametrize("case", CASES)
def test_open_dgraph_directory_read_only(case: str, tmp_path: Path) -> None:
    d = extract(case, tmp_path)
    with DiskStorage.open(d, key=key_of(case), read_only=True) as st:
        got = dump(st)
    assert got == _allowed(case, expected_dump(case), got, replayed=False)


@pytest.mark.parametrize("case", CASES)
def test_replay_operations_reads_the_same(case: str, tmp_path: Path) -> None:
    d = tmp_path / "replay"
    st = DiskStorage.open(d, key=key_of(case))
    for op in ops(case):
        apply_op(st, op)
    first = dump(st)
    st.close()
    with DiskStorage.open(d, key=key_of(case)) as st:
        again = dump(st)
    assert first == again
    assert again == _allowed(case, expected_dump(case), again, replayed=True)


@pytest.mark.parametrize("case", ["basic", "empty", "rotation", "save_with_snapshot"])
def test_replay_writes_dgraph_bytes(case: str, tmp_path: Path) -> None:
    """wal.meta is byte-identical; log files are too, except the CRC aiowal keeps in each slot's high type bits
    (which Dgraph reads as int32 and so never sees)."""
    d = tmp_path / "replay"
    with DiskStorage.open(d) as st:
        for op in ops(case):
            apply_op(st, op)
    ref = extract(case, tmp_path)
    ours_meta, ref_meta = (d / "wal.meta").read_bytes(), (ref / "wal.meta").read_bytes()
    # aiowal's durable mark sits in the end of the HardState's sector, which Dgraph never reads (it reads the
    # length-prefixed proto at 512); it is bound to that HardState record by its CRC.
    magic, record_crc, durable, _ = DURABLE_MARK.unpack_from(ours_meta, DURABLE_MARK_OFFSET)
    hs_len = int.from_bytes(ours_meta[512:516], "big")
    assert (magic, record_crc) == (DURABLE_MARK_MAGIC, crc32c(ours_meta[512 : 516 + hs_len]))
    assert durable == expected_dump(case)["last_index"]
    assert ref_meta[DURABLE_MARK_OFFSET : DURABLE_MARK_OFFSET + DURABLE_MARK.size] == bytes(DURABLE_MARK.size)
    mark = slice(DURABLE_MARK_OFFSET, DURABLE_MARK_OFFSET + DURABLE_MARK.size)
    ours_meta = ours_meta[: mark.start] + bytes(DURABLE_MARK.size) + ours_meta[mark.stop :]
    if case == "save_with_snapshot":
        # aiowal discards the log on a snapshot through save(): it records the first live log file in bytes
        # 24..39, which Dgraph never reads, and its log files differ by design.
        assert ours_meta[24:32] == META_EXT_MAGIC
        assert ours_meta[:24] + ours_meta[40:] == ref_meta[:24] + ref_meta[40:]
        return
    assert ours_meta == ref_meta
    ours = sorted(p.name for p in d.glob("*.wal"))
    assert ours == sorted(p.name for p in ref.glob("*.wal"))
    for name in ours:
        a, b = (d / name).read_bytes(), (ref / name).read_bytes()
        assert len(a) == len(b)
        masked = bytearray(a[:SLOT_AREA])
        for off in range(0, SLOT_AREA, 32):
            term, index, data_off, word = SLOT.unpack_from(masked, off)
            SLOT.pack_into(masked, off, term, index, data_off, word & TYPE_MASK)
        assert bytes(masked) == b[:SLOT_AREA]
        assert a[SLOT_AREA:] == b[SLOT_AREA:]


def test_encrypted_fixture_needs_the_key(tmp_path: Path) -> None:
    d = extract("encrypted_basic", tmp_path)
    with pytest.raises(EncryptionKeyError, match="encryption key is nil"):
        DiskStorage.open(d)
    with pytest.raises(EncryptionKeyError, match="Encryption key mismatch"):
        DiskStorage.open(d, key=b"other16byteskeys")
    with pytest.raises(EncryptionKeyError):
        DiskStorage.open(d, key=b"short")
