"""A node's snapshot files: the reference that stands for one in the Raft log's snapshot, and the directory that
holds them (names, sealing a freshly written file, partial files of transfers, what may be deleted).

A snapshot file is the state machine's own serialization at one index. It is named after its index, term and
CRC-32C, so that two files for the same index written by different nodes never pass for each other. The Raft
snapshot stored in the log and sent in ``MsgSnap`` holds only a ``SnapshotRef`` (size, checksum, the members'
addresses as of that index), never the state itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import crc32c

from aiowal.node.members import Member, members_from_json, members_to_json
from aiowal.raftpb import SnapshotMetadata

log = logging.getLogger(__name__)

CHUNK = 1 << 20
"""Bytes read or written at a time when sealing, resuming and streaming snapshot files."""

_SNAP = re.compile(r"^(\d{20})-(\d{20})-([0-9a-f]{8})\.(snap|partial)$")


class SnapshotFileError(Exception):
    """A snapshot reference that cannot be read, or the file it names is missing."""


@dataclass(frozen=True)
class SnapshotRef:
    """What the Raft snapshot's ``data`` holds: the file's size and CRC-32C, and the members' addresses learned
    through configuration changes up to ``index``."""

    index: int
    term: int
    size: int
    crc32c: int
    members: Mapping[int, Member] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.index:020d}-{self.term:020d}-{self.crc32c:08x}.snap"

    @property
    def partial_name(self) -> str:
        return f"{self.index:020d}-{self.term:020d}-{self.crc32c:08x}.partial"

    def encode(self) -> bytes:
        d = {"size": self.size, "crc32c": self.crc32c, "members": members_to_json(self.members)}
        return json.dumps(d, sort_keys=True).encode()

    @classmethod
    def decode(cls, meta: SnapshotMetadata, data: bytes) -> SnapshotRef:
        try:
            d = json.loads(data)
            return cls(meta.index, meta.term, int(d["size"]), int(d["crc32c"]), members_from_json(d["members"]))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SnapshotFileError(f"snapshot {meta.index}: its data is not a snapshot file reference") from exc


def _seal(path: str) -> tuple[int, int]:
    """(size, CRC-32C) of a file just written, once it is on disk. Runs in a worker thread."""
    crc = 0
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            crc = crc32c.crc32c(chunk, value=crc)
            size += len(chunk)
        os.fsync(f.fileno())
    return size, crc


def _sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SnapshotStore:
    """One directory of snapshot files. Sealed files end in ``.snap``; ``.partial`` files are transfers in progress
    (kept across restarts, so that a transfer can resume); ``.tmp`` files are snapshots being written here."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self._pins: Counter[str] = Counter()
        self._tmp_seq = 0

    def prepare(self) -> None:
        """Create the directory; delete what an interrupted local snapshot left (a ``.tmp`` file is never used)."""
        os.makedirs(self.dir, exist_ok=True)
        for name in os.listdir(self.dir):
            if name.endswith(".tmp"):
                os.unlink(os.path.join(self.dir, name))

    def path(self, ref: SnapshotRef) -> str:
        return os.path.join(self.dir, ref.name)

    def partial_path(self, ref: SnapshotRef) -> str:
        return os.path.join(self.dir, ref.partial_name)

    def tmp_path(self, index: int) -> str:
        self._tmp_seq += 1
        return os.path.join(self.dir, f"{index:020d}-{os.getpid()}-{self._tmp_seq}.tmp")

    def require(self, ref: SnapshotRef) -> str:
        """The path of ``ref``'s file; SnapshotFileError if it is not there with its size."""
        path = self.path(ref)
        try:
            size = os.path.getsize(path)
        except OSError as exc:
            raise SnapshotFileError(f"snapshot {ref.index}: {path} is missing") from exc
        if size != ref.size:
            raise SnapshotFileError(f"snapshot {ref.index}: {path} holds {size} bytes, not {ref.size}")
        return path

    async def seal(self, tmp: str, index: int, term: int, members: Mapping[int, Member]) -> SnapshotRef:
        """Sync a file the state machine has written, checksum it and rename it to its final name."""
        size, crc = await asyncio.to_thread(_seal, tmp)
        ref = SnapshotRef(index, term, size, crc, dict(members))
        await asyncio.to_thread(os.replace, tmp, self.path(ref))
        await asyncio.to_thread(_sync_dir, self.dir)
        return ref

    async def publish(self, partial: str, ref: SnapshotRef) -> None:
        """A received file, synced and checked: give it its final name, durably."""
        await asyncio.to_thread(os.replace, partial, self.path(ref))
        await asyncio.to_thread(_sync_dir, self.dir)

    def pin(self, path: str) -> None:
        """Keep ``path`` from being collected while it is read (a transfer to a follower)."""
        self._pins[os.path.basename(path)] += 1

    def unpin(self, path: str) -> None:
        name = os.path.basename(path)
        self._pins[name] -= 1
        if self._pins[name] <= 0:
            del self._pins[name]

    async def collect(self, stored: SnapshotRef | None, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Delete sealed files other than the stored snapshot's, those in ``keep`` and those pinned, and partial
        files of snapshots no newer than the stored one (a newer one may still be resumed)."""
        floor = stored.index if stored is not None else 0
        for name in await asyncio.to_thread(os.listdir, self.dir):
            m = _SNAP.match(name)
            if m is None or name in keep or name in self._pins:
                continue
            if (stored is not None and name == stored.name) or (m.group(4) == "partial" and int(m.group(1)) > floor):
                continue
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(os.remove, os.path.join(self.dir, name))
