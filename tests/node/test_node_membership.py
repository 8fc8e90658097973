"""Membership changes through ``RaftNode`` in one process: a node that joins empty and catches up through a streamed
snapshot, is promoted and removed; the leader removing itself; a dead member replaced through a joint
configuration; the configuration and the members' addresses surviving restarts; changes refused while another is
in flight; forwarded proposals the leader drops."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from node_harness import KV, free_ports, leader_of

from aiowal import AsyncDiskStorage
from aiowal.node import ConfChangeRefusedError, NodeConfig, NotLeaderError, RaftNode
from aiowal.node.members import joint
from aiowal.raftpb import ConfChangeType, ConfState, Entry, Message, MessageType, SnapshotMetadata


class Group:
    """Nodes on loopback, each with its own storage under ``root``; ``addrs`` holds every node's Raft address, but a
    node is only told the addresses in its ``peers`` (the rest it must learn from configuration changes)."""

    def __init__(self, root: Path, n: int) -> None:
        self.root = root
        ports = free_ports(n)
        self.addrs = {i + 1: ("127.0.0.1", ports[i]) for i in range(n)}
        self.nodes: dict[int, RaftNode] = {}
        self.sms: dict[int, KV] = {}

    async def start(self, i: int, peers: list[int], join: bool = False) -> RaftNode:
        st = await AsyncDiskStorage.open(self.root / f"n{i}", hard_sync=True)
        self.sms[i] = KV()
        cfg = NodeConfig(
            i,
            {j: self.addrs[j] for j in peers},
            tick_interval=0.005,
            snapshot_every=30,
            keep_entries=10,
            seed=i,
            join=join,
        )
        node = RaftNode(cfg, st, self.sms[i])
        await node.start()
        self.nodes[i] = node
        return node

    async def stop(self, i: int) -> None:
        await self.nodes.pop(i).stop()

    async def stop_all(self) -> None:
        for i in list(self.nodes):
            await self.stop(i)

    async def put(self, k: str, v: str) -> None:
        for _ in range(300):
            try:
                leader = await leader_of(self.nodes)
                await leader.propose(json.dumps([k, v]).encode(), timeout=2.0)
                return
            except (NotLeaderError, TimeoutError, AssertionError):
                await asyncio.sleep(0.02)
        raise AssertionError(f"write {k} never acknowledged")

    async def until(self, cond: Callable[[], bool], what: str, seconds: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while not cond():
            assert loop.time() < end, what
            await asyncio.sleep(0.01)


def test_join_as_learner_catch_up_by_snapshot_promote_remove_and_restart(tmp_path: Path) -> None:
    async def main() -> None:
        g = Group(tmp_path, 4)
        try:
            for i in (1, 2, 3):
                await g.start(i, [1, 2, 3])
            acked = {}
            for n in range(80):  # past two snapshots: a newcomer cannot be caught up from the log alone
                await g.put(f"k{n}", f"v{n}")
                acked[f"k{n}"] = f"v{n}"
            leader = await leader_of(g.nodes)
            assert leader.storage.first_index() > 1
            # Node 4 is told the cluster's addresses; the others learn its own from the change that adds it.
            new = await g.start(4, [1, 2, 3, 4], join=True)
            assert new.status().voters == [] and not new.is_leader
            change = await leader.add_learner(4, g.addrs[4], {"http": "127.0.0.1:1"})
            assert list(change.conf_state.learners) == [4] and list(change.conf_state.voters) == [1, 2, 3]
            await g.until(lambda: g.sms[4].data == acked, "the learner never caught up")
            assert new.counters.snapshots_received == 1 and new.storage.snapshot().metadata.index > 0
            assert leader.counters.snapshots_sent >= 1 and leader.counters.snapshot_bytes_sent > 0
            await leader.promote(4)
            assert leader.status().voters == [1, 2, 3, 4]
            await g.until(lambda: all(n.status().voters == [1, 2, 3, 4] for n in g.nodes.values()), "not everywhere")
            for i, n in g.nodes.items():
                if i != 4:
                    assert n.transport.addr_of(4) == g.addrs[4]
                assert n.members()[4].meta == {"http": "127.0.0.1:1"}
            for n in range(80, 100):
                await g.put(f"k{n}", f"v{n}")
                acked[f"k{n}"] = f"v{n}"

            # Remove a founding follower; the group keeps going with 3 voters.
            leader = await leader_of(g.nodes)
            gone = next(i for i in (1, 2, 3) if i != leader.id)
            change = await leader.remove_member(gone)
            assert gone not in change.conf_state.voters
            # The removed node itself may never learn that (the leader stops replicating to it): the others must.
            await g.until(
                lambda: all(n.applied >= change.index for i, n in g.nodes.items() if i != gone), "removal not applied"
            )
            await g.stop(gone)
            assert gone not in leader.transport.peers()
            for n in range(100, 140):
                await g.put(f"k{n}", f"v{n}")
                acked[f"k{n}"] = f"v{n}"
            want = sorted({1, 2, 3, 4} - {gone})
            await g.until(lambda: all(sm.data == acked for i, sm in g.sms.items() if i in g.nodes), "diverged")

            # Restart everyone: the configuration comes back from the snapshot and the log, and so does node 4's
            # address on nodes whose own config never had it.
            snap_indexes = {i: n.storage.snapshot().metadata.index for i, n in g.nodes.items()}
            assert all(s >= change.index for s in snap_indexes.values()), snap_indexes
            await g.stop_all()
            for i in want:
                await g.start(i, [1, 2, 3] if i != 4 else [1, 2, 3, 4])
            await g.until(lambda: all(n.status().voters == want for n in g.nodes.values()), "configuration lost")
            for i, n in g.nodes.items():
                if i != 4:
                    assert n.transport.addr_of(4) == g.addrs[4]
            await g.put("after", "restart")
            acked["after"] = "restart"
            await g.until(lambda: all(g.sms[i].data == acked for i in want), "diverged after restart")
        finally:
            await g.stop_all()

    asyncio.run(main())


def test_the_leader_removes_itself_and_steps_down(tmp_path: Path) -> None:
    async def main() -> None:
        g = Group(tmp_path, 3)
        try:
            for i in (1, 2, 3):
                await g.start(i, [1, 2, 3])
            await g.put("a", "1")
            old = await leader_of(g.nodes)
            change = await old.remove_member(old.id)
            assert old.id not in change.conf_state.voters
            assert not old.is_leader
            with pytest.raises(NotLeaderError):
                await old.propose(json.dumps(["b", "2"]).encode())
            # The other two elect a leader among themselves once one of them has applied the change.
            rest = {i: n for i, n in g.nodes.items() if i != old.id}
            await g.until(lambda: any(n.is_leader for n in rest.values()), "no new leader", seconds=20)
            await g.until(lambda: sum(n.applied >= change.index for n in rest.values()) == 2, "the change not applied")
            await g.stop(old.id)
            await g.put("b", "2")
            new = await leader_of(g.nodes)
            assert new.status().voters == sorted(rest)
            # The removed node never campaigns: it is not a voter in its own configuration.
            assert g.sms[new.id].data == {"a": "1", "b": "2"}
        finally:
            await g.stop_all()

    asyncio.run(main())


def test_replace_a_dead_member_through_a_joint_configuration(tmp_path: Path) -> None:
    async def main() -> None:
        g = Group(tmp_path, 4)
        try:
            for i in (1, 2, 3):
                await g.start(i, [1, 2, 3])
            for n in range(20):
                await g.put(f"k{n}", "v")
            leader = await leader_of(g.nodes)
            dead = next(i for i in (1, 2, 3) if i != leader.id)
            await g.stop(dead)
            for n in range(20, 60):
                await g.put(f"k{n}", "v")
            await g.start(4, [1, 2, 3, 4], join=True)
            leader = await leader_of(g.nodes)
            seen: list[list[int]] = []
            real = leader._apply_conf_change

            def spy(e: Entry) -> None:
                real(e)
                seen.append(sorted(leader.conf_state.voters_outgoing))

            leader._apply_conf_change = spy  # type: ignore[method-assign]
            change = await leader.replace_member(dead, 4, g.addrs[4])
            want = sorted({1, 2, 3, 4} - {dead})
            assert sorted(change.conf_state.voters) == want and not change.conf_state.voters_outgoing
            # Add learner (not joint), enter joint (the old voters outgoing), leave joint.
            assert seen == [[], [1, 2, 3], []]
            await g.put("after", "replace")
            await g.until(lambda: g.sms[4].data.get("after") == "replace", "the new member does not apply")
            # The new member's vote counts: with the leader's follower (not 4) stopped, 4 makes the majority.
            other = next(i for i in want if i not in (leader.id, 4))
            await g.stop(other)
            await g.put("with", "4")  # committed only if node 4 acknowledged it
            await g.until(lambda: g.sms[4].data.get("with") == "4", "node 4 does not apply")
        finally:
            await g.stop_all()

    asyncio.run(main())


def test_a_second_change_is_refused_while_one_is_in_flight(tmp_path: Path) -> None:
    async def main() -> None:
        g = Group(tmp_path, 5)
        try:
            for i in (1, 2, 3):
                await g.start(i, [1, 2, 3])
            leader = await leader_of(g.nodes)
            await g.put("a", "1")
            first = asyncio.ensure_future(leader.add_learner(4, g.addrs[4]))
            await asyncio.sleep(0)
            with pytest.raises(ConfChangeRefusedError):
                await leader.add_learner(5, g.addrs[5])
            await first
            # Removing every voter does not fit any configuration: refused outright.
            with pytest.raises(ConfChangeRefusedError):
                await leader.change_membership(
                    lambda ctx: joint([(ConfChangeType.ConfChangeRemoveNode, i) for i in (1, 2, 3)], ctx)
                )
            assert leader.status().learners == [4]
        finally:
            await g.stop_all()

    asyncio.run(main())


def test_a_dropped_forwarded_proposal_does_not_cut_the_connection(tmp_path: Path) -> None:
    """A MsgProp forwarded to a node that knows no leader makes ``RawNode.step`` raise ProposalDroppedError; the
    node drops it and reads on. (It once escaped ``_on_message`` and closed the connection, losing what came
    after it on that connection.)"""

    async def main() -> None:
        g = Group(tmp_path, 3)
        try:
            node = await g.start(1, [1, 2, 3])  # alone: no leader
            await asyncio.sleep(0.05)
            assert node.leader == 0
            _, writer = await asyncio.open_connection(*g.addrs[1])

            def frame(m: Message) -> bytes:
                body = m.SerializeToString()
                return len(body).to_bytes(4, "big") + body

            prop = Message(type=MessageType.MsgProp, to=1, entries=[Entry(data=b"x")])
            setattr(prop, "from", 2)
            beat = Message(type=MessageType.MsgHeartbeat, to=1, term=7, commit=0)
            setattr(beat, "from", 2)
            writer.write(frame(prop) + frame(beat))
            await writer.drain()
            await g.until(lambda: node.status().term == 7 and node.leader == 2, "the heartbeat after it was lost")
            writer.close()
        finally:
            await g.stop_all()

    asyncio.run(main())


def test_a_snapshot_message_without_its_file_is_ignored(tmp_path: Path) -> None:
    """Snapshots arrive with their file over a connection of their own; a MsgSnap on the Raft connection names a
    file this node does not have, and installing it would leave Raft with a snapshot the state machine cannot load."""

    async def main() -> None:
        g = Group(tmp_path, 3)
        try:
            node = await g.start(1, [1, 2, 3])
            _, writer = await asyncio.open_connection(*g.addrs[1])
            snap = Message(type=MessageType.MsgSnap, to=1, term=5)
            setattr(snap, "from", 2)
            snap.snapshot.metadata.CopyFrom(SnapshotMetadata(index=50, term=5, conf_state=ConfState(voters=[1, 2, 3])))
            snap.snapshot.data = b'{"size": 1, "crc32c": 0, "members": {}}'
            beat = Message(type=MessageType.MsgHeartbeat, to=1, term=5)
            setattr(beat, "from", 2)
            body = snap.SerializeToString()
            beat_body = beat.SerializeToString()
            writer.write(len(body).to_bytes(4, "big") + body + len(beat_body).to_bytes(4, "big") + beat_body)
            await writer.drain()
            await g.until(lambda: node.status().term == 5, "the heartbeat after it was not read")
            st = node.status()
            assert (st.snapshot_index, st.commit, st.applied) == (0, 3, 3)
            assert node.storage.snapshot().metadata.index == 0
            writer.close()
        finally:
            await g.stop_all()

    asyncio.run(main())
