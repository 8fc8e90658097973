"""The Raft transport: peers added, moved and removed at runtime, and stopping while a connection attempt fails."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from node_harness import free_ports

from aiowal.node import Transport
from aiowal.raftpb import Message, MessageType


def _msg(to: int, term: int) -> Message:
    m = Message(type=MessageType.MsgHeartbeat, to=to, term=term)
    setattr(m, "from", 1)
    return m


def test_stop_is_not_lost_when_a_connection_attempt_fails_at_the_same_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer's sender cancelled (by ``stop``) just as its connection attempt fails: the cancellation must end the
    sender. (Under ``asyncio.wait_for`` in Python 3.11 the failure won over the cancellation, the sender went back
    to waiting for messages, and ``stop`` waited for it forever.)"""

    async def main() -> None:
        ports = free_ports(2)
        t = Transport(1, {1: ("127.0.0.1", ports[0]), 2: ("127.0.0.1", ports[1])}, lambda m: None)
        await t.start("127.0.0.1", ports[0])
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        attempts = 0

        async def refused(*args: Any, **kwargs: Any) -> Any:
            nonlocal attempts
            attempts += 1
            await gate

        monkeypatch.setattr(asyncio, "open_connection", refused)
        t.send(_msg(2, 1))
        while not attempts:
            await asyncio.sleep(0.001)
        gate.set_exception(ConnectionRefusedError())  # the attempt fails, and in the same turn...
        await asyncio.wait_for(t.stop(), 3.0)  # ...stop cancels the sender

    asyncio.run(main())


def test_peers_added_moved_and_removed_at_runtime() -> None:
    async def main() -> None:
        ports = free_ports(4)
        got: dict[int, list[Message]] = {2: [], 3: []}
        listeners = {
            i: Transport(i, {i: ("127.0.0.1", ports[i - 1])}, got[i].append) for i in (2, 3)
        }  # they only listen
        for i, tr in listeners.items():
            await tr.start("127.0.0.1", ports[i - 1])
        t = Transport(1, {1: ("127.0.0.1", ports[0])}, lambda m: None)
        await t.start("127.0.0.1", ports[0])
        try:
            assert not t.send(_msg(2, 1))  # unknown peer: dropped
            t.set_peer(2, ("127.0.0.1", ports[1]))
            assert t.send(_msg(2, 2))
            await _until(lambda: [m.term for m in got[2]] == [2])
            t.set_peer(2, ("127.0.0.1", ports[2]))  # node 2 now answers at node 3's listener
            assert t.send(_msg(2, 3))
            await _until(lambda: [m.term for m in got[3]] == [3])
            assert t.peers() == {2: ("127.0.0.1", ports[2])}
            t.remove_peer(2)
            assert t.addr_of(2) is None and not t.send(_msg(2, 4))
        finally:
            await t.stop()
            for tr in listeners.values():
                await tr.stop()

    asyncio.run(main())


async def _until(cond: Any, seconds: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not cond():
        assert loop.time() < end
        await asyncio.sleep(0.005)
