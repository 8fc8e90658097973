"""Linearizable reads with the read index (ReadOnlySafe) and leader transfer (after etcd raft's raft_test.go)."""

from __future__ import annotations

import pytest
from raft_harness import Network, msg, new_raft, persist, read_messages, storage_with

from aiowal.raft import ProposalDroppedError, ReadState, StateType
from aiowal.raft.messages import MT
from aiowal.raft.raft import Raft
from aiowal.raftpb import Entry, HardState


def read_index(net: Network, id_: int, ctx: bytes) -> None:
    net.send(msg(MT.MsgReadIndex, id_, id_, entries=[Entry(data=ctx)]))


def test_read_index_on_leader_and_followers() -> None:
    net = Network.of_size(3)
    net.campaign(1)
    for i, id_ in enumerate((1, 2, 3, 1, 2)):
        net.propose(1, b"w%d" % i)
        ctx = b"ctx%d" % i
        read_index(net, id_, ctx)
        r = net.raft(id_)
        assert r.read_states == [ReadState(net.raft(1).raft_log.committed, ctx)]
        r.read_states = []


def test_read_index_needs_a_quorum_of_heartbeat_acks() -> None:
    """Cut off from its followers, a leader confirms no read; once they answer it does."""
    net = Network.of_size(3)
    net.campaign(1)
    a = net.raft(1)
    net.isolate(1)
    read_index(net, 1, b"ctx")
    assert a.read_states == []
    net.recover()
    net.send(msg(MT.MsgBeat, 1, 1))
    assert a.read_states == [ReadState(a.raft_log.committed, b"ctx")]


def test_read_index_waits_for_a_commit_in_the_leaders_term() -> None:
    """A new leader does not know the commit index until it commits an entry of its own term."""
    r = new_raft(1, [1, 2, 3])
    r.become_candidate()
    r.become_leader()
    persist(r)
    read_messages(r)
    r.step(msg(MT.MsgReadIndex, 1, 1, entries=[Entry(data=b"ctx")]))
    assert r.pending_read_index_msgs and read_messages(r) == []
    r.step(msg(MT.MsgAppResp, 2, 1, term=r.term, index=1))
    assert r.raft_log.committed == 1
    hbs = [m for m in read_messages(r) if m.type == MT.MsgHeartbeat]
    assert {m.to for m in hbs} == {2, 3}
    assert all(m.context == b"ctx" for m in hbs)
    r.step(msg(MT.MsgHeartbeatResp, 3, 1, term=r.term, context=b"ctx"))
    assert r.read_states == [ReadState(1, b"ctx")]


def test_later_read_confirms_earlier_ones() -> None:
    r = new_raft(1, [1, 2, 3])
    r.become_candidate()
    r.become_leader()
    persist(r)
    r.step(msg(MT.MsgAppResp, 2, 1, term=r.term, index=1))
    for ctx in (b"a", b"b", b"c"):
        r.step(msg(MT.MsgReadIndex, 1, 1, entries=[Entry(data=ctx)]))
    read_messages(r)
    r.step(msg(MT.MsgHeartbeatResp, 2, 1, term=r.term, context=b"b"))
    assert [s.request_ctx for s in r.read_states] == [b"a", b"b"]
    r.step(msg(MT.MsgHeartbeatResp, 2, 1, term=r.term, context=b"c"))
    assert [s.request_ctx for s in r.read_states] == [b"a", b"b", b"c"]


def test_single_voter_answers_read_at_once() -> None:
    net = Network(new_raft(1, [1]))
    net.campaign(1)
    read_index(net, 1, b"x")
    assert net.raft(1).read_states == [ReadState(1, b"x")]


def test_read_index_without_leader_is_dropped() -> None:
    r = new_raft(2, [1, 2, 3])
    with pytest.raises(ProposalDroppedError):
        r.step(msg(MT.MsgReadIndex, 2, 2, entries=[Entry(data=b"x")]))


def test_forwarded_read_answers_the_node_that_asked() -> None:
    """A read forwarded twice (its first target lost leadership) is still answered to the node that asked."""
    net = Network.of_size(3)
    net.campaign(1)
    b = net.raft(2)
    b.lead = 3  # 2 believes 3 leads; 3 forwards to 1
    read_index(net, 2, b"x")
    assert b.read_states == [ReadState(1, b"x")]
    assert net.raft(3).read_states == []


# --- leader transfer -----------------------------------------------------------------------------------------
def transfer(net: Network, lead: int, to: int) -> None:
    net.send(msg(MT.MsgTransferLeader, to, lead))


def test_transfer_to_up_to_date_follower() -> None:
    net = Network.of_size(3, check_quorum=True)
    net.campaign(1)
    transfer(net, 1, 2)
    a, b = net.raft(1), net.raft(2)
    assert b.state is StateType.LEADER
    assert a.state is StateType.FOLLOWER
    assert a.lead == 2
    assert b.term == 2
    # The transfer bypassed the followers' leader lease.
    net.propose(2, b"after")
    assert a.raft_log.committed == b.raft_log.committed == 3


def test_transfer_to_lagging_follower_catches_it_up_first() -> None:
    net = Network.of_size(3)
    net.campaign(1)
    net.isolate(3)
    net.propose(1, b"x")
    net.recover()
    a = net.raft(1)
    a.prs.progress[3].match = 1
    transfer(net, 1, 3)
    assert net.raft(3).state is StateType.LEADER
    assert net.raft(3).raft_log.last_index() >= 2


def test_transfer_blocks_proposals_until_aborted() -> None:
    net = Network.of_size(3)
    net.campaign(1)
    net.isolate(3)
    transfer(net, 1, 3)
    a = net.raft(1)
    assert a.lead_transferee == 3
    with pytest.raises(ProposalDroppedError):
        a.step(msg(MT.MsgProp, 1, 1, entries=[Entry(data=b"x")]))
    for _ in range(a.election_timeout):
        a.tick()
    assert a.lead_transferee == 0
    assert a.state is StateType.LEADER
    net.propose(1, b"x")
    assert a.raft_log.committed == 2


def test_transfer_to_self_or_unknown_is_ignored() -> None:
    net = Network.of_size(3)
    net.campaign(1)
    transfer(net, 1, 1)
    transfer(net, 1, 9)
    a = net.raft(1)
    assert a.state is StateType.LEADER
    assert a.lead_transferee == 0


def test_timeout_now_ignored_by_candidate() -> None:
    r: Raft = new_raft(2, [1, 2, 3])
    r.become_candidate()
    r.step(msg(MT.MsgTimeoutNow, 1, 2, term=r.term))
    assert r.state is StateType.CANDIDATE
    assert r.term == 1


def test_single_voter_leader_answers_reads_only_once_its_term_has_a_committed_entry() -> None:
    """Regression (found by the simulation with membership changes): a single voter restarted with a commit index
    behind its log (it had told its learners of a later commit before saving it, then crashed) answered a read at
    once with that older commit index, below entries already applied elsewhere."""
    st = storage_with([(1, 1), (2, 1), (3, 1)], HardState(term=1, vote=1, commit=2))
    r = new_raft(1, [1], storage=st)
    r.step(msg(MT.MsgHup, 1, 1))
    assert r.state is StateType.LEADER and r.raft_log.committed == 2
    r.step(msg(MT.MsgReadIndex, 1, 1, entries=[Entry(data=b"ctx")]))
    assert r.read_states == []  # entry 3 may be committed: wait for this term's first entry
    persist(r)
    assert r.raft_log.committed == 4
    assert r.read_states == [ReadState(4, b"ctx")]
