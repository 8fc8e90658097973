"""Elections in a network: basic, pre-vote, check-quorum and leader lease (after etcd raft's raft_test.go)."""

from __future__ import annotations

import pytest
from raft_harness import NONE, Network, hup, msg, new_raft, read_messages, storage_with

from aiowal.raft import StateType
from aiowal.raft.messages import MT
from aiowal.raft.raft import Raft
from aiowal.raftpb import HardState


def states(net: Network) -> dict[int, StateType]:
    return {i: r.state for i, r in net.peers.items() if r is not None}


@pytest.mark.parametrize("pre_vote", [False, True])
@pytest.mark.parametrize(
    ("members", "state", "term"),
    [
        ("rrr", StateType.LEADER, 1),
        ("rrn", StateType.LEADER, 1),
        ("rnn", StateType.CANDIDATE, 1),
        ("rrnn", StateType.CANDIDATE, 1),
        ("rrnnr", StateType.LEADER, 1),
    ],
)
def test_leader_election(pre_vote: bool, members: str, state: StateType, term: int) -> None:
    """A node wins when a majority answers; black holes ('n') make it wait (as a pre-candidate with pre-vote)."""
    ids = list(range(1, len(members) + 1))
    nodes = [new_raft(i, ids, pre_vote=pre_vote) if c == "r" else None for i, c in zip(ids, members, strict=True)]
    net = Network(*nodes)
    net.campaign(1)
    r = net.raft(1)
    if state is StateType.CANDIDATE and pre_vote:
        # A pre-candidate that cannot win never bumps its term.
        assert (r.state, r.term) == (StateType.PRE_CANDIDATE, 0)
    else:
        assert (r.state, r.term) == (state, term)


def test_leader_cycle() -> None:
    """Every node can win in turn; the others follow."""
    for pre_vote in (False, True):
        net = Network(*(new_raft(i, [1, 2, 3], pre_vote=pre_vote) for i in (1, 2, 3)))
        for campaigner in (1, 2, 3):
            net.campaign(campaigner)
            for i, st in states(net).items():
                assert st is (StateType.LEADER if i == campaigner else StateType.FOLLOWER)


def test_single_node_commits() -> None:
    net = Network(new_raft(1, [1]))
    net.campaign(1)
    net.propose(1, b"some data")
    net.propose(1, b"some data")
    assert net.raft(1).raft_log.committed == 3


def test_dueling_candidates() -> None:
    """Two candidates in one term: the one with the newer log wins the next election; the other catches up."""
    a, b, c = (new_raft(i, [1, 2, 3]) for i in (1, 2, 3))
    net = Network(a, b, c)
    net.cut(1, 3)
    net.campaign(1)
    net.campaign(3)
    assert a.state is StateType.LEADER
    assert c.state is StateType.CANDIDATE
    net.recover()
    # 3 is at term 1 as a candidate; its new campaign (term 2) disrupts 1 but fails: its log is behind.
    net.campaign(3)
    assert [r.state for r in (a, b, c)] == [StateType.FOLLOWER, StateType.FOLLOWER, StateType.FOLLOWER]
    assert [r.term for r in (a, b, c)] == [2, 2, 2]
    assert a.raft_log.committed == b.raft_log.committed == 1
    assert c.raft_log.committed == 0


def test_candidate_concede() -> None:
    net = Network.of_size(3)
    net.isolate(1)
    net.campaign(1)
    net.campaign(3)
    net.recover()
    # 1 (a stale candidate) hears 3's heartbeat and concedes.
    net.send(msg(MT.MsgBeat, 3, 3))
    net.propose(3, b"force follower")
    net.send(msg(MT.MsgBeat, 3, 3))
    a = net.raft(1)
    assert a.state is StateType.FOLLOWER
    assert a.term == 1
    logs = [
        [(e.index, e.term, e.data) for e in r.raft_log.slice(1, r.raft_log.last_index() + 1, None)]
        for r in (net.raft(1), net.raft(3))
    ]
    assert logs[0] == logs[1] == [(1, 1, b""), (2, 1, b"force follower")]


