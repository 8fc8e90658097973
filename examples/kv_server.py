"""A durable HTTP key-value server whose log is an ``AsyncDiskStorage`` (needs ``pip install 'aiowal[examples]'``).

    python examples/kv_server.py DIR PORT [--host 127.0.0.1] [--snapshot-every N] [--entries-per-file N]

    PUT /kv/{key}   body = value   the write is an entry in the log, durable (fdatasync) before the 200 reply
    GET /kv/{key}                  the value, or 404
    GET /stats                     the log's stats() and the state machine's position, as JSON

It is a single-node replicated state machine without the replication: every PUT becomes a log entry (JSON
``{"key": ..., "value": ...}``) saved with ``hard_sync=True`` together with a HardState that commits it. Once the
save returns, the state machine applies the entry and the client gets its reply. Concurrent PUTs share
``fdatasync`` calls (group commit). Every ``--snapshot-every`` entries the state is serialized into a snapshot
with ``create_snapshot`` and the log files wholly below it are deleted. On start, the state is rebuilt from the
snapshot plus the log entries after it — also after ``kill -9``.

PORT 0 picks a free port; the first line printed is ``listening on http://HOST:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from typing import Any

try:
    from aiohttp import web
except ImportError:  # pragma: no cover - depends on the environment
    raise SystemExit("kv_server.py needs aiohttp: pip install 'aiowal[examples]'") from None

from aiowal import AsyncDiskStorage, MetaInfo
from aiowal.logfile import LogFile
from aiowal.raftpb import ConfState, Entry, EntryType, HardState

TERM = 1  # one node, one leader, one term
NODE_ID = 1
READ_CHUNK = 4 << 20  # bytes of entries per read while replaying the log


class KVStore:
    """The state machine (a dict) and the log it is built from."""

    def __init__(self, log: AsyncDiskStorage, snapshot_every: int) -> None:
        self.log = log
        self.snapshot_every = snapshot_every
        self.data: dict[str, str] = {}
        self.applied = 0
        self.next_index = 0
        self.durable: dict[int, Entry] = {}  # saved but not yet applied (applied strictly in index order)
        self.snapshots = 0
        self.snapshotting = False
        self.snapshot_index = 0
        self.failed = False
        self.recovered: dict[str, Any] = {}

    # --- start: snapshot + log -> state -------------------------------------------------------------------------
    def recover(self) -> None:
        t0 = time.perf_counter()
        snap = self.log.snapshot()
        if snap.data:
            self.data = json.loads(snap.data)
        self.applied = self.snapshot_index = snap.metadata.index
        # One node is its own majority: every entry in its durable log is committed, including one whose save
        # was cut short by a crash before its HardState was written (that PUT was never acknowledged).
        replayed = 0
        lo, last = self.log.first_index(), self.log.last_index()
        while lo <= last:
            chunk = self.log.entries(lo, last + 1, READ_CHUNK)
            for e in chunk:
                self._apply(e)
                replayed += 1
            lo = chunk[-1].index + 1
        self.next_index = self.log.last_index() + 1
        self.recovered = {
            "snapshot_index": snap.metadata.index,
            "keys_from_snapshot": len(json.loads(snap.data)) if snap.data else 0,
            "entries_replayed": replayed,
            "keys": len(self.data),
            "ms": round((time.perf_counter() - t0) * 1000, 1),
        }

    def _apply(self, e: Entry) -> None:
        if e.type == EntryType.EntryNormal and e.data:
            cmd = json.loads(e.data)
            self.data[cmd["key"]] = cmd["value"]
        self.applied = e.index

    # --- writes -----------------------------------------------------------------------------------------------
    async def put(self, key: str, value: str) -> int:
        """Append the write to the log, wait until it is durable, apply it; returns its index."""
        # Indexes are handed out in call order and saves are applied in call order, so the log stays contiguous
        # while many PUTs are in flight; their fdatasync calls are shared by the writer task.
        index = self.next_index
        self.next_index += 1
        entry = Entry(term=TERM, index=index, data=json.dumps({"key": key, "value": value}).encode())
        try:
            await self.log.save(hard_state=HardState(term=TERM, vote=NODE_ID, commit=index), entries=[entry])
        except Exception:
            # The log is no longer what this process thinks it is: acknowledge nothing more until a restart.
            self.failed = True
            raise
        self.durable[index] = entry
        while self.applied + 1 in self.durable:
            self._apply(self.durable.pop(self.applied + 1))
        if self.applied - self.snapshot_index >= self.snapshot_every and not self.snapshotting:
            await self._snapshot()
        return index

    async def _snapshot(self) -> None:
        self.snapshotting = True
        try:
            index = self.applied
            state = json.dumps(self.data).encode()
            await self.log.create_snapshot(index, ConfState(voters=[NODE_ID]), state)
            await self.log.set_uint(MetaInfo.CHECKPOINT_INDEX, index)
            self.snapshot_index = index
            self.snapshots += 1
        finally:
            self.snapshotting = False


def make_app(store: KVStore) -> web.Application:
    routes = web.RouteTableDef()

    @routes.put("/kv/{key}")
    async def put(request: web.Request) -> web.Response:
        if store.failed:
            return web.json_response({"error": "the log failed; restart the server"}, status=503)
        value = await request.text()
        try:
            index = await store.put(request.match_info["key"], value)
        except Exception as exc:
            return web.json_response({"error": f"not saved: {exc}"}, status=500)
        return web.json_response({"index": index})

    @routes.get("/kv/{key}")
    async def get(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key not in store.data:
            return web.json_response({"error": "not found"}, status=404)
        return web.Response(text=store.data[key])

    @routes.get("/stats")
    async def stats(request: web.Request) -> web.Response:
        log = store.log
        return web.json_response(
            {
                "log": log.stats(),
                "first_index": log.first_index(),
                "last_index": log.last_index(),
                "applied": store.applied,
                "snapshot_index": store.snapshot_index,
                "snapshots_taken": store.snapshots,
                "log_files": log.num_log_files() + 1,
                "keys": len(store.data),
                "recovered": store.recovered,
            }
        )

    app = web.Application()
    app.add_routes(routes)
    return app


async def serve(args: argparse.Namespace) -> None:
    log = await AsyncDiskStorage.open(args.dir, hard_sync=True)
    store = KVStore(log, args.snapshot_every)
    store.recover()
    runner = web.AppRunner(make_app(store), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = runner.addresses[0][1]
    print(f"listening on http://{args.host}:{port}", flush=True)
    print(f"recovered {json.dumps(store.recovered)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await log.close()
        print("stopped", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description="A durable key-value server on an aiowal log.")
    p.add_argument("dir", help="WAL directory (created if missing)")
    p.add_argument("port", type=int, help="TCP port (0: any free port)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--snapshot-every", type=int, default=1000, metavar="N", help="snapshot every N entries")
    p.add_argument(
        "--entries-per-file",
        type=int,
        default=None,
        metavar="N",
        help="rotate log files after N entries instead of Dgraph's 30000 (small values show files going away "
        "after snapshots in a short demo; the files stay readable by Dgraph)",
    )
    args = p.parse_args()
    if args.entries_per_file:
        LogFile.max_entries = args.entries_per_file
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
