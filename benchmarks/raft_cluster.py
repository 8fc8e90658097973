"""Issue 6: committed writes per second of a 3-node Raft cluster (hard_sync) from 1 and from 64 concurrent
clients, with p50/p99 commit latency, against a single-node group, all in one run.

The three nodes run in this process (one event loop, TCP on loopback), so they share one core's GIL: the figures
are a floor for a cluster whose nodes each have their own machine.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from aiowal import AsyncDiskStorage
from aiowal.node import NodeConfig, NotLeaderError, RaftNode
from benchmarks.common import Config, Scratch, free_ports, interleave, percentiles, ratio, summary


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def apply(self, index: int, data: bytes) -> object:
        self.n += 1
        return index

    def snapshot_to(self, path: str) -> Awaitable[None]:
        return asyncio.to_thread(Path(path).write_text, str(self.n))

    async def restore_from(self, path: str) -> None:
        self.n = int(await asyncio.to_thread(Path(path).read_text))


async def _measure(root: str, voters: int, clients: int, seconds: float) -> tuple[float, list[float]]:
    """(committed writes per second, commit latencies in seconds) of ``clients`` closed-loop writers."""
    peers = {i + 1: ("127.0.0.1", p) for i, p in enumerate(free_ports(voters))}
    nodes = []
    for i in peers:
        st = await AsyncDiskStorage.open(f"{root}/n{i}", hard_sync=True)
        cfg = NodeConfig(i, peers, tick_interval=0.005, snapshot_every=50_000, keep_entries=1_000, seed=i)
        node = RaftNode(cfg, st, _Counter())
        await node.start()
        nodes.append(node)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not any(n.is_leader for n in nodes):
            if loop.time() > deadline:
                raise RuntimeError("no leader elected")
            await asyncio.sleep(0.005)
        leader = next(n for n in nodes if n.is_leader)
        payload = b"x" * 100
        latencies: list[float] = []
        done = itertools.count()
        stop_at = loop.time() + seconds

        async def client() -> None:
            while loop.time() < stop_at:
                t0 = time.perf_counter()
                try:
                    await leader.propose(payload, timeout=5.0)
                except NotLeaderError:
                    await asyncio.sleep(0.01)
                    continue
                latencies.append(time.perf_counter() - t0)
                next(done)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
        return len(latencies) / elapsed, latencies
    finally:
        for n in nodes:
            await n.stop()


def run(cfg: Config, scratch: Scratch) -> dict[str, Any]:
    seconds = 0.5 if cfg.quick else 3.0
    rounds = 1 if cfg.quick else 3
    lat: dict[str, list[float]] = {}

    def case(voters: int, clients: int) -> Any:
        def measure() -> float:
            root = scratch.fresh(f"raft-{voters}x{clients}")
            rate, latencies = asyncio.run(_measure(root, voters, clients, seconds))
            lat.setdefault(f"{voters}x{clients}", []).extend(latencies)
            scratch.remove(root)
            return rate

        return measure

    samples = interleave(
        {
            "cluster3_1client": case(3, 1),
            "cluster3_64clients": case(3, 64),
            "single_1client": case(1, 1),
            "single_64clients": case(1, 64),
        },
        rounds,
    )
    med = {k: summary(v, "writes/s") for k, v in samples.items()}
    m = {k: v["median"] for k, v in med.items()}
    return {
        "what": "committed writes/s (100 B each, hard_sync) through the Raft leader, closed-loop clients",
        "writes_per_s": med,
        "latency_ms": {k: percentiles(v, 1000) for k, v in lat.items()},
        "ratios": {
            "cluster3_64_vs_1_client": ratio(m["cluster3_64clients"], m["cluster3_1client"], target=10),
            "cluster3_vs_single_1client": ratio(m["cluster3_1client"], m["single_1client"]),
            "cluster3_vs_single_64clients": ratio(m["cluster3_64clients"], m["single_64clients"]),
        },
        "note": "3 nodes in one process and one event loop, on loopback TCP",
    }
