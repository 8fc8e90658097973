"""``wal.meta``: raft id, group id, checkpoint, HardState and snapshot, in Dgraph's layout.

The fields live in memory; writes go to the file with ``pwrite``. The HardState (offset 512) and the u64 fields
(offset 0) each sit inside one 512-byte sector, so an in-place write of them is all or nothing. A snapshot spans
many sectors, so it is never written in place: the whole file is rewritten to ``wal.meta.tmp`` and renamed over
``wal.meta``, and a crash leaves either the old snapshot or the new one (Dgraph bug B3 cannot happen).
"""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import dataclass

from aiowal.errors import CorruptionError
from aiowal.format import (
    DURABLE_MARK,
    DURABLE_MARK_MAGIC,
    DURABLE_MARK_OFFSET,
    HARD_STATE_MAX,
    HARD_STATE_OFFSET,
    META_EXT,
    META_EXT_MAGIC,
    META_EXT_OFFSET,
    META_FILE_SIZE,
    META_HEADER_END,
    META_NAME,
    META_UINT_OFFSETS,
    SNAPSHOT_INDEX_OFFSET,
    SNAPSHOT_OFFSET,
    U32,
    U64,
    crc32c,
)
from aiowal.fs import FS
from aiowal.raftpb import ConfState, HardState, Snapshot, SnapshotMetadata

log = logging.getLogger(__name__)

META_TMP_NAME = META_NAME + ".tmp"


class MetaInfo(enum.IntEnum):
    """The u64 fields of ``wal.meta`` (Dgraph's ``MetaInfo``)."""

    RAFT_ID = 0
    GROUP_ID = 1
    CHECKPOINT_INDEX = 2
    SNAPSHOT_INDEX = 3
    SNAPSHOT_TERM = 4


def full_hard_state(hs: HardState) -> HardState:
    """A copy with term, vote and commit all present, so they serialize even when zero (as gogo does)."""
    return HardState(term=hs.term, vote=hs.vote, commit=hs.commit)


def full_snapshot(data: bytes | None, index: int, term: int, cs: ConfState) -> Snapshot:
    """A Snapshot whose always-emitted fields (gogo's non-nullable ones) are explicitly present."""
    conf = ConfState()
    conf.CopyFrom(cs)
    conf.auto_leave = cs.auto_leave
    snap = Snapshot(metadata=SnapshotMetadata(conf_state=conf, index=index, term=term))
    if data is not None:
        snap.data = data
    return snap


def normalize_snapshot(snap: Snapshot) -> Snapshot:
    """``snap`` with gogo's always-emitted fields set, keeping ``data`` only if the caller set it."""
    data = snap.data if snap.HasField("data") else None
    return full_snapshot(data, snap.metadata.index, snap.metadata.term, snap.metadata.conf_state)


@dataclass(frozen=True)
class NewMetaFile:
    """A wal.meta written and renamed into place, not yet adopted in memory."""

    fd: int
    size: int
    snapshot: Snapshot
    floor_fid: int
    durable_index: int | None
    mark_lowered: int


