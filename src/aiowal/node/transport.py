"""Raft messages between peers over asyncio TCP: length-prefixed ``raftpb.Message`` frames.

Each peer has a bounded outgoing queue drained by its own sender task, which connects lazily and reconnects with
backoff. ``send`` never blocks: when a peer is slow or dead its queue fills and further messages to it are dropped
(Raft retransmits), so one bad peer never stalls the node. Peers come and go at runtime (``set_peer``,
``remove_peer``) as the configuration changes. A connection that opens with ``snapstream.MAGIC`` carries a snapshot
file instead of messages and is handed to ``on_snapshot_stream``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable

from aiowal.node.snapstream import MAGIC
from aiowal.raftpb import Message

log = logging.getLogger(__name__)

_FRAME = struct.Struct(">I")
MAX_FRAME = 256 << 20


class _Peer:
    def __init__(self, transport: Transport, peer_id: int, addr: tuple[str, int], queue_size: int) -> None:
        self.transport = transport
        self.id = peer_id
        self.addr = addr
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_size)
        self.task: asyncio.Task[None] | None = None
        self.dropped = 0

    async def run(self) -> None:
        backoff = self.transport.min_backoff
        while True:
            frame = await self.queue.get()
            try:
                # asyncio.timeout, not wait_for: under Python 3.11's wait_for a failed connect arriving with a
                # cancellation (``stop``) swallowed the cancellation and the sender ran on.
                async with asyncio.timeout(self.transport.connect_timeout):
                    _, writer = await asyncio.open_connection(*self.addr)
            except (OSError, TimeoutError):
                self.transport.unreachable(self.id)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.transport.max_backoff)
                continue
            backoff = self.transport.min_backoff
            try:
                while True:
                    # Everything queued goes out in one write (one send syscall, and the peer reads it in one go).
                    if self.queue.empty():
                        writer.write(frame)
                    else:
                        frames = [frame]
                        while not self.queue.empty():
                            frames.append(self.queue.get_nowait())
                        writer.write(b"".join(frames))
                    await writer.drain()
                    frame = await self.queue.get()
            except (OSError, ConnectionError):
                self.transport.unreachable(self.id)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


class Transport:
    """Sends to and receives from the peers of one node."""

    def __init__(
        self,
        node_id: int,
        peers: dict[int, tuple[str, int]],
        on_message: Callable[[Message], None],
        *,
        on_unreachable: Callable[[int], None] | None = None,
        on_snapshot_stream: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]] | None = None,
        queue_size: int = 4096,
        min_backoff: float = 0.02,
        max_backoff: float = 1.0,
        connect_timeout: float = 1.0,
    ) -> None:
        self.node_id = node_id
        self.on_message = on_message
        self.on_unreachable = on_unreachable
        self.on_snapshot_stream = on_snapshot_stream
        self.queue_size = queue_size
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self._peers = {pid: _Peer(self, pid, addr, queue_size) for pid, addr in peers.items() if pid != node_id}
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self, host: str, port: int) -> None:
        """Listen for peers and start one sender task per peer."""
        self._server = await asyncio.start_server(self._serve, host, port)
        for peer in self._peers.values():
            peer.task = asyncio.get_running_loop().create_task(peer.run(), name=f"raft-send-{peer.id}")

    def set_peer(self, peer_id: int, addr: tuple[str, int]) -> None:
        """Reach ``peer_id`` at ``addr`` from now on (a new peer, or one that moved)."""
        if peer_id == self.node_id:
            return
        old = self._peers.get(peer_id)
        if old is not None:
            if old.addr == addr:
                return
            self.remove_peer(peer_id)
        peer = _Peer(self, peer_id, addr, self.queue_size)
        self._peers[peer_id] = peer
        if self._server is not None:
            peer.task = asyncio.get_running_loop().create_task(peer.run(), name=f"raft-send-{peer_id}")

    def remove_peer(self, peer_id: int) -> None:
        """Stop sending to ``peer_id`` (messages queued for it are dropped)."""
        peer = self._peers.pop(peer_id, None)
        if peer is not None and peer.task is not None:
            peer.task.cancel()

    def addr_of(self, peer_id: int) -> tuple[str, int] | None:
        peer = self._peers.get(peer_id)
        return peer.addr if peer is not None else None

    def peers(self) -> dict[int, tuple[str, int]]:
        return {pid: p.addr for pid, p in self._peers.items()}

    def send(self, msg: Message) -> bool:
        """Queue ``msg`` for its destination; False (dropped) if that peer's queue is full or the peer is unknown."""
        peer = self._peers.get(msg.to)
        if peer is None:
            return False
        body = msg.SerializeToString()
        try:
            peer.queue.put_nowait(_FRAME.pack(len(body)) + body)
        except asyncio.QueueFull:
            peer.dropped += 1
            return False
        return True

    def unreachable(self, peer_id: int) -> None:
        if self.on_unreachable is not None:
            self.on_unreachable(peer_id)

    def dropped(self) -> dict[int, int]:
        return {pid: p.dropped for pid, p in self._peers.items()}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        try:
            head = await reader.readexactly(_FRAME.size)
            if head == MAGIC:
                if self.on_snapshot_stream is not None:
                    await self.on_snapshot_stream(reader, writer)
                return
            while True:
                (n,) = _FRAME.unpack(head)
                if n > MAX_FRAME:
                    log.warning("node %d: dropping a connection that sent a %d-byte frame", self.node_id, n)
                    return
                msg = Message.FromString(await reader.readexactly(n))
                self.on_message(msg)
                head = await reader.readexactly(_FRAME.size)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, TimeoutError):
            pass
        except Exception:
            log.exception("node %d: bad input from a peer", self.node_id)
        finally:
            self._conns.pop(task, None)
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        senders = [p.task for p in self._peers.values() if p.task is not None]
        for t in senders:
            t.cancel()
        # Incoming connections end on EOF once their sockets are closed (cancelling them makes asyncio's
        # server callback log the cancellation).
        conns = list(self._conns)
        for writer in self._conns.values():
            writer.close()
        await asyncio.gather(*senders, return_exceptions=True)
        if conns:
            await asyncio.wait(conns, timeout=1.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