def test_old_messages_are_ignored() -> None:
    net = Network.of_size(3)
    net.campaign(1)
    net.campaign(2)
    net.campaign(1)
    # A MsgApp from the leader of term 2 arrives late: it must not touch the log.
    net.send(msg(MT.MsgApp, 2, 1, term=2, entries=[], index=0))
    net.propose(1, b"somedata")
    r = net.raft(1)
    assert [(e.index, e.term) for e in r.raft_log.slice(1, r.raft_log.last_index() + 1, None)] == [
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 3),
    ]


@pytest.mark.parametrize("members", ["rrr", "rrn", "rnn"])
def test_proposal(members: str) -> None:
    """A proposal to a leader commits only with a majority behind it."""
    ids = list(range(1, len(members) + 1))
    nodes = [new_raft(i, ids) if c == "r" else None for i, c in zip(ids, members, strict=True)]
    net = Network(*nodes)
    net.campaign(1)
    if net.raft(1).state is StateType.LEADER:
        net.propose(1, b"somedata")
    wcommit = 2 if members.count("r") * 2 > len(members) else 0
    assert net.raft(1).raft_log.committed == wcommit


def test_proposal_by_proxy() -> None:
    """A follower forwards a proposal to the leader."""
    net = Network.of_size(3)
    net.campaign(1)
    net.propose(2, b"somedata")
    for r in (net.raft(1), net.raft(2), net.raft(3)):
        assert r.raft_log.committed == 2
        assert r.raft_log.slice(2, 3, None)[0].data == b"somedata"


def test_follower_without_leader_drops_proposal() -> None:
    from aiowal.raft import ProposalDroppedError

    r = new_raft(1, [1, 2, 3])
    with pytest.raises(ProposalDroppedError):
        r.step(msg(MT.MsgProp, 1, 1, entries=[__import__("aiowal").raftpb.Entry(data=b"x")]))


# --- pre-vote ------------------------------------------------------------------------------------------------
def test_prevote_does_not_bump_terms_of_a_partitioned_node() -> None:
    """With pre-vote a node cut off from the group keeps its term, so rejoining it does not depose the leader."""
    net = Network.of_size(3, pre_vote=True)
    net.campaign(1)
    net.isolate(3)
    c = net.raft(3)
    for _ in range(10):
        net.campaign(3)
    assert c.state is StateType.PRE_CANDIDATE
    assert c.term == 1
    net.recover()
    net.send(msg(MT.MsgBeat, 1, 1))
    assert net.raft(1).state is StateType.LEADER
    assert net.raft(1).term == 1
    assert c.state is StateType.FOLLOWER


def test_without_prevote_a_partitioned_node_disrupts_the_leader() -> None:
    """The contrast: without pre-vote the rejoining node's bumped term forces a new election."""
    net = Network.of_size(3)
    net.campaign(1)
    net.isolate(3)
    for _ in range(3):
        net.campaign(3)
    assert net.raft(3).term == 4
    net.recover()
    net.campaign(3)
    assert net.raft(1).state is StateType.FOLLOWER
    assert net.raft(1).term == 5


def test_prevote_rejected_when_log_is_behind() -> None:
    """A node with a stale log loses its pre-vote and stays at its term."""
    net = Network.of_size(3, pre_vote=True)
    net.campaign(1)
    net.isolate(3)
    net.propose(1, b"x")
    net.recover()
    # 3 missed entry 2; it is not eligible.
    net.ignore(MT.MsgApp)
    net.ignore(MT.MsgHeartbeat)
    a = net.raft(1)
    a.become_follower(a.term, NONE)
    b = net.raft(2)
    b.become_follower(b.term, NONE)
    net.campaign(3)
    c = net.raft(3)
    assert c.state is StateType.FOLLOWER
    assert c.term == 1
    net.recover()
    net.campaign(1)
    assert a.state is StateType.LEADER
    assert a.term == 2


