"""Three RaftNodes on loopback in one process, each on its own AsyncDiskStorage: elect, replicate, lose the
leader, elect again, restart it and watch it catch up, through a snapshot when its log was compacted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from node_harness import KV, free_ports, leader_of

from aiowal import AsyncDiskStorage, DiskStorage
from aiowal.node import NodeConfig, NotLeaderError, RaftNode


async def start(i: int, peers: dict[int, tuple[str, int]], root: Path, sms: dict[int, KV]) -> RaftNode:
    st = await AsyncDiskStorage.open(root / f"n{i}", hard_sync=True)
    sms[i] = KV()
    cfg = NodeConfig(i, peers, tick_interval=0.005, snapshot_every=40, keep_entries=10, seed=i)
    node = RaftNode(cfg, st, sms[i])
    await node.start()
    return node


async def put(nodes: dict[int, RaftNode], k: str, v: str) -> None:
    for _ in range(200):
        leader = await leader_of(nodes)
        try:
            await leader.propose(json.dumps([k, v]).encode(), timeout=2.0)
            return
        except (NotLeaderError, TimeoutError):
            await asyncio.sleep(0.02)
    raise AssertionError(f"write {k} never acknowledged")


async def converge_and_stop(
    nodes: dict[int, RaftNode], sms: dict[int, KV], want: dict[str, str], seconds: float
) -> None:
    """Wait until every node's state machine holds ``want`` (each must, within ``seconds``), then stop them all."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end and any(sm.data != want for sm in sms.values()):
        await asyncio.sleep(0.02)
    for i, sm in sms.items():
        assert sm.data == want, f"node {i} diverged"
    for node in nodes.values():
        await node.stop()


def test_three_nodes_survive_leader_loss_and_catch_up(tmp_path: Path) -> None:
    async def main() -> tuple[int, int]:
        ports = free_ports(3)
        peers = {i + 1: ("127.0.0.1", ports[i]) for i in range(3)}
        sms: dict[int, KV] = {}
        nodes = {i: await start(i, peers, tmp_path, sms) for i in peers}
        acked: dict[str, str] = {}
        for n in range(30):
            await put(nodes, f"k{n}", f"v{n}")
            acked[f"k{n}"] = f"v{n}"
        old = await leader_of(nodes)
        old_id = old.config.node_id
        old_last = old.storage.last_index()
        await old.stop()
        del nodes[old_id]
        new = await leader_of(nodes)
        assert new.config.node_id != old_id
        for n in range(30, 150):  # enough to compact the survivors' logs past what the old leader has
            await put(nodes, f"k{n}", f"v{n}")
            acked[f"k{n}"] = f"v{n}"
        # The survivors compacted past the old leader's log: only a snapshot can bring it back.
        assert all(n.storage.first_index() > old_last + 1 for n in nodes.values())
        nodes[old_id] = await start(old_id, peers, tmp_path, sms)
        await converge_and_stop(nodes, sms, acked, seconds=15)
        # The counters saw it too: a snapshot sent by the leader and restored by the restarted node.
        assert nodes[old_id].counters.snapshots_received == 1
        assert nodes[new.config.node_id].counters.snapshots_sent >= 1
        return old_id, old_last

    old_id, old_last = asyncio.run(main())
    # The restarted node holds a snapshot past the log it had when it was stopped: it caught up through one.
    with DiskStorage.open(tmp_path / f"n{old_id}") as st:
        assert st.snapshot().metadata.index > old_last


def test_concurrent_proposals_are_batched_and_all_applied(tmp_path: Path) -> None:
    """Many proposals in flight at once (stepped together, sent while the leader saves): each proposer gets the
    index its own entry was applied at, and every node ends with the same state."""

    async def main() -> None:
        ports = free_ports(3)
        peers = {i + 1: ("127.0.0.1", ports[i]) for i in range(3)}
        sms: dict[int, KV] = {}
        nodes = {i: await start(i, peers, tmp_path, sms) for i in peers}
        leader = await leader_of(nodes)
        expected: dict[str, str] = {}

        async def client(c: int) -> list[int]:
            indexes = []
            for n in range(20):
                k, v = f"c{c}-{n}", f"v{n}"
                index = await leader.propose(json.dumps([k, v]).encode(), timeout=5.0)
                assert isinstance(index, int)
                expected[k] = v
                indexes.append(index)
            return indexes

        results = await asyncio.gather(*(client(c) for c in range(32)))
        flat = [i for r in results for i in r]
        assert len(set(flat)) == len(flat) == 32 * 20
        assert all(r == sorted(r) for r in results)  # a client's writes are applied in its order
        assert leader.storage.stats()["saves"] < len(flat)  # proposals shared saves
        await converge_and_stop(nodes, sms, expected, seconds=10)

    asyncio.run(main())
