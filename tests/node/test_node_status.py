"""``RaftNode.status()`` and ``RaftNode.counters`` on a three-node cluster in one process: what each role reports,
the leader's view of its followers while one is down and after it catches up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from node_harness import free_ports, leader_of, read_file, write_later

from aiowal import AsyncDiskStorage
from aiowal.node import FollowerProgress, NodeConfig, NotLeaderError, RaftNode
from aiowal.node.snapshots import SnapshotStore
from aiowal.raftpb import ConfState, HardState, Snapshot, SnapshotMetadata


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def apply(self, index: int, data: bytes) -> object:
        self.n += 1
        return index

    def snapshot_to(self, path: str) -> Awaitable[None]:
        return write_later(path, str(self.n).encode())

    async def restore_from(self, path: str) -> None:
        self.n = int(await read_file(path))


async def _start(i: int, peers: dict[int, tuple[str, int]], root: Path) -> RaftNode:
    st = await AsyncDiskStorage.open(root / f"n{i}", hard_sync=True)
    # Elections slow enough that a busy machine does not start one mid-test (the test follows one leader).
    cfg = NodeConfig(
        i, peers, tick_interval=0.01, election_tick=50, heartbeat_tick=5, snapshot_every=30, keep_entries=10, seed=i
    )
    node = RaftNode(cfg, st, Counter())
    await node.start()
    return node


async def _until(cond: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not cond():
        assert loop.time() < end, what
        await asyncio.sleep(0.01)


def test_status_of_each_role_and_of_a_lagging_follower(tmp_path: Path) -> None:
    async def main() -> None:
        ports = free_ports(3)
        peers = {i + 1: ("127.0.0.1", ports[i]) for i in range(3)}
        nodes = {i: await _start(i, peers, tmp_path) for i in peers}
        try:
            leader = await leader_of(nodes)
            lid = leader.config.node_id
            for n in range(20):
                await leader.propose(json.dumps(n).encode())
            last = leader.status().last_index

            def settled() -> bool:
                return all(n.status().applied == last for n in nodes.values()) and all(
                    p.match == last for p in leader.status().progress.values()
                )

            await _until(settled, "the cluster never settled")
            for i, node in nodes.items():
                st = node.status()
                assert st.id == i and st.leader == lid and st.term == leader.status().term
                assert (st.commit, st.applied, st.last_index) == (last, last, last)
                assert (st.voters, st.learners, st.voters_outgoing) == ([1, 2, 3], [], [])
                if i == lid:
                    assert st.role == "leader"
                    assert st.progress == {
                        j: FollowerProgress(match=last, next=last + 1, state="replicate", learner=False)
                        for j in peers
                        if j != lid
                    }
                else:
                    assert st.role == "follower" and st.progress == {}
                assert json.loads(json.dumps(st.to_dict()))["id"] == i

            c = leader.counters
            assert (c.proposals, c.proposals_failed) == (20, 0)
            assert c.applied == c.committed == last  # the leader's empty entry and the 20 writes
            assert all(n.counters.leader_changes == 1 for n in nodes.values())

            # A follower goes down: the leader's view of it stops at what it had; the stored snapshot moves on.
            down = next(j for j in peers if j != lid)
            await nodes.pop(down).stop()
            for n in range(60):
                await leader.propose(json.dumps(n).encode())
            st = leader.status()
            assert st.progress[down].match == last < st.commit == st.last_index
            assert st.snapshot_index > last
            assert leader.counters.proposals == 80

            # It comes back behind the compacted log and catches up through the snapshot.
            nodes[down] = await _start(down, peers, tmp_path)
            await _until(lambda: leader.status().progress[down].match == leader.status().last_index, "no catch-up")
            back = nodes[down].status()
            assert back.snapshot_index > last and back.leader == lid
            assert nodes[down].counters.snapshots_received == 1 and leader.counters.snapshots_sent >= 1
            assert leader.status().progress[down].state == "replicate"
        finally:
            for node in nodes.values():
                await node.stop()

    asyncio.run(main())


def test_counters_count_failed_proposals(tmp_path: Path) -> None:
    async def main() -> None:
        ports = free_ports(3)
        peers = {i + 1: ("127.0.0.1", ports[i]) for i in range(3)}
        nodes = {i: await _start(i, peers, tmp_path) for i in peers}
        leader = await leader_of(nodes)
        try:
            for j in [j for j in nodes if nodes[j] is not leader]:
                await nodes.pop(j).stop()
            try:
                await leader.propose(b"1", timeout=0.05)  # no quorum: it cannot commit
            except (TimeoutError, NotLeaderError):
                pass
            else:
                raise AssertionError("a proposal committed without a quorum")
            assert (leader.counters.proposals, leader.counters.proposals_failed) == (1, 1)
        finally:
            for node in nodes.values():
                await node.stop()

    asyncio.run(main())


def test_status_shows_a_joint_configuration_from_storage(tmp_path: Path) -> None:
    """A node restarted inside a joint configuration (its snapshot's ConfState) reports both halves."""

    async def main() -> None:
        st = await AsyncDiskStorage.open(tmp_path / "n1", hard_sync=True)
        store = SnapshotStore(str(tmp_path / "n1" / "snapshots"))
        store.prepare()
        tmp = store.tmp_path(10)
        Path(tmp).write_bytes(b"7")
        ref = await store.seal(tmp, 10, 2, {})
        cs = ConfState(voters=[1, 2, 3], voters_outgoing=[1, 2, 4], learners=[5])
        snap = Snapshot(data=ref.encode(), metadata=SnapshotMetadata(index=10, term=2, conf_state=cs))
        await st.save(HardState(term=2, commit=10), [], snap)
        ports = free_ports(4)
        peers = {i: ("127.0.0.1", ports[i - 1]) for i in (1, 2, 3, 4)}
        node = RaftNode(NodeConfig(1, peers, seed=1, election_tick=1000), st, Counter())
        await node.start()
        try:
            status = node.status()
            assert (status.voters, status.voters_outgoing, status.learners) == ([1, 2, 3], [1, 2, 4], [5])
            assert (status.role, status.term, status.commit, status.applied, status.snapshot_index) == (
                "follower",
                2,
                10,
                10,
                10,
            )
            assert status.progress == {}
            sm = node.sm
            assert isinstance(sm, Counter) and sm.n == 7  # restored from the snapshot file
        finally:
            await node.stop()

    asyncio.run(main())