def test_prevote_granted_by_a_node_of_higher_log() -> None:
    """A pre-vote for a future term is granted even by a node that voted in the current term."""
    r = new_raft(1, [1, 2, 3], storage=storage_with(hs=HardState(term=2, vote=3)))
    r.step(msg(MT.MsgPreVote, 2, 1, term=3, index=0, log_term=0))
    (m,) = read_messages(r)
    assert (m.type, m.term, m.reject) == (MT.MsgPreVoteResp, 3, False)
    # The pre-vote changed neither term nor vote.
    assert (r.term, r.vote) == (2, 3)


def test_prevote_with_stale_term_is_rejected_with_our_term() -> None:
    r = new_raft(1, [1, 2, 3], storage=storage_with(hs=HardState(term=5)))
    r.step(msg(MT.MsgPreVote, 2, 1, term=3, index=0, log_term=0))
    (m,) = read_messages(r)
    assert (m.type, m.term, m.reject) == (MT.MsgPreVoteResp, 5, True)


# --- check quorum and leader lease ---------------------------------------------------------------------------
def tick_n(r: Raft, n: int) -> None:
    for _ in range(n):
        r.tick()


def test_leader_steps_down_without_quorum() -> None:
    """With check-quorum a leader that hears from no majority for an election timeout steps down."""
    net = Network.of_size(3, check_quorum=True)
    net.campaign(1)
    a = net.raft(1)
    assert a.state is StateType.LEADER
    net.isolate(1)
    # The first check finds the followers that answered the election active; the second finds none.
    tick_n(a, a.election_timeout)
    assert a.state is StateType.LEADER
    tick_n(a, a.election_timeout)
    assert a.state is StateType.FOLLOWER
    assert a.term == 1


def test_leader_stays_with_active_quorum() -> None:
    net = Network.of_size(3, check_quorum=True)
    net.campaign(1)
    a = net.raft(1)
    for _ in range(a.election_timeout + 1):
        net.send(msg(MT.MsgHeartbeatResp, 2, 1, term=a.term))
        a.tick()
    assert a.state is StateType.LEADER


def test_leader_lease_ignores_disruptive_vote_requests() -> None:
    """A follower that heard from its leader within the election timeout ignores a higher-term vote request."""
    net = Network.of_size(3, check_quorum=True)
    net.campaign(1)
    b = net.raft(2)
    b.step(msg(MT.MsgVote, 3, 2, term=5, index=10, log_term=5))
    assert read_messages(b) == []
    assert b.term == 1
    tick_n(b, b.election_timeout)
    read_messages(b)
    b.step(msg(MT.MsgVote, 3, 2, term=5, index=10, log_term=5))
    assert b.term == 5
    (m,) = read_messages(b)
    assert (m.type, m.reject) == (MT.MsgVoteResp, False)


def test_free_stuck_candidate_with_check_quorum() -> None:
    """A candidate cut off and back at a higher term answers the leader's heartbeat, so the leader steps down."""
    net = Network.of_size(3, check_quorum=True)
    a, c = net.raft(1), net.raft(3)
    net.campaign(1)
    net.isolate(3)
    for _ in range(3):
        net.campaign(3)
    assert c.state is StateType.CANDIDATE
    assert c.term == 4
    net.recover()
    net.send(msg(MT.MsgHeartbeat, 1, 3, term=a.term))
    assert a.state is StateType.FOLLOWER
    assert a.term == c.term == 4
    net.campaign(1)
    assert a.state is StateType.LEADER


def test_vote_requests_within_lease_do_not_depose_leader() -> None:
    net = Network.of_size(3, check_quorum=True)
    net.campaign(1)
    c = net.raft(3)
    tick_n(c, c.randomized_election_timeout)
    hup(c)
    net.send(*read_messages(c))
    assert net.raft(1).state is StateType.LEADER
    assert c.state is StateType.CANDIDATE
