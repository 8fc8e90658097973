"""Clients of the example cluster that record every operation's call, return and outcome for the checker.

A request refused before it was sent (connection refused) or answered "not leader" (503) was not taken: the client
tries the leader it was pointed to, or the next node, until the operation's deadline, and the operation failed if
none took it. Any other end of a write (a timeout, a cut connection, a 504, an unexpected status) leaves its outcome
unknown and the client moves on without retrying it, since a retry could make the write take effect twice. A read
changes nothing, so it is retried through anything until its deadline.

The sessions come from ``new_session``: aiohttp on its own resends an idempotent request (PUT and DELETE are) once
when its connection drops, and a resend refused by a node that just died would pass for a request never sent.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field, replace

import aiohttp
from lincheck import Kind, Op, Outcome

Addr = tuple[str, int]


def new_session() -> aiohttp.ClientSession:
    """A session that opens a connection per request and never resends a request by itself."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0))
    session._retry_connection = False  # no public switch; test_kvclients checks that it holds
    return session


@dataclass
class Recorder:
    """The history: operations in the order they returned, times in seconds on one monotonic clock."""

    t0: float = field(default_factory=time.monotonic)
    ops: list[Op] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def add(
        self,
        process: int,
        kind: Kind,
        key: str,
        value: str | None,
        call: float,
        ret: float,
        outcome: Outcome,
        node: int | None = None,
    ) -> Op:
        op = Op(len(self.ops), process, kind, key, value, call, ret if outcome != "unknown" else float("inf"), outcome)
        op = replace(op, node=node)
        self.ops.append(op)
        return op


class KVClient:
    """One client process: one operation at a time, over its own HTTP connections."""

    def __init__(
        self,
        process: int,
        session: aiohttp.ClientSession,
        http: dict[int, Addr],
        recorder: Recorder,
        *,
        request_timeout: float = 3.0,
        deadline: float = 6.0,
    ) -> None:
        self.process = process
        self.session = session
        self.http = http
        self.recorder = recorder
        self.request_timeout = request_timeout
        self.deadline = deadline
        self.nodes = sorted(http)
        self.target = self.nodes[process % len(self.nodes)]
        self.attempts = 0

    async def put(self, key: str, value: str) -> Op:
        return await self._run("put", key, value)

    async def delete(self, key: str) -> Op:
        return await self._run("delete", key, None)

    async def get(self, key: str) -> Op:
        return await self._run("get", key, None)

    def _next_node(self) -> None:
        self.target = self.nodes[(self.nodes.index(self.target) + 1) % len(self.nodes)]

    async def _run(self, kind: Kind, key: str, value: str | None) -> Op:
        rec = self.recorder
        call = rec.now()
        method = {"put": "PUT", "delete": "DELETE", "get": "GET"}[kind]
        body = value.encode() if value is not None else None
        while True:
            if rec.now() - call > self.deadline:
                return rec.add(self.process, kind, key, value if kind == "put" else None, call, rec.now(), "fail")
            host, port = self.http[self.target]
            self.attempts += 1
            try:
                async with self.session.request(
                    method,
                    f"http://{host}:{port}/kv/{key}",
                    data=body,
                    timeout=aiohttp.ClientTimeout(total=self.request_timeout),
                ) as resp:
                    status = resp.status
                    reply = await resp.json(content_type=None)
            except aiohttp.ClientConnectorError:
                self._next_node()  # nothing was sent: the node is down
                await asyncio.sleep(0.02)
                continue
            except (TimeoutError, aiohttp.ClientError, ValueError):
                status, reply = -1, {}
            if status == 200 or (kind == "get" and status == 404):
                result = reply.get("value") if kind == "get" else value
                return rec.add(self.process, kind, key, result, call, rec.now(), "ok", self.target)
            if status == 503 and reply.get("error") == "not leader":
                leader = reply.get("leader")
                if leader in self.http and leader != self.target:
                    self.target = leader
                else:
                    self._next_node()
                    await asyncio.sleep(0.05)  # no leader known: an election is under way
                continue
            if kind != "get":
                return rec.add(self.process, kind, key, value, call, rec.now(), "unknown", self.target)
            self._next_node()


async def run_client(client: KVClient, keys: list[str], until: float, seed: int) -> None:
    """Random PUTs (of values no one else writes), DELETEs and GETs on a few keys until ``until``."""
    rng = random.Random(seed)
    n = 0
    while client.recorder.now() < until:
        key = rng.choice(keys)
        r = rng.random()
        if r < 0.4:
            await client.put(key, f"{client.process}-{n}")
        elif r < 0.5:
            await client.delete(key)
        else:
            await client.get(key)
        n += 1
