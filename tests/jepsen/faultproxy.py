"""TCP proxies between cluster nodes that can cut or stall each one-way link: network partitions without root.

Each node reaches each peer through its own proxy (node i's connections to j go through ``links[i, j]``); Raft opens
its own connection per direction, so one proxy carries one direction of one pair. A link is ``up`` (bytes flow),
``down`` (connections are cut and new ones closed at once, as an unreachable host) or ``stalled`` (connections stay
open but nothing moves: the sender's buffers fill, and what was held flows late once the link is up again).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Literal

Mode = Literal["up", "down", "stalled"]
Addr = tuple[str, int]


class Link:
    """A proxy for one direction between two nodes."""

    def __init__(self, target: Addr) -> None:
        self.target = target
        self.mode: Mode = "up"
        self.port = 0
        self.forwarded = 0
        """Bytes carried so far, both ways."""
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # the pumps
        self._handlers: set[asyncio.Task[None]] = set()  # one per accepted connection

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def set(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "up":
            self._flowing.set()
            return
        self._flowing.clear()
        if mode == "down":
            for w in list(self._conns):
                w.transport.abort()
            for t in list(self._tasks):
                t.cancel()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._forward(client_r, client_w)
        finally:
            self._handlers.discard(task)

    async def _forward(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.mode == "down":
            client_w.transport.abort()
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        if self.mode == "down":  # cut while connecting
            client_w.transport.abort()
            server_w.transport.abort()
            return
        self._conns |= {client_w, server_w}
        pumps = [
            asyncio.ensure_future(self._pump(client_r, server_w)),
            asyncio.ensure_future(self._pump(server_r, client_w)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in pumps:
                t.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            self._conns -= {client_w, server_w}
            client_w.transport.abort()
            server_w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                await self._flowing.wait()
                data = await reader.read(1 << 16)
                if not data:
                    return
                await self._flowing.wait()  # stalled while reading: hold the bytes until the link is up
                if self.mode == "down":
                    return
                writer.write(data)
                self.forwarded += len(data)
                await writer.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._conns):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=1.0)


class Network:
    """One ``Link`` per ordered pair of nodes, and the faults expressed on them."""

    def __init__(self, raft: dict[int, Addr]) -> None:
        self.ids = sorted(raft)
        self.links = {(i, j): Link(raft[j]) for i in self.ids for j in self.ids if i != j}

    async def start(self) -> dict[int, dict[int, Addr]]:
        """Start the proxies; returns routes[i][j], where node i must send to reach node j."""
        for link in self.links.values():
            await link.start()
        return {i: {j: ("127.0.0.1", self.links[i, j].port) for j in self.ids if j != i} for i in self.ids}

    def cut(self, pairs: Iterable[tuple[int, int]], mode: Mode = "down") -> None:
        """Cut (or stall) the given one-way links."""
        for pair in pairs:
            self.links[pair].set(mode)

    def partition(self, *sides: Iterable[int], mode: Mode = "down") -> None:
        """Nodes talk only within their side; a node on no side is cut from everyone."""
        side_of = {n: k for k, side in enumerate(sides) for n in side}
        self.cut(((i, j) for i, j in self.links if side_of.get(i, -1 - i) != side_of.get(j, -1 - j)), mode)

    def heal(self) -> None:
        for link in self.links.values():
            link.set("up")

    def modes(self) -> dict[tuple[int, int], Mode]:
        return {pair: link.mode for pair, link in self.links.items()}

    async def close(self) -> None:
        for link in self.links.values():
            await link.close()
