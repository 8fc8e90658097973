"""RawNode: the Ready / advance contract, restarts from storage, and the three storages (memory, disk, async)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from aiowal import AsyncDiskStorage, DiskStorage
from aiowal.raft import Config, MemoryStorage, ProposalDroppedError, RawNode, Ready, SoftState, StateType
from aiowal.raft.messages import MT, new_message
from aiowal.raftpb import HardState


def node(st: object, id_: int = 1, voters: tuple[int, ...] = (1,), **kw: object) -> RawNode:
    _, cs = st.initial_state()  # type: ignore[attr-defined]
    return RawNode(
        Config(id=id_, storage=st, rng=random.Random(id_), voters=() if list(cs.voters) else voters, **kw)  # type: ignore[arg-type]
    )


def handle(rn: RawNode, st: MemoryStorage | DiskStorage) -> Ready:
    rd = rn.ready()
    st.save(rd.hard_state, rd.entries, rd.snapshot)
    rn.advance(rd)
    return rd


def handle_all(rn: RawNode, st: MemoryStorage | DiskStorage) -> list[Ready]:
    rds = []
    while rn.has_ready():
        rds.append(handle(rn, st))
    return rds


def test_single_node_ready_cycle() -> None:
    """A single voter commits its entries once it has saved them: the Ready after the save applies them."""
    st = MemoryStorage()
    rn = node(st)
    assert not rn.has_ready()
    rn.campaign()
    assert rn.has_ready()
    rd = handle(rn, st)
    assert rd.soft_state == SoftState(1, StateType.LEADER)
    assert rd.hard_state == HardState(term=1, vote=1, commit=0)
    assert [(e.index, e.term) for e in rd.entries] == [(1, 1)]
    assert rd.committed_entries == []
    assert rd.must_sync
    rd = handle(rn, st)
    assert rd.hard_state == HardState(term=1, vote=1, commit=1)
    assert rd.entries == []
    assert [(e.index, e.term) for e in rd.committed_entries] == [(1, 1)]
    assert not rd.must_sync
    assert not rn.has_ready()
    rn.propose(b"foo")
    rd = handle(rn, st)
    assert rd.soft_state is None
    assert [e.data for e in rd.entries] == [b"foo"]
    assert rd.committed_entries == []
    rd = handle(rn, st)
    assert [e.data for e in rd.committed_entries] == [b"foo"]
    assert rd.hard_state == HardState(term=1, vote=1, commit=2)
    assert not rn.has_ready()
    assert st.last_index() == 2


def test_leader_counts_itself_only_after_saving() -> None:
    """A leader may send entries before saving them; they are not committed on its own unsaved copy."""
    st = MemoryStorage()
    rn = node(st, voters=(1, 2))
    rn.campaign()
    handle_all(rn, st)
    rn.step(new_message(MT.MsgVoteResp, 1, 2, term=1))
    rd = rn.ready()  # the empty entry of the new term, and the MsgApp carrying it
    assert [e.index for e in rd.entries] == [1]
    assert [m.type for m in rd.messages] == [MT.MsgApp]
    # The follower answers before the leader has saved: one of two copies is saved, no quorum.
    rn.step(new_message(MT.MsgAppResp, 1, 2, term=1, index=1))
    assert rn.raft.raft_log.committed == 0
    st.save(rd.hard_state, rd.entries, rd.snapshot)
    rn.advance(rd)
    assert rn.raft.raft_log.committed == 1


def test_commit_only_change_does_not_need_sync() -> None:
    st = MemoryStorage()
    rn = node(st, voters=(1, 2))
    rn.campaign()
    handle(rn, st)
    rn.step(new_message(MT.MsgVoteResp, 1, 2, term=1))
    rd = handle(rn, st)
    assert rd.entries and rd.must_sync
    rn.step(new_message(MT.MsgAppResp, 1, 2, term=1, index=1))
    rd = handle(rn, st)
    assert rd.hard_state is not None and rd.hard_state.commit == 1
    assert not rd.entries
    assert not rd.must_sync


def test_messages_are_handed_out_once() -> None:
    st = MemoryStorage()
    rn = node(st, voters=(1, 2, 3))
    rn.campaign()
    rd = handle(rn, st)
    assert sorted((m.type, m.to) for m in rd.messages) == [(MT.MsgVote, 2), (MT.MsgVote, 3)]
    assert not rn.has_ready()


def test_proposal_without_leader_is_dropped() -> None:
    rn = node(MemoryStorage(), voters=(1, 2, 3))
    with pytest.raises(ProposalDroppedError):
        rn.propose(b"x")


def test_step_refuses_local_messages() -> None:
    rn = node(MemoryStorage())
    with pytest.raises(ValueError, match="local message"):
        rn.step(new_message(MT.MsgHup, 1, 1))


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="0 as a node id"):
        node(MemoryStorage(), id_=0)
    with pytest.raises(ValueError, match="election tick"):
        node(MemoryStorage(), election_tick=1, heartbeat_tick=1)


def test_restart_from_memory_storage() -> None:
    """A node rebuilt on the same storage keeps its term, vote, log and commit; re-delivers unapplied entries."""
    st = MemoryStorage()
    rn = node(st)
    rn.campaign()
    handle_all(rn, st)
    for d in (b"a", b"b", b"c"):
        rn.propose(d)
        handle_all(rn, st)
    rn2 = node(st)
    r = rn2.raft
    assert (r.term, r.vote, r.raft_log.committed, r.raft_log.last_index()) == (1, 1, 4, 4)
    assert r.state is StateType.FOLLOWER
    rd = rn2.ready()
    assert [e.data for e in rd.committed_entries] == [b"", b"a", b"b", b"c"]
    assert rd.entries == []
    rn2.advance(rd)
    # Elected again: a new term, the old entries kept.
    rn2.campaign()
    rds = handle_all(rn2, st)
    assert rds[-1].hard_state == HardState(term=2, vote=1, commit=5)


def test_restart_with_applied_skips_applied_entries() -> None:
    st = MemoryStorage()
    rn = node(st)
    rn.campaign()
    handle_all(rn, st)
    for d in (b"a", b"b"):
        rn.propose(d)
        handle_all(rn, st)
    st.create_snapshot(2, rn.raft.conf_state(), b"snap")
    rn2 = node(st, applied=2)
    assert rn2.raft.prs.voters() == [1]
    rd = rn2.ready()
    assert [e.data for e in rd.committed_entries] == [b"b"]


def test_three_nodes_on_disk_storage(tmp_path: Path) -> None:
    """Three RawNodes, each on its own DiskStorage, commit a proposal; a restarted node reads everything back."""
    ids = (1, 2, 3)
    stores = {i: DiskStorage.open(str(tmp_path / f"n{i}")) for i in ids}
    nodes = {i: node(stores[i], i, ids) for i in ids}
    applied: dict[int, list[bytes]] = {i: [] for i in ids}

    def pump() -> None:
        busy = True
        while busy:
            busy = False
            for i, rn in nodes.items():
                if not rn.has_ready():
                    continue
                busy = True
                rd = rn.ready()
                stores[i].save(rd.hard_state, rd.entries, rd.snapshot)
                for m in rd.messages:
                    nodes[m.to].step(m)
                applied[i].extend(e.data for e in rd.committed_entries if e.data)
                rn.advance(rd)

    try:
        nodes[1].campaign()
        pump()
        assert nodes[1].raft.state is StateType.LEADER
        for d in (b"x", b"y"):
            nodes[2].propose(d)  # forwarded to the leader
            pump()
        assert applied == {i: [b"x", b"y"] for i in ids}
        stores[3].close()
        stores[3] = DiskStorage.open(str(tmp_path / "n3"))
        nodes[3] = node(stores[3], 3, ids)
        r = nodes[3].raft
        assert (r.term, r.raft_log.committed, r.raft_log.last_index()) == (1, 3, 3)
        assert [e.data for e in nodes[3].ready().committed_entries] == [b"", b"x", b"y"]
    finally:
        for st in stores.values():
            st.close()


def test_async_disk_storage_is_a_storage(tmp_path: Path) -> None:
    """The reads of AsyncDiskStorage feed the core; its awaited save persists each Ready."""

    async def main() -> list[bytes]:
        st = await AsyncDiskStorage.open(str(tmp_path / "a"))
        try:
            rn = node(st)
            rn.campaign()
            out: list[bytes] = []
            for d in (None, b"p", b"q"):
                if d is not None:
                    rn.propose(d)
                while rn.has_ready():
                    rd = rn.ready()
                    await st.save(rd.hard_state, rd.entries, rd.snapshot)
                    out.extend(e.data for e in rd.committed_entries if e.data)
                    rn.advance(rd)
            assert st.last_index() == 3
            assert node(st).raft.raft_log.committed == 3
            return out
        finally:
            await st.close()

    assert asyncio.run(main()) == [b"p", b"q"]


def test_propose_many_sends_one_append() -> None:
    """Proposals stepped together go to each follower in one MsgApp, in order."""
    st = MemoryStorage()
    rn = node(st, voters=(1, 2, 3))
    rn.campaign()
    handle_all(rn, st)
    rn.step(new_message(MT.MsgVoteResp, 1, 2, term=1))
    rd = handle(rn, st)
    for f in (2, 3):
        rn.step(new_message(MT.MsgAppResp, 1, f, term=1, index=rd.entries[-1].index))
    handle_all(rn, st)
    rn.propose_many([b"a", b"b", b"c"])
    rd = rn.ready()
    assert [e.data for e in rd.entries] == [b"a", b"b", b"c"]
    apps = [m for m in rd.messages if m.type == MT.MsgApp]
    assert sorted(m.to for m in apps) == [2, 3]
    assert all([e.data for e in m.entries] == [b"a", b"b", b"c"] for m in apps)
    rn.advance(rd)


def test_take_leader_messages_only_for_a_leader() -> None:
    """A leader's messages can be taken ahead of the next Ready (while a save is in flight); a candidate's cannot:
    its vote requests must wait until its term and vote are saved."""
    st = MemoryStorage()
    rn = node(st, voters=(1, 2, 3))
    rn.campaign()
    assert rn.take_leader_messages() == []  # a candidate
    rd = handle(rn, st)
    assert [m.type for m in rd.messages] == [MT.MsgVote, MT.MsgVote]
    rn.step(new_message(MT.MsgVoteResp, 1, 2, term=1))
    rd = handle(rn, st)
    for f in (2, 3):
        rn.step(new_message(MT.MsgAppResp, 1, f, term=1, index=rd.entries[-1].index))
    handle_all(rn, st)
    rn.propose(b"x")
    rd = rn.ready()
    assert [e.data for e in rd.entries] == [b"x"]
    assert [m.type for m in rd.messages] == [MT.MsgApp, MT.MsgApp]
    # The save of rd is in flight; another proposal comes in: its MsgApps may go out now, before rd is saved.
    rn.propose(b"y")
    msgs = rn.take_leader_messages()
    assert [m.type for m in msgs] == [MT.MsgApp, MT.MsgApp]
    assert all([e.data for e in m.entries] == [b"y"] for m in msgs)
    assert rn.raft.raft_log.committed == rd.entries[0].index - 1  # nothing counted on the unsaved copy
    st.save(rd.hard_state, rd.entries, rd.snapshot)
    rn.advance(rd)
    rd = rn.ready()
    assert [e.data for e in rd.entries] == [b"y"]
    assert rd.messages == []