class Meta:
    """The open ``wal.meta`` of one directory."""

    def __init__(self, fs: FS, directory: str, fd: int, size: int, writable: bool) -> None:
        self.fs = fs
        self.dir = directory
        self.path = os.path.join(directory, META_NAME)
        self.fd = fd
        self.size = size
        self.writable = writable
        self.uints = [0, 0, 0, 0, 0]
        self.hard_state = HardState()
        self.snapshot = Snapshot()
        self.floor_fid = 0
        # Every entry up to this index was covered by a completed sync (None: no valid mark, e.g. Dgraph's files);
        # mark_lowered counts the times it went down.
        self.durable_index: int | None = None
        self.mark_lowered = 0
        self.repairs: list[str] = []

    # --- opening ----------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, fs: FS, directory: str) -> Meta:
        """A new 1 MiB sparse ``wal.meta`` (all fields zero, the durable mark at 0), synced and made visible by
        rename, so that it is never half made."""
        tmp = os.path.join(directory, META_TMP_NAME)
        fd = fs.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            fs.ftruncate(fd, META_FILE_SIZE)
            meta = cls(fs, directory, fd, META_FILE_SIZE, True)
            meta.store_hard_state(None, 0)
            fs.fsync(fd)
            fs.rename(tmp, os.path.join(directory, META_NAME))
            fs.fsync_dir(directory)
        except BaseException:
            fs.close(fd)
            raise
        return meta

    @classmethod
    def open(cls, fs: FS, directory: str, writable: bool) -> Meta:
        path = os.path.join(directory, META_NAME)
        fd = fs.open(path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            size = fs.size(fd)
            meta = cls(fs, directory, fd, size, writable)
            meta._load(fs.pread(fd, size, 0))
        except BaseException:
            fs.close(fd)
            raise
        return meta

    def _load(self, raw: bytes) -> None:
        if len(raw) < META_HEADER_END:
            raise CorruptionError(f"{self.path}: offset {len(raw)}: wal.meta is shorter than {META_HEADER_END} bytes")
        self.uints = [int(U64.unpack_from(raw, off)[0]) for off in META_UINT_OFFSETS]
        magic, floor = META_EXT.unpack_from(raw, META_EXT_OFFSET)
        self.floor_fid = int(floor) if magic == META_EXT_MAGIC else 0
        hs_len = U32.unpack_from(raw, HARD_STATE_OFFSET)[0]
        if hs_len >= HARD_STATE_MAX:
            raise CorruptionError(f"{self.path}: offset {HARD_STATE_OFFSET}: HardState length {hs_len} >= 512")
        if hs_len:
            try:
                self.hard_state = full_hard_state(
                    HardState.FromString(raw[HARD_STATE_OFFSET + 4 : HARD_STATE_OFFSET + 4 + hs_len])
                )
            except Exception as exc:
                raise CorruptionError(
                    f"{self.path}: offset {HARD_STATE_OFFSET}: cannot parse hardState: {exc}"
                ) from exc
        self.durable_index, self.mark_lowered = _durable_mark(raw, HARD_STATE_OFFSET)
        snap_len = U32.unpack_from(raw, SNAPSHOT_OFFSET)[0]
        if META_HEADER_END + snap_len > len(raw):
            raise CorruptionError(
                f"{self.path}: offset {SNAPSHOT_OFFSET}: snapshot of {snap_len} bytes runs past the end of the file"
            )
        if snap_len:
            try:
                self.snapshot = Snapshot.FromString(raw[META_HEADER_END : META_HEADER_END + snap_len])
            except Exception as exc:
                raise CorruptionError(f"{self.path}: offset {SNAPSHOT_OFFSET}: cannot parse snapshot: {exc}") from exc
        # Dgraph writes the index/term fields before the proto (B3); the proto is the complete record, so it wins.
        md = self.snapshot.metadata
        fields = self.uints[MetaInfo.SNAPSHOT_INDEX], self.uints[MetaInfo.SNAPSHOT_TERM]
        if fields != (md.index, md.term):
            self.repairs.append(
                f"snapshot index/term fields {fields} disagree with the stored snapshot ({md.index}, {md.term})"
            )
            self.uints[MetaInfo.SNAPSHOT_INDEX] = md.index
            self.uints[MetaInfo.SNAPSHOT_TERM] = md.term

    def read_durable_mark(self) -> tuple[int | None, int]:
        """The durable mark and how many times it went down, as wal.meta holds them now: read through its path, as
        another process may be writing it, or have renamed a new one in (a snapshot switch)."""
        fd = self.fs.open(self.path, os.O_RDONLY)
        try:
            raw = self.fs.pread(fd, SNAPSHOT_INDEX_OFFSET - HARD_STATE_OFFSET, HARD_STATE_OFFSET)
        finally:
            self.fs.close(fd)
        return _durable_mark(raw, 0)

    def repair(self) -> None:
        """Write back what ``_load`` corrected in memory."""
        if self.repairs:
            self.fs.pwrite(
                self.fd,
                U64.pack(self.uints[MetaInfo.SNAPSHOT_INDEX]) + U64.pack(self.uints[MetaInfo.SNAPSHOT_TERM]),
                SNAPSHOT_INDEX_OFFSET,
            )
            self.fs.fdatasync(self.fd)

    # --- fields -----------------------------------------------------------------------------------------------
    @property
    def snapshot_index(self) -> int:
        return self.uints[MetaInfo.SNAPSHOT_INDEX]

    @property
    def snapshot_term(self) -> int:
        return self.uints[MetaInfo.SNAPSHOT_TERM]

    def set_uint(self, info: MetaInfo, value: int) -> None:
        self.fs.pwrite(self.fd, U64.pack(value), META_UINT_OFFSETS[info])
        self.uints[info] = value

    def store_hard_state(self, hs: HardState | None, durable_index: int | None) -> None:
        """Write the HardState sector in place (one pwrite of 512 bytes: all or nothing): the HardState record as
        Dgraph writes it (``None``: keep the stored one), and the durable mark (``None``: keep the stored one)."""
        full = self.hard_state if hs is None else full_hard_state(hs)
        durable, lowered = self._moved_mark(durable_index)
        self.fs.pwrite(self.fd, _hard_state_sector(full, durable, lowered), HARD_STATE_OFFSET)
        self.hard_state = full
        self.durable_index, self.mark_lowered = durable, lowered

    def _moved_mark(self, durable_index: int | None) -> tuple[int | None, int]:
        """The mark moved to ``durable_index`` (None: kept), with its count of lowerings."""
        cur = self.durable_index
        if durable_index is None:
            return cur, self.mark_lowered
        return durable_index, self.mark_lowered + (cur is not None and durable_index < cur)

    def write_snapshot_file(self, snap: Snapshot, floor_fid: int | None) -> NewMetaFile:
        """The first step of a snapshot switch: write a copy of wal.meta holding ``snap`` (and optionally a new
        live-file floor, for a snapshot that discards the log: the durable mark then becomes the snapshot's index)
        to a temp file. It must be synced next, then ``install``ed (renamed over wal.meta), then ``adopt``ed in
        memory on the thread that serves reads, so that no reader ever sees half of the switch. The sync comes
        with or without durability: a rename can reach the disk before the data it names, and a power cut would
        then leave an empty wal.meta beside the log files (an unopenable directory)."""
        snap = normalize_snapshot(snap)
        proto = snap.SerializeToString()
        raw = bytearray(self.fs.pread(self.fd, self.size, 0))
        size = max(self.size, META_FILE_SIZE)
        while size - META_HEADER_END < len(proto):  # B2 fixed: the 4-byte length prefix counts too
            size *= 2
        if len(raw) < size:
            raw.extend(bytes(size - len(raw)))
        index, term = snap.metadata.index, snap.metadata.term
        raw[SNAPSHOT_INDEX_OFFSET:SNAPSHOT_OFFSET] = U64.pack(index) + U64.pack(term)
        raw[SNAPSHOT_OFFSET : META_HEADER_END + len(proto)] = U32.pack(len(proto)) + proto
        floor = self.floor_fid if floor_fid is None else floor_fid
        durable, lowered = self._moved_mark(index if floor_fid is not None else None)
        if floor_fid is not None:
            raw[HARD_STATE_OFFSET:SNAPSHOT_INDEX_OFFSET] = _hard_state_sector(self.hard_state, durable, lowered)
        if floor:
            raw[META_EXT_OFFSET : META_EXT_OFFSET + META_EXT.size] = META_EXT.pack(META_EXT_MAGIC, floor)
        used = len(raw.rstrip(b"\0"))
        tmp = os.path.join(self.dir, META_TMP_NAME)
        fd = self.fs.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            self.fs.ftruncate(fd, size)
            self.fs.pwrite(fd, memoryview(raw)[:used], 0)
        except BaseException:
            self.fs.close(fd)
            raise
        return NewMetaFile(fd, size, snap, floor, durable, lowered)

    def install(self) -> None:
        """Rename a synced new wal.meta (``write_snapshot_file``) over the current one."""
        self.fs.rename(os.path.join(self.dir, META_TMP_NAME), self.path)

    def adopt(self, new: NewMetaFile) -> None:
        """The in-memory half of a snapshot switch (see ``write_snapshot_file``): wal.meta is the new file."""
        old, self.fd = self.fd, new.fd
        self.fs.close(old)
        self.size = new.size
        self.snapshot = new.snapshot
        self.floor_fid = new.floor_fid
        self.durable_index, self.mark_lowered = new.durable_index, new.mark_lowered
        self.uints[MetaInfo.SNAPSHOT_INDEX] = new.snapshot.metadata.index
        self.uints[MetaInfo.SNAPSHOT_TERM] = new.snapshot.metadata.term

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            self.fs.close(fd)


def _durable_mark(raw: bytes, sector_at: int) -> tuple[int | None, int]:
    """The durable mark of the HardState sector found at ``sector_at`` in ``raw`` (None unless it is there and
    bound to the HardState record beside it), and its count of lowerings."""
    fields = DURABLE_MARK.unpack_from(raw, sector_at + DURABLE_MARK_OFFSET - HARD_STATE_OFFSET)
    magic, record_crc, durable, lowered = fields
    hs_len = U32.unpack_from(raw, sector_at)[0]
    if magic != DURABLE_MARK_MAGIC or hs_len >= HARD_STATE_MAX:
        return None, 0
    if record_crc != crc32c(raw[sector_at : sector_at + 4 + hs_len]):
        return None, 0
    return int(durable), int(lowered)


def _hard_state_sector(hs: HardState, durable_index: int | None, lowered: int) -> bytes:
    """Bytes 512..1023 of wal.meta: the HardState record (length 0 for an empty one, as Dgraph reads it), zeros,
    and the durable mark bound to that record by its CRC."""
    proto = hs.SerializeToString() if (hs.term or hs.vote or hs.commit) else b""
    record = U32.pack(len(proto)) + proto
    sector = bytearray(SNAPSHOT_INDEX_OFFSET - HARD_STATE_OFFSET)
    sector[: len(record)] = record
    if durable_index is not None:
        mark = DURABLE_MARK.pack(DURABLE_MARK_MAGIC, crc32c(record), durable_index, lowered)
        sector[DURABLE_MARK_OFFSET - HARD_STATE_OFFSET :] = mark
    return bytes(sector)
