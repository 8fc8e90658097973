"""One node of PySyncObj's replicated dict (``pysyncobj.batteries.ReplDict``) behind the same HTTP API as the
example cluster's kvnode, so that one client drives both the same way.

    python benchmarks/pysyncobj_kvnode.py --id 1 --dir DIR --peers 1=127.0.0.1:7001,... --http 1=127.0.0.1:8001,...

PUT /kv/KEY (body: value) sets the key through the Raft log and answers once PySyncObj reports it applied (its
callback, called on its own thread); 503 if PySyncObj refused it. GET /status says whether this node leads. The
journal is PySyncObj's ``FileJournal`` (an mmap: written to the page cache, never synced per write).

By default PySyncObj batches: the leader sends appends every ``appendEntriesPeriod`` (0.1 s). ``--no-batch`` sets
``appendEntriesUseBatch=False``: each command wakes PySyncObj's thread and goes out at once (its low-latency mode).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

from aiohttp import web
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf
from pysyncobj.batteries import ReplDict


def parse_addrs(text: str) -> dict[int, tuple[str, int]]:
    out = {}
    for item in text.split(","):
        node, addr = item.split("=")
        host, port = addr.rsplit(":", 1)
        out[int(node)] = (host, int(port))
    return out


def make_app(sync: SyncObj, kv: ReplDict) -> web.Application:
    loop = asyncio.get_running_loop()

    def settle(fut: asyncio.Future[int], error: int) -> None:
        if not fut.done():
            fut.set_result(error)

    async def put(request: web.Request) -> web.Response:
        value = await request.text()
        fut: asyncio.Future[int] = loop.create_future()

        def done(result: Any, error: int) -> None:  # on PySyncObj's thread
            loop.call_soon_threadsafe(settle, fut, error)

        kv.set(request.match_info["key"], value, callback=done)
        error = await fut
        if error != FAIL_REASON.SUCCESS:
            return web.json_response({"error": f"pysyncobj error {error}"}, status=503)
        return web.json_response({"ok": True})

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"is_leader": bool(sync._isLeader()), "ready": bool(sync.isReady())})

    app = web.Application()
    app.router.add_put("/kv/{key}", put)
    app.router.add_get("/status", status)
    return app


async def serve(args: argparse.Namespace) -> None:
    peers = parse_addrs(args.peers)
    http = parse_addrs(args.http)
    os.makedirs(args.dir, exist_ok=True)

    def addr(i: int) -> str:
        return f"{peers[i][0]}:{peers[i][1]}"

    kv = ReplDict()
    conf = SyncObjConf(
        journalFile=os.path.join(args.dir, "journal"),
        fullDumpFile=os.path.join(args.dir, "dump"),
        dynamicMembershipChange=False,
        appendEntriesUseBatch=not args.no_batch,
        connectionRetryTime=0.5,  # (default 5 s) a node started before its peers retries soon: a faster start only
    )
    sync = SyncObj(addr(args.id), [addr(i) for i in peers if i != args.id], conf=conf, consumers=[kv])
    runner = web.AppRunner(make_app(sync, kv), access_log=None)
    await runner.setup()
    host, port = http[args.id]
    await web.TCPSite(runner, host, port).start()
    print(f"pysyncobj node {args.id} ready: http {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    sync.destroy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--peers", required=True, help="raft addresses: 1=host:port,2=host:port,...")
    p.add_argument("--http", required=True, help="HTTP addresses: 1=host:port,2=host:port,...")
    p.add_argument("--no-batch", action="store_true", help="send each command at once (appendEntriesUseBatch=False)")
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
