"""The example node's admin API: membership changes over HTTP, on the leader (any other node answers 503 with the
leader, like the key-value API).

    GET    /admin/members                  the configuration and every member's addresses (any node)
    POST   /admin/learners                 {"id": 4, "raft": "host:port", "http": "host:port"}: add a learner
    POST   /admin/members                  the same body: add a learner, wait for it to catch up, promote it
    POST   /admin/members/{id}/promote     make a learner a voter once it has caught up
    POST   /admin/members/{id}/replace     {"id": 6, "raft": ..., "http": ...}: replace member {id} (dead, say)
                                           with a new one, through a joint configuration
    DELETE /admin/members/{id}             remove a member (the leader too); ?stop=0 leaves it running
    POST   /admin/transfer-leader          {"to": 2}
    POST   /admin/shutdown                 stop this node

Answers: 200 with the configuration (``index``: the entry that made it), 503 not the leader, 409 the change was
refused (another one is in flight, or it does not fit the configuration), 504 no answer in time, 400 bad input.
A removal answers once a majority of the new configuration's voters has applied it, then (unless ``stop=0``)
shuts the removed node down: a removed server may still be needed for a vote until then.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from aiowal.node import AppliedChange, ConfChangeRefusedError, NotLeaderError, RaftNode

Handler = Callable[[web.Request], Awaitable[web.Response]]


def parse_addr(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


class Admin:
    """The admin routes of one node; ``http_of`` gives a member's HTTP address (None if unknown)."""

    def __init__(self, node: RaftNode, http_of: Callable[[int], str | None], stop: Callable[[], None]) -> None:
        self.node = node
        self.http_of = http_of
        self.stop = stop

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/admin/members", self.members),
            web.post("/admin/learners", self.guard(self.add_learner)),
            web.post("/admin/members", self.guard(self.add_voter)),
            web.post("/admin/members/{id}/promote", self.guard(self.promote)),
            web.post("/admin/members/{id}/replace", self.guard(self.replace)),
            web.delete("/admin/members/{id}", self.guard(self.remove)),
            web.post("/admin/transfer-leader", self.guard(self.transfer)),
            web.post("/admin/shutdown", self.shutdown),
        ]

    def configuration(self, change: AppliedChange | None = None) -> dict[str, Any]:
        cs = self.node.conf_state
        out: dict[str, Any] = {
            "voters": sorted(cs.voters),
            "learners": sorted(cs.learners),
            "voters_outgoing": sorted(cs.voters_outgoing),
            "members": {str(i): m.to_json() for i, m in self.node.members().items()},
        }
        if change is not None:
            out["index"] = change.index
        return out

    def guard(self, handler: Handler) -> Handler:
        """Map the node's errors to HTTP answers."""

        async def run(request: web.Request) -> web.Response:
            try:
                return await handler(request)
            except NotLeaderError as exc:
                lead = exc.leader or self.node.leader
                return web.json_response(
                    {"error": "not leader", "leader": lead, "leader_http": self.http_of(lead)}, status=503
                )
            except ConfChangeRefusedError as exc:
                return web.json_response({"error": f"refused: {exc}"}, status=409)
            except TimeoutError as exc:
                return web.json_response({"error": f"timeout: {exc}"}, status=504)
            except (ValueError, KeyError, TypeError) as exc:
                return web.json_response({"error": f"bad request: {exc}"}, status=400)

        return run

    async def members(self, request: web.Request) -> web.Response:
        return web.json_response(self.configuration())

    @staticmethod
    async def _new_member(request: web.Request) -> tuple[int, tuple[str, int], dict[str, str]]:
        body = await request.json()
        meta = {"http": str(body["http"])} if body.get("http") else {}
        return int(body["id"]), parse_addr(str(body["raft"])), meta

    async def add_learner(self, request: web.Request) -> web.Response:
        node_id, addr, meta = await self._new_member(request)
        if node_id in self.node.members():
            return web.json_response(self.configuration())  # already in: joining again is harmless
        return web.json_response(self.configuration(await self.node.add_learner(node_id, addr, meta)))

    async def add_voter(self, request: web.Request) -> web.Response:
        node_id, addr, meta = await self._new_member(request)
        return web.json_response(self.configuration(await self.node.add_voter(node_id, addr, meta)))

    async def promote(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        lag = body.get("max_lag")
        change = await self.node.promote(int(request.match_info["id"]), None if lag is None else int(lag))
        return web.json_response(self.configuration(change))

    async def replace(self, request: web.Request) -> web.Response:
        old = int(request.match_info["id"])
        node_id, addr, meta = await self._new_member(request)
        return web.json_response(self.configuration(await self.node.replace_member(old, node_id, addr, meta)))

    async def remove(self, request: web.Request) -> web.Response:
        victim = int(request.match_info["id"])
        stop = request.query.get("stop", "1") not in ("0", "false", "no")
        victim_http = self.http_of(victim)
        change = await self.node.remove_member(victim)
        await self._applied_by_majority(change)
        out = self.configuration(change)
        if stop:
            if victim == self.node.id:
                asyncio.get_running_loop().call_later(0.1, self.stop)
                out["stopped"] = True
            elif victim_http is not None:
                out["stopped"] = await _post(f"http://{victim_http}/admin/shutdown") == 200
        return web.json_response(out)

    async def _applied_by_majority(self, change: AppliedChange, timeout: float = 30.0) -> None:
        """Wait until a majority of the new configuration's voters has applied ``change`` (each one's /status)."""
        voters = list(change.conf_state.voters)
        need = len(voters) // 2 + 1
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                done = 0
                for v in voters:
                    if v == self.node.id:
                        done += self.node.applied >= change.index
                        continue
                    addr = self.http_of(v)
                    if addr is None:
                        continue
                    try:
                        async with session.get(f"http://{addr}/status") as resp:
                            done += (await resp.json())["applied"] >= change.index
                    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                        pass
                if done >= need:
                    return
                if loop.time() >= end:
                    raise TimeoutError(f"only {done} of {len(voters)} voters applied entry {change.index}")
                await asyncio.sleep(0.05)

    async def transfer(self, request: web.Request) -> web.Response:
        to = int((await request.json())["to"])
        await self.node.transfer_leadership(to)
        return web.json_response({"leader": to})

    async def shutdown(self, request: web.Request) -> web.Response:
        asyncio.get_running_loop().call_later(0.1, self.stop)
        return web.json_response({"stopping": self.node.id})


async def _post(url: str, body: dict[str, Any] | None = None) -> int:
    """The status of one POST; 0 when the node could not be reached."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.post(url, data=json.dumps(body or {})) as resp,
        ):
            await resp.read()
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def join(node: RaftNode, admins: list[str], own_raft: str, own_http: str, interval: float = 0.5) -> None:
    """Ask the cluster, through the admin API of any of ``admins`` (following "not leader" answers), to add this
    node as a learner; retried until the leader has applied the change, or this node already is a member."""
    body = {"id": node.id, "raft": own_raft, "http": own_http}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while node.id not in node.members():
            for addr in admins:
                try:
                    async with session.post(f"http://{addr}/admin/learners", json=body) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    continue
            await asyncio.sleep(interval)
