"""Snapshot files streamed from a leader to a follower, each over a connection of its own, in chunks.

The sender opens a connection to the follower's Raft port and writes ``MAGIC``, then the ``MsgSnap`` (a
length-prefixed ``raftpb.Message`` whose snapshot holds a ``SnapshotRef``, not the state). The receiver answers with
the offset it already holds (a ``.partial`` file left by an interrupted transfer of the same file, or the whole
file), the sender streams the rest, and the receiver writes it to the partial file with ``aiofiles``, syncs it,
checks the CRC-32C of the whole file, renames it to its final name, syncs the directory, and only then hands the
``MsgSnap`` to Raft and answers ``OK``. A transfer cut short leaves only a ``.partial`` file, which the next one
resumes; one whose checksum does not match deletes it, and the next starts from zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import Callable

import aiofiles
import aiofiles.os
import crc32c

from aiowal.node.snapshots import CHUNK, SnapshotRef, SnapshotStore
from aiowal.raftpb import Message, MessageType

log = logging.getLogger(__name__)

MAGIC = b"SNAP"
"""First bytes of a snapshot connection on a node's Raft port. As a frame length it would exceed the transport's
largest frame, so it never begins a connection of Raft messages."""

_LEN = struct.Struct(">I")
_OFFSET = struct.Struct(">Q")
OK = b"\x00"
BAD_CHECKSUM = b"\x01"
_MAX_HEADER = 64 << 20

_fsync = aiofiles.os.wrap(os.fsync)
_fdatasync = aiofiles.os.wrap(os.fdatasync)


class SnapshotStreamError(Exception):
    """A snapshot transfer that did not complete."""


class SnapshotSender:
    """Streams snapshot files to followers."""

    def __init__(self, chunk: int = CHUNK, timeout: float = 10.0, finish_timeout: float = 120.0) -> None:
        self.chunk = chunk
        self.timeout = timeout
        self.finish_timeout = finish_timeout
        """How long the receiver may take to sync and check the file once it has every byte."""

    async def send(self, addr: tuple[str, int], msg: Message, path: str, ref: SnapshotRef) -> int:
        """Stream the file of ``ref`` (at ``path``) to the node at ``addr``; returns the bytes sent (fewer than its
        size when the receiver resumed a partial file). Raises SnapshotStreamError, OSError or TimeoutError."""
        # asyncio.timeout rather than wait_for throughout: Python 3.11's wait_for can swallow a cancellation.
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(*addr)
        try:
            body = msg.SerializeToString()
            writer.write(MAGIC + _LEN.pack(len(body)) + body)
            async with asyncio.timeout(self.timeout):
                await writer.drain()
                (offset,) = _OFFSET.unpack(await reader.readexactly(_OFFSET.size))
            if offset > ref.size:
                raise SnapshotStreamError(f"the receiver claims {offset} bytes of a {ref.size}-byte snapshot")
            sent = 0
            async with aiofiles.open(path, "rb") as f:
                await f.seek(offset)
                remaining = ref.size - offset
                while remaining:
                    data = await f.read(min(self.chunk, remaining))
                    if not data:
                        raise SnapshotStreamError(f"{path} ended {remaining} bytes early")
                    writer.write(data)
                    async with asyncio.timeout(self.timeout):
                        await writer.drain()
                    remaining -= len(data)
                    sent += len(data)
            async with asyncio.timeout(self.finish_timeout):
                status = await reader.readexactly(1)
            if status != OK:
                raise SnapshotStreamError("the receiver found the file's checksum wrong")
            return sent
        except asyncio.IncompleteReadError as exc:
            raise SnapshotStreamError("the receiver closed the connection") from exc
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class SnapshotReceiver:
    """Takes snapshot connections (after ``MAGIC``) and puts the files in ``store``; ``on_received`` gets each
    ``MsgSnap`` once its file is durable under its final name."""

    def __init__(
        self,
        store: SnapshotStore,
        on_received: Callable[[Message], None],
        *,
        timeout: float = 10.0,
        chunk: int = CHUNK,
        sync_every: int = 64 << 20,
    ) -> None:
        self.store = store
        self.on_received = on_received
        self.timeout = timeout
        self.chunk = chunk
        self.sync_every = sync_every
        """Bytes written between syncs of the partial file: the disk takes the file in steps, not in one burst at
        the end that would hold up every other sync on it (the Raft log's among them)."""
        self.bytes_received = 0
        # The transfer writing each partial file: a newer connection for the same file takes over from an older
        # one (whose sender may be gone without the socket knowing yet).
        self._active: dict[str, tuple[asyncio.Task[None], asyncio.StreamWriter]] = {}

    def active(self) -> set[str]:
        """Partial files being written now."""
        return set(self._active)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One transfer, from just after ``MAGIC``."""
        async with asyncio.timeout(self.timeout):
            (n,) = _LEN.unpack(await reader.readexactly(_LEN.size))
            if n > _MAX_HEADER:
                raise SnapshotStreamError(f"a {n}-byte snapshot header")
            msg = Message.FromString(await reader.readexactly(n))
        if msg.type != MessageType.MsgSnap:
            raise SnapshotStreamError(f"a {MessageType.Name(msg.type)} on a snapshot connection")
        ref = SnapshotRef.decode(msg.snapshot.metadata, msg.snapshot.data)
        name = ref.partial_name
        task = asyncio.current_task()
        assert task is not None
        older = self._active.get(name)
        self._active[name] = (task, writer)
        try:
            if older is not None:
                older[1].close()  # its next read fails; it closes its file before this one opens it
                await asyncio.wait([older[0]])
            await self._receive(reader, writer, msg, ref)
        finally:
            if self._active.get(name, (None,))[0] is task:
                del self._active[name]

    async def _receive(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, msg: Message, ref: SnapshotRef
    ) -> None:
        final, partial = self.store.path(ref), self.store.partial_path(ref)
        if os.path.exists(final):
            writer.write(_OFFSET.pack(ref.size))  # already here: nothing to send
            await writer.drain()
            self.on_received(msg)
            writer.write(OK)
            await writer.drain()
            return
        offset, crc = await self._resume(partial, ref.size)
        writer.write(_OFFSET.pack(offset))
        await writer.drain()
        async with aiofiles.open(partial, "ab" if offset else "wb") as f:
            remaining = ref.size - offset
            unsynced = 0
            while remaining:
                async with asyncio.timeout(self.timeout):
                    data = await reader.readexactly(min(self.chunk, remaining))
                crc = crc32c.crc32c(data, value=crc)
                await f.write(data)
                remaining -= len(data)
                unsynced += len(data)
                self.bytes_received += len(data)
                if unsynced >= self.sync_every:
                    await f.flush()
                    await _fdatasync(f.fileno())
                    unsynced = 0
            await f.flush()
            await _fsync(f.fileno())
        if crc != ref.crc32c:
            log.warning("snapshot %d: checksum mismatch; %s deleted, the next transfer starts over", ref.index, partial)
            await asyncio.to_thread(os.remove, partial)
            writer.write(BAD_CHECKSUM)
            await writer.drain()
            return
        await self.store.publish(partial, ref)
        self.on_received(msg)
        writer.write(OK)
        await writer.drain()

    async def _resume(self, partial: str, size: int) -> tuple[int, int]:
        """(bytes already held, their CRC-32C) of an earlier transfer's partial file; (0, 0) without one."""
        try:
            held = os.path.getsize(partial)
        except FileNotFoundError:
            return 0, 0
        if held > size:
            return 0, 0
        crc = 0
        async with aiofiles.open(partial, "rb") as f:
            while chunk := await f.read(self.chunk):
                crc = crc32c.crc32c(chunk, value=crc)
        return held, crc
