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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import time

from aiohttp import web
from kvmetrics import KVMetrics

from aiowal import AsyncDiskStorage
from aiowal.node import NodeConfig, NotLeaderError, RaftNode


class KVStore:
    """The state machine: a dict, changed by JSON commands."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def apply(self, index: int, data: bytes) -> object:
        cmd = json.loads(data)
        if cmd["op"] == "put":
            self.data[cmd["key"]] = cmd["value"]
        elif cmd["op"] == "delete":
            self.data.pop(cmd["key"], None)
        return index

    def snapshot(self) -> bytes:
        return json.dumps(self.data, sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        self.data = json.loads(data) if data else {}


def parse_addrs(text: str) -> dict[int, tuple[str, int]]:
    out = {}
    for item in text.split(","):
        node, addr = item.split("=")
        host, port = addr.rsplit(":", 1)
        out[int(node)] = (host, int(port))
    return out


def make_app(node: RaftNode, kv: KVStore, http: dict[int, tuple[str, int]]) -> web.Application:
    metrics = KVMetrics(node)
    write_seconds = metrics.proposal_seconds.labels("write")
    read_seconds = metrics.proposal_seconds.labels("read")

    def not_leader() -> web.Response:
        lead = node.leader
        addr = f"{http[lead][0]}:{http[lead][1]}" if lead in http else None
        return web.json_response({"error": "not leader", "leader": lead, "leader_http": addr}, status=503)

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
        if key not in kv.data:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response({"key": key, "value": kv.data[key]})

    async def status(request: web.Request) -> web.Response:
        st = node.status().to_dict()
        st.update(is_leader=st["role"] == "leader", first_index=node.storage.first_index(), keys=len(kv.data))
        return web.json_response(st)

    async def metrics_page(request: web.Request) -> web.Response:
        body, content_type = metrics.exposition(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def local(request: web.Request) -> web.Response:
        return web.json_response(kv.data)

    app = web.Application()
    app.router.add_put("/kv/{key}", put)
    app.router.add_delete("/kv/{key}", delete)
    app.router.add_get("/kv/{key}", get)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/local", local)
    return app


async def serve(args: argparse.Namespace) -> None:
    listen = parse_addrs(args.peers)
    peers = {**listen, **(parse_addrs(args.connect) if args.connect else {}), args.id: listen[args.id]}
    http = parse_addrs(args.http)
    kv = KVStore()
    storage = await AsyncDiskStorage.open(args.dir, hard_sync=True)
    cfg = NodeConfig(args.id, peers, snapshot_every=args.snapshot_every, keep_entries=args.keep_entries)
    node = RaftNode(cfg, storage, kv)
    await node.start()
    runner = web.AppRunner(make_app(node, kv, http), access_log=None)
    await runner.setup()
    host, port = http[args.id]
    await web.TCPSite(runner, host, port).start()
    print(f"node {args.id} ready: raft {peers[args.id][0]}:{peers[args.id][1]}, http {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
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
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format=f"node {args.id}: %(levelname)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
