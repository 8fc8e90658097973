"""One node of the replicated key-value store: a RaftNode on aiowal plus an HTTP API.

    python examples/cluster/kvnode.py --id 1 --dir /tmp/kv1 \
        --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \
        --http 1=127.0.0.1:8001,2=127.0.0.1:8002,3=127.0.0.1:8003

PUT /kv/KEY (body: value), DELETE /kv/KEY and GET /kv/KEY (a linearizable read: a barrier goes through the log
first) answer on the leader; other nodes answer 503 with the leader's address, and a 503 always means the request
was not taken (safe to send elsewhere). 504 means no answer in time: a write may still take effect, or not. GET
/status describes the node (``RaftNode.status()``: role, term, indexes, members, followers' progress on the leader),
GET /metrics gives its figures for Prometheus, and GET /local dumps its state machine without a barrier (for
inspection).

--connect gives the addresses at which this node reaches some peers when they differ from those in --peers (for
example through a proxy); --peers still says where each node listens.

Membership (kvadmin.py): /admin/... adds learners, promotes them, removes and replaces members. A new node joins a
running cluster with --join: started with the cluster's addresses in --peers and --http (its own among them) and
an empty --dir, it asks the leader to add it as a learner and catches up from the leader's log or snapshot; promote
it (or make it replace a dead member) with the admin API.

--store sqlite keeps the keys in a SQLite file in --dir instead of memory (for states larger than memory). Snapshot
files go to --dir/snapshots.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Protocol

from aiohttp import web
from kvadmin import Admin, join
from kvmetrics import KVMetrics
from kvstore import MemoryKV, SqliteKV

from aiowal import AsyncDiskStorage
from aiowal.node import NodeConfig, NotLeaderError, RaftNode


class Store(Protocol):
    def get(self, key: str) -> str | None: ...
    def items(self) -> dict[str, str]: ...
    def __len__(self) -> int: ...


def parse_addrs(text: str) -> dict[int, tuple[str, int]]:
    out = {}
    for item in text.split(","):
        node, addr = item.split("=")
        host, port = addr.rsplit(":", 1)
        out[int(node)] = (host, int(port))
    return out


def make_app(node: RaftNode, kv: Store, http: dict[int, tuple[str, int]], stop: Callable[[], None]) -> web.Application:
    metrics = KVMetrics(node)
    write_seconds = metrics.proposal_seconds.labels("write")
    read_seconds = metrics.proposal_seconds.labels("read")

    def http_of(i: int) -> str | None:
        """A member's HTTP address: the one it joined with, else the one in --http."""
        m = node.members().get(i)
        if m is not None and m.meta.get("http"):
            return m.meta["http"]
        return f"{http[i][0]}:{http[i][1]}" if i in http else None

    def not_leader() -> web.Response:
        lead = node.leader
        return web.json_response({"error": "not leader", "leader": lead, "leader_http": http_of(lead)}, status=503)

    async def write(cmd: dict[str, str]) -> web.Response:
        t0 = time.perf_counter()
        try:
            index = await node.propose(json.dumps(cmd).encode())
        except NotLeaderError:
            return not_leader()
        except TimeoutError:
            return web.json_response({"error": "timeout"}, status=504)
        write_seconds.observe(time.perf_counter() - t0)
        return web.json_response({"ok": True, "index": index})

    async def put(request: web.Request) -> web.Response:
        return await write({"op": "put", "key": request.match_info["key"], "value": await request.text()})

    async def delete(request: web.Request) -> web.Response:
        return await write({"op": "delete", "key": request.match_info["key"]})

    async def get(request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        try:
            await node.read_barrier()
        except NotLeaderError:
            return not_leader()
        except TimeoutError:
            return web.json_response({"error": "timeout"}, status=504)
        read_seconds.observe(time.perf_counter() - t0)
        key = request.match_info["key"]
        value = kv.get(key)
        if value is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response({"key": key, "value": value})

    async def status(request: web.Request) -> web.Response:
        st = node.status().to_dict()
        st.update(is_leader=st["role"] == "leader", first_index=node.storage.first_index(), keys=len(kv))
        st["members"] = {str(i): m.to_json() for i, m in node.members().items()}
        st["counters"] = dataclasses.asdict(node.counters)
        return web.json_response(st)

    async def metrics_page(request: web.Request) -> web.Response:
        body, content_type = metrics.exposition(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def local(request: web.Request) -> web.Response:
        return web.json_response(kv.items())

    app = web.Application()
    app.router.add_put("/kv/{key}", put)
    app.router.add_delete("/kv/{key}", delete)
    app.router.add_get("/kv/{key}", get)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/local", local)
    app.router.add_routes(Admin(node, http_of, stop).routes())
    return app


async def serve(args: argparse.Namespace) -> None:
    listen = parse_addrs(args.peers)
    peers = {**listen, **(parse_addrs(args.connect) if args.connect else {}), args.id: listen[args.id]}
    http = parse_addrs(args.http)
    storage = await AsyncDiskStorage.open(args.dir, hard_sync=True)
    kv = SqliteKV(os.path.join(args.dir, "kv.sqlite3")) if args.store == "sqlite" else MemoryKV()
    cfg = NodeConfig(args.id, peers, snapshot_every=args.snapshot_every, keep_entries=args.keep_entries, join=args.join)
    node = RaftNode(cfg, storage, kv)
    await node.start()
    stop = asyncio.Event()
    runner = web.AppRunner(make_app(node, kv, http, stop.set), access_log=None)
    await runner.setup()
    host, port = http[args.id]
    await web.TCPSite(runner, host, port).start()
    print(f"node {args.id} ready: raft {peers[args.id][0]}:{peers[args.id][1]}, http {host}:{port}", flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    joining = None
    if args.join:
        admins = [f"{h}:{p}" for i, (h, p) in http.items() if i != args.id]
        own = f"{listen[args.id][0]}:{listen[args.id][1]}"
        joining = loop.create_task(join(node, admins, own, f"{host}:{port}"))
    await stop.wait()
    if joining is not None:
        joining.cancel()
    await runner.cleanup()
    await node.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--peers", required=True, help="raft addresses: 1=host:port,2=host:port,...")
    p.add_argument("--http", required=True, help="HTTP addresses: 1=host:port,2=host:port,...")
    p.add_argument("--connect", default="", help="where to reach peers, if not at their --peers address: 2=host:port")
    p.add_argument("--snapshot-every", type=int, default=200)
    p.add_argument("--keep-entries", type=int, default=50)
    p.add_argument("--join", action="store_true", help="join a running cluster as a learner (empty --dir)")
    p.add_argument("--store", choices=["memory", "sqlite"], default="memory", help="where the keys live")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format=f"node {args.id}: %(levelname)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
