"""A proposer's waiter is woken only by its own entry, even when an entry proposed by an earlier run of the same node
(same id, same storage) is committed after a restart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from pathlib import Path

from node_harness import free_ports, leader_of, read_file, write_later

from aiowal import AsyncDiskStorage
from aiowal.node import NodeConfig, RaftNode


class IndexedKV:
    """Records at which index each value was applied."""

    def __init__(self) -> None:
        self.index_of: dict[str, int] = {}

    def apply(self, index: int, data: bytes) -> object:
        self.index_of[json.loads(data)] = index
        return index

    def snapshot_to(self, path: str) -> Awaitable[None]:
        return write_later(path, json.dumps(self.index_of).encode())

    async def restore_from(self, path: str) -> None:
        self.index_of = json.loads(await read_file(path))


async def _start(i: int, peers: dict[int, tuple[str, int]], root: Path) -> RaftNode:
    st = await AsyncDiskStorage.open(root / f"n{i}", hard_sync=True)
    # A wide election timeout: the test stops two followers and proposes on the leader before check-quorum
    # notices.
    cfg = NodeConfig(i, peers, tick_interval=0.01, election_tick=50, heartbeat_tick=5, seed=i)
    node = RaftNode(cfg, st, IndexedKV())
    await node.start()
    return node


def test_an_entry_of_an_earlier_run_does_not_answer_a_new_proposal(tmp_path: Path) -> None:
    async def main() -> None:
        ports = free_ports(3)
        peers = {i + 1: ("127.0.0.1", ports[i]) for i in range(3)}
        nodes = {i: await _start(i, peers, tmp_path) for i in peers}
        old = await leader_of(nodes)
        lid = old.config.node_id
        follower, other = (i for i in peers if i != lid)

        # The leader's first proposal is saved in its own log but never reaches a quorum: both followers are gone.
        await nodes[follower].stop()
        await nodes[other].stop()
        last = old.storage.last_index()
        orphan = asyncio.ensure_future(old.propose(json.dumps("old").encode(), timeout=0.5))
        loop = asyncio.get_running_loop()
        end = loop.time() + 2
        while old.storage.last_index() == last:
            assert loop.time() < end, "the leader never saved its proposal"
            await asyncio.sleep(0.005)
        await old.stop()
        assert orphan.done()
        orphan.exception()  # (whatever it was: the node stopped under it)

        # A new run of the same node, with one follower whose log lacks that entry: only the restarted node can win
        # (its log is longer), and its first leader Ready commits the old entry after it has taken a new proposal.
        new = await _start(lid, peers, tmp_path)
        sm = new.sm
        assert isinstance(sm, IndexedKV)
        proposed: list[asyncio.Task[object]] = []

        async def on_leader_change(term: int, lead: int) -> None:
            if lead == lid and not proposed:
                proposed.append(asyncio.create_task(new.propose(json.dumps("new").encode(), timeout=5.0)))
                await asyncio.sleep(0)  # the proposal is queued before the loop takes the next Ready

        new.on_leader_change = on_leader_change
        back = await _start(follower, peers, tmp_path)
        try:
            end = loop.time() + 10
            while not proposed:
                assert loop.time() < end, "the restarted node never led"
                await asyncio.sleep(0.01)
            result = await proposed[0]
            assert "old" in sm.index_of, "the old entry was not committed by the new leader"
            assert result == sm.index_of.get("new"), (
                f"the new proposal was answered with index {result}; the old entry is at {sm.index_of['old']}, "
                f"the new one at {sm.index_of.get('new')}"
            )
            assert sm.index_of["old"] < sm.index_of["new"]
        finally:
            await new.stop()
            await back.stop()

    asyncio.run(main())
