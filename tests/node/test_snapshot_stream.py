"""Snapshot files streamed between nodes: whole transfers, transfers cut short and resumed, partial files with the
wrong bytes, files already there, a newer connection taking over from a stalled one, and which files the store
keeps."""

from __future__ import annotations

import asyncio
import os
import random
import struct
from pathlib import Path

import pytest
from node_harness import free_ports

from aiowal.node import Member, SnapshotRef, SnapshotStreamError, Transport
from aiowal.node.snapshots import SnapshotStore
from aiowal.node.snapstream import MAGIC, SnapshotReceiver, SnapshotSender
from aiowal.raftpb import ConfState, Message, MessageType, SnapshotMetadata

CHUNK = 256 << 10


class Pair:
    """A sender's store holding one sealed snapshot file, and a receiver listening on a Raft transport."""

    def __init__(self, root: Path, size: int) -> None:
        self.src = SnapshotStore(str(root / "src"))
        self.dst = SnapshotStore(str(root / "dst"))
        self.data = random.Random(size).randbytes(size)
        self.received: list[Message] = []
        self.receiver = SnapshotReceiver(self.dst, self.received.append, chunk=CHUNK, timeout=5.0)
        self.sender = SnapshotSender(chunk=CHUNK, timeout=5.0)
        self.port = free_ports(1)[0]
        self.transport = Transport(2, {2: ("127.0.0.1", self.port)}, lambda m: None)
        self.transport.on_snapshot_stream = self.receiver.serve

    async def start(self) -> None:
        self.src.prepare()
        self.dst.prepare()
        tmp = self.src.tmp_path(40)
        Path(tmp).write_bytes(self.data)
        self.ref = await self.src.seal(tmp, 40, 3, {4: Member(("127.0.0.1", 9), {"http": "h:1"})})
        self.msg = Message(type=MessageType.MsgSnap, to=2, term=3)
        setattr(self.msg, "from", 1)
        self.msg.snapshot.metadata.CopyFrom(SnapshotMetadata(index=40, term=3, conf_state=ConfState(voters=[1, 2])))
        self.msg.snapshot.data = self.ref.encode()
        await self.transport.start("127.0.0.1", self.port)

    async def send(self) -> int:
        return await self.sender.send(("127.0.0.1", self.port), self.msg, self.src.path(self.ref), self.ref)

    async def send_part(self, n: int, stall: bool = False) -> tuple[int, asyncio.StreamWriter]:
        """A sender that sends ``n`` bytes of the file (from the offset the receiver asks for) and then dies, or
        stalls with its connection open. Returns the offset the receiver asked for, and the connection."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        body = self.msg.SerializeToString()
        writer.write(MAGIC + struct.pack(">I", len(body)) + body)
        (offset,) = struct.unpack(">Q", await reader.readexactly(8))
        writer.write(self.data[offset : offset + n])
        await writer.drain()
        if not stall:
            writer.close()
        return offset, writer

    def files(self) -> list[str]:
        return sorted(os.listdir(self.dst.dir))

    async def until_idle(self) -> None:
        for _ in range(500):
            if not self.receiver.active():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the receiver never finished")

    async def close(self) -> None:
        await self.transport.stop()


def run(root: Path, size: int, body: object) -> None:
    async def main() -> None:
        pair = Pair(root, size)
        await pair.start()
        try:
            await body(pair)  # type: ignore[operator]
        finally:
            await pair.close()

    asyncio.run(main())


def test_a_file_streams_whole_and_lands_under_its_final_name(tmp_path: Path) -> None:
    async def body(p: Pair) -> None:
        assert await p.send() == len(p.data)
        assert p.files() == [p.ref.name]
        assert Path(p.dst.path(p.ref)).read_bytes() == p.data
        assert [m.snapshot.metadata.index for m in p.received] == [40]
        got = SnapshotRef.decode(p.received[0].snapshot.metadata, p.received[0].snapshot.data)
        assert got == p.ref and got.members[4].meta == {"http": "h:1"}
        assert p.receiver.bytes_received == len(p.data)

    run(tmp_path, 3 * CHUNK + 1000, body)


def test_an_interrupted_transfer_resumes_where_it_stopped(tmp_path: Path) -> None:
    async def body(p: Pair) -> None:
        offset, _ = await p.send_part(2 * CHUNK + 10)
        assert offset == 0
        await p.until_idle()
        # Only a partial file: nothing was handed to Raft, and no file has the snapshot's final name.
        assert p.files() == [p.ref.partial_name] and not p.received
        held = os.path.getsize(p.dst.partial_path(p.ref))
        assert 2 * CHUNK <= held <= 2 * CHUNK + 10
        assert await p.send() == len(p.data) - held
        assert p.files() == [p.ref.name]
        assert Path(p.dst.path(p.ref)).read_bytes() == p.data
        assert len(p.received) == 1

    run(tmp_path, 5 * CHUNK, body)


def test_a_partial_file_with_wrong_bytes_is_discarded_and_the_next_transfer_starts_over(tmp_path: Path) -> None:
    async def body(p: Pair) -> None:
        Path(p.dst.partial_path(p.ref)).write_bytes(b"\xff" * CHUNK)  # not the start of this file
        with pytest.raises(SnapshotStreamError, match="checksum"):
            await p.send()
        assert p.files() == [] and not p.received
        assert await p.send() == len(p.data)
        assert Path(p.dst.path(p.ref)).read_bytes() == p.data
        assert len(p.received) == 1

    run(tmp_path, 3 * CHUNK, body)


def test_a_partial_file_longer_than_the_snapshot_is_started_over(tmp_path: Path) -> None:
    async def body(p: Pair) -> None:
        Path(p.dst.partial_path(p.ref)).write_bytes(b"\0" * (len(p.data) + 1))
        assert await p.send() == len(p.data)
        assert Path(p.dst.path(p.ref)).read_bytes() == p.data

    run(tmp_path, 2 * CHUNK, body)


def test_a_file_already_here_is_not_sent_again(tmp_path: Path) -> None:
    async def body(p: Pair) -> None:
        await p.send()
        assert await p.send() == 0
        assert len(p.received) == 2  # Raft is told again: the leader's earlier report may have been lost

    run(tmp_path, CHUNK, body)


def test_a_newer_connection_takes_over_from_a_stalled_one(tmp_path: Path) -> None:
    async def body(p: Pair) -> None:
        _, stalled = await p.send_part(CHUNK, stall=True)
        for _ in range(500):
            if p.receiver.bytes_received >= CHUNK:
                break
            await asyncio.sleep(0.01)
        assert p.receiver.bytes_received == CHUNK
        assert await p.send() == len(p.data) - CHUNK  # it resumed from what the stalled one delivered
        assert Path(p.dst.path(p.ref)).read_bytes() == p.data
        assert len(p.received) == 1
        stalled.close()

    run(tmp_path, 4 * CHUNK, body)


def test_the_store_keeps_the_stored_snapshot_newer_partials_and_pinned_files(tmp_path: Path) -> None:
    async def main() -> None:
        store = SnapshotStore(str(tmp_path))
        store.prepare()

        def ref(index: int) -> SnapshotRef:
            return SnapshotRef(index, 2, 1, index)

        for i in (10, 20, 30):
            Path(store.path(ref(i))).write_bytes(b"x")
        for i in (15, 25):
            Path(store.partial_path(ref(i))).write_bytes(b"x")
        Path(tmp_path / "unrelated.txt").write_bytes(b"x")
        tmp = store.tmp_path(35)
        Path(tmp).write_bytes(b"x")
        store.pin(store.path(ref(10)))
        await store.collect(ref(20))
        # Kept: the pinned file (a transfer reads it), the stored snapshot, the partial of a newer snapshot (it may
        # be resumed), a snapshot being written, and anything that is not a snapshot file.
        kept = [ref(10).name, ref(20).name, ref(25).partial_name, "unrelated.txt", os.path.basename(tmp)]
        assert sorted(os.listdir(tmp_path)) == sorted(kept)
        store.unpin(store.path(ref(10)))
        await store.collect(ref(20))
        assert ref(10).name not in os.listdir(tmp_path)
        store.prepare()  # a restart: what an interrupted local snapshot left is deleted
        assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]

    asyncio.run(main())
