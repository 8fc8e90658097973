"""Dgraph raftwal byte layout: constants and pure pack/unpack helpers (no I/O).

A log file (``NNNNN.wal``) holds 30,000 32-byte slots (term, index, data offset, type; u64 big-endian), an
encryption header at 1 MiB - 16, and data records (u32 BE length + payload) from 1 MiB on. aiowal stores a
CRC32C of each record in the high 32 bits of the slot's type word: Dgraph reads the type as ``int32(u64)``, so it
never sees them, and a slot whose data did not reach the disk is detected on open.
"""

from __future__ import annotations

import struct
from typing import Final

import crc32c as _crc32c

MAX_ENTRIES: Final = 30_000
SLOT_SIZE: Final = 32
SLOT_AREA: Final = MAX_ENTRIES * SLOT_SIZE  # 960,000
DATA_START: Final = 1 << 20  # logFileOffset
ENC_OFFSET: Final = DATA_START - 16  # keyID u64 BE, then 8 bytes of base IV
LOG_FILE_SIZE: Final = 256 << 20
MAX_DATA_END: Final = 1 << 30  # rotate when offset + 4 + len would pass 1 GiB
MAX_GROWTH: Final = 1 << 30

META_NAME: Final = "wal.meta"
META_FILE_SIZE: Final = 1 << 20
META_UINT_OFFSETS: Final = (0, 8, 16, 1024, 1032)  # RaftId, GroupId, CheckpointIndex, SnapshotIndex/Term
HARD_STATE_OFFSET: Final = 512
HARD_STATE_MAX: Final = 512  # the HardState proto must be shorter than this
SNAPSHOT_INDEX_OFFSET: Final = 1024
SNAPSHOT_TERM_OFFSET: Final = 1032
SNAPSHOT_OFFSET: Final = 1040
META_HEADER_END: Final = SNAPSHOT_OFFSET + 4

# aiowal's own meta field, in bytes Dgraph never reads (24..511): a magic and the lowest live log file id.
# Files with a smaller id were discarded by a snapshot that arrived through save(); see docs/durability.md.
META_EXT_OFFSET: Final = 24
META_EXT_MAGIC: Final = b"AIOWAL\x00\x01"
META_EXT = struct.Struct(">8sQ")

# aiowal's durable mark, in the free end of the HardState's sector (Dgraph reads only the length-prefixed proto at
# 512): every entry up to ``index`` was covered by a completed sync, and ``lowered`` counts the times the mark went
# down (an overwrite, a snapshot through save), which a read-only view beside the writer watches. It is written in
# one pwrite with the HardState record and carries a CRC32C of that record, so a HardState written later by Dgraph
# voids it.
DURABLE_MARK_OFFSET: Final = 1000
DURABLE_MARK_MAGIC: Final = b"AWDM"
DURABLE_MARK = struct.Struct(">4sIQQ")  # magic, CRC32C of the HardState record (length + proto), index, lowered

LOG_SUFFIX: Final = ".wal"
KEY_REGISTRY_NAME: Final = "KEYREGISTRY"
KEY_REGISTRY_REWRITE_NAME: Final = "REWRITE-KEYREGISTRY"

SLOT = struct.Struct(">QQQQ")
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
CRC_HEADER = struct.Struct(">QQQII")  # term, index, offset, type, length: what a record's CRC covers first
ENC_HEADER = struct.Struct(">Q8s")

UNLIMITED: Final = 1 << 62  # a read budget that never runs out
TYPE_MASK: Final = 0xFFFF_FFFF


def log_file_name(fid: int) -> str:
    """``%05d.wal`` of a file id, as Dgraph names log files."""
    return f"{fid:05d}{LOG_SUFFIX}"


def parse_log_file_name(name: str) -> int | None:
    """The file id of a canonical log file name, or None for any other name."""
    if not name.endswith(LOG_SUFFIX):
        return None
    stem = name[: -len(LOG_SUFFIX)]
    if not stem.isdigit() or not stem.isascii():
        return None
    fid = int(stem)
    return fid if log_file_name(fid) == name else None


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC32-Castagnoli of ``data``, continuing from ``value``."""
    return int(_crc32c.crc32c(data, value))


def record_crc(term: int, index: int, offset: int, etype: int, stored: bytes | memoryview) -> int:
    """The CRC32C kept in a slot: over the slot fields, the record length and the stored (maybe encrypted) bytes."""
    head = CRC_HEADER.pack(term, index, offset, etype & TYPE_MASK, len(stored))
    return int(_crc32c.crc32c(stored, _crc32c.crc32c(head)))


def type_word(etype: int, crc: int) -> int:
    """The slot's u64 type field: the entry type below, the record CRC in the high 32 bits."""
    return (crc << 32) | (etype & TYPE_MASK)


def signed_type(etype: int) -> int:
    """The entry type as Dgraph reads it: ``int32`` of the low 32 bits."""
    return etype - (1 << 32) if etype & 0x8000_0000 else etype


def _varint_len(v: int) -> int:
    return (max(v.bit_length(), 1) + 6) // 7


def entry_size(term: int, index: int, etype: int, data_len: int) -> int:
    """Go's ``raftpb.Entry.Size()``: term, index and type always counted, data only when not empty."""
    size = 3 + _varint_len(term) + _varint_len(index) + _varint_len(etype & 0xFFFF_FFFF_FFFF_FFFF)
    if data_len:
        size += 1 + _varint_len(data_len) + data_len
    return size


def grown_size(current: int, needed_end: int) -> int:
    """Dgraph's growth rule: grow by min(current, 1 GiB), and at least to ``needed_end``."""
    return max(current + min(current, MAX_GROWTH), needed_end)
