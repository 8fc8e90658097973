"""The recording client classifies what it sees as the checker needs: answered writes are ok, writes refused before
being sent or answered "not leader" are retried elsewhere (and failed if none takes them), any other end of a write is
unknown and never resent, and reads retry through anything. Scripted fake nodes play each case."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable

from kvclients import KVClient, Recorder, new_session

Reply = tuple[int, dict[str, object]] | None
"""What a fake node does with a request: answer (status, JSON body), or None to cut the connection unanswered."""


class FakeNode:
    def __init__(self, script: Callable[[int, str, str], Reply]) -> None:
        self.script = script
        self.requests: list[tuple[str, str, bytes]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> FakeNode:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        method, path, _ = head.split(" ", 2)
        length = next((int(h.split(":")[1]) for h in head.split("\r\n") if h.lower().startswith("content-length")), 0)
        body = await reader.readexactly(length)
        self.requests.append((method, path, body))
        reply = self.script(len(self.requests), method, path)
        if reply is None:
            writer.transport.abort()
            return
        status, obj = reply
        data = json.dumps(obj).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def client_for(*nodes: FakeNode | int, deadline: float = 2.0) -> tuple[KVClient, Recorder]:
    addrs = {i + 1: ("127.0.0.1", n if isinstance(n, int) else n.port) for i, n in enumerate(nodes)}
    rec = Recorder()
    return KVClient(0, new_session(), addrs, rec, request_timeout=1.0, deadline=deadline), rec


async def test_write_cut_after_sending_is_unknown_and_not_resent() -> None:
    # The first two requests are cut unanswered, any later one would be taken: a resend would show as an extra
    # request (and could turn "unknown" into "ok" for a write that then happens twice).
    node = await FakeNode(lambda n, m, p: None if n <= 2 else (200, {"ok": True, "index": n})).start()
    client, _ = await client_for(node)
    try:
        op = await client.put("k", "v")
        assert (op.outcome, op.node) == ("unknown", 1)
        assert node.requests == [("PUT", "/kv/k", b"v")]
        op = await client.delete("k")
        assert op.outcome == "unknown"
        assert node.requests[1] == ("DELETE", "/kv/k", b"")
        assert len(node.requests) == 2
    finally:
        await client.session.close()
        node.close()


async def test_not_leader_is_followed_to_the_leader() -> None:
    follower = await FakeNode(lambda n, m, p: (503, {"error": "not leader", "leader": 2})).start()
    leader = await FakeNode(lambda n, m, p: (200, {"ok": True, "index": 7})).start()
    client, rec = await client_for(follower, leader)
    try:
        op = await client.put("k", "v")
        assert (op.outcome, op.node, op.value) == ("ok", 2, "v")
        assert len(follower.requests) == 1 and len(leader.requests) == 1
        assert op.call <= op.ret and rec.ops == [op]
    finally:
        await client.session.close()
        follower.close()
        leader.close()


async def test_write_nobody_takes_fails_at_its_deadline() -> None:
    follower = await FakeNode(lambda n, m, p: (503, {"error": "not leader", "leader": None})).start()
    client, _ = await client_for(closed_port(), follower, deadline=0.5)
    try:
        op = await client.put("k", "v")
        assert op.outcome == "fail"
        assert op.ret - op.call >= 0.5
        assert len(follower.requests) >= 2  # refused and redirected requests were retried
    finally:
        await client.session.close()
        follower.close()


async def test_write_timeout_or_error_status_is_unknown() -> None:
    node = await FakeNode(lambda n, m, p: (504, {"error": "timeout"}) if n == 1 else (500, {})).start()
    client, _ = await client_for(node)
    try:
        assert (await client.put("k", "v")).outcome == "unknown"
        assert (await client.delete("k")).outcome == "unknown"
        assert len(node.requests) == 2
    finally:
        await client.session.close()
        node.close()


async def test_reads_retry_through_anything_and_report_absent() -> None:
    flaky = await FakeNode(lambda n, m, p: None).start()
    leader = await FakeNode(
        lambda n, m, p: (404, {"error": "not found"}) if n == 1 else (200, {"key": "k", "value": "v"})
    ).start()
    client, _ = await client_for(flaky, leader)
    try:
        op = await client.get("k")
        assert (op.outcome, op.value, op.node) == ("ok", None, 2)
        op = await client.get("k")
        assert (op.outcome, op.value) == ("ok", "v")
        assert len(flaky.requests) == 1
    finally:
        await client.session.close()
        flaky.close()
        leader.close()
