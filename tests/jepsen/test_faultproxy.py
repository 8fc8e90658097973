"""The partitioning proxy does what the nemesis relies on: bytes flow when a link is up, connections are cut and
refused when it is down, held and then delivered late when it is stalled; and a cluster whose nodes reach each
other through the proxies really is partitioned by them (the isolated leader loses its place, and catches up once
healed)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from cluster import Cluster, http
from faultproxy import Link, Network


async def echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def roundtrip(port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
    finally:
        writer.close()


async def test_link_passes_cuts_and_stalls() -> None:
    server, port = await echo_server()
    link = Link(("127.0.0.1", port))
    proxy = await link.start()
    try:
        assert await roundtrip(proxy, b"hello") == b"hello"
        assert link.forwarded == 10  # there and back

        # Down: an open connection is cut, and a new one is closed at once.
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        link.set("down")
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await roundtrip(proxy, b"lost")

        # Stalled: the connection stays open, nothing arrives; once up again the held bytes come through.
        link.set("stalled")
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
        writer.write(b"late")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(4), 0.3)
        link.set("up")
        assert await asyncio.wait_for(reader.readexactly(4), 2) == b"late"
        writer.close()
    finally:
        await link.close()
        server.close()


async def test_network_partition_cuts_only_across_sides() -> None:
    servers = [await echo_server() for _ in range(3)]
    net = Network({i + 1: ("127.0.0.1", port) for i, (_, port) in enumerate(servers)})
    routes = await net.start()
    try:
        net.partition([1], [2, 3])
        assert {pair for pair, mode in net.modes().items() if mode == "down"} == {(1, 2), (1, 3), (2, 1), (3, 1)}
        assert await roundtrip(routes[2][3][1], b"ok") == b"ok"
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await roundtrip(routes[1][2][1], b"no")
        net.heal()
        assert await roundtrip(routes[1][2][1], b"ok") == b"ok"
    finally:
        await net.close()
        for server, _ in servers:
            server.close()


def status(cluster: Cluster, i: int) -> dict[str, object]:
    return http("GET", cluster.url(i, "/status"), timeout=1)[1]


async def wait_for(what: str, cond: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(cond):  # type: ignore[arg-type]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting until {what}")


async def test_isolated_leader_is_replaced_and_catches_up_when_healed(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, snapshot_every=60, keep_entries=20)
    net = Network(cluster.raft)
    cluster.routes = await net.start()
    try:
        for i in cluster.ids:
            await asyncio.to_thread(cluster.start, i)
        old, term = await asyncio.to_thread(cluster.leader)
        others = [i for i in cluster.ids if i != old]
        net.partition([old], others)

        def replaced() -> bool:
            return any(status(cluster, i).get("is_leader") for i in others)

        await wait_for("one of the others leads", replaced)
        new = next(i for i in others if status(cluster, i).get("is_leader"))
        assert int(status(cluster, new)["term"]) > term  # type: ignore[call-overload]
        code, _ = await asyncio.to_thread(http, "PUT", cluster.url(new, "/kv/k"), b"v")
        assert code == 200
        code, _ = await asyncio.to_thread(http, "PUT", cluster.url(old, "/kv/k"), b"lost", timeout=10)
        assert code in (503, 504)  # the isolated node cannot commit, whether or not it still thinks it leads
        assert (await asyncio.to_thread(http, "GET", cluster.url(old, "/local")))[1].get("k") is None

        net.heal()
        await wait_for(
            "the old leader has the new write",
            lambda: http("GET", cluster.url(old, "/local"), timeout=1)[1].get("k") == "v",
        )
        assert net.links[new, old].forwarded > 0  # the catching up went through the proxy
    finally:
        await asyncio.to_thread(cluster.stop_all)
        await net.close()
