"""Single-server membership changes: proposed as EntryConfChange, one at a time, applied from committed entries."""

from __future__ import annotations

import random

import pytest
from raft_harness import Network, msg, new_raft, persist, read_messages

from aiowal.raft import ConfChangeRefusedError, Config, MemoryStorage, RawNode, StateType
from aiowal.raft.messages import MT
from aiowal.raft.raft import Raft
from aiowal.raftpb import ConfChange, ConfChangeType, Entry, EntryType

ADD, REMOVE, LEARNER = (
    ConfChangeType.ConfChangeAddNode,
    ConfChangeType.ConfChangeRemoveNode,
    ConfChangeType.ConfChangeAddLearnerNode,
)


def cc_entry(t: ConfChangeType.ValueType, nid: int, index: int = 0, term: int = 0) -> Entry:
    data = ConfChange(type=t, node_id=nid).SerializeToString()
    return Entry(type=EntryType.EntryConfChange, data=data, index=index, term=term)


def apply_committed(r: Raft) -> list[ConfChange]:
    """Apply what is committed, like an application would: configuration changes go to apply_conf_change."""
    applied = []
    for e in r.raft_log.next_ents():
        if e.type == EntryType.EntryConfChange:
            cc = ConfChange.FromString(e.data)
            r.apply_conf_change(cc)
            applied.append(cc)
        r.raft_log.applied_to(e.index)
    return applied


def test_add_and_remove_voters_and_learners() -> None:
    r = new_raft(1, [1, 2, 3])
    r.apply_conf_change(ConfChange(type=ADD, node_id=4))
    assert r.prs.voters() == [1, 2, 3, 4]
    r.apply_conf_change(ConfChange(type=LEARNER, node_id=5))
    assert r.prs.learners() == [5]
    r.apply_conf_change(ConfChange(type=ADD, node_id=5))  # promote
    assert r.prs.voters() == [1, 2, 3, 4, 5] and r.prs.learners() == []
    r.apply_conf_change(ConfChange(type=LEARNER, node_id=4))  # demote
    assert r.prs.voters() == [1, 2, 3, 5] and r.prs.learners() == [4]
    cs = r.apply_conf_change(ConfChange(type=REMOVE, node_id=4))
    assert (list(cs.voters), list(cs.learners)) == ([1, 2, 3, 5], [])
    r.apply_conf_change(ConfChange(type=ConfChangeType.ConfChangeUpdateNode, node_id=2))
    assert r.prs.voters() == [1, 2, 3, 5]
    with pytest.raises(ValueError, match="removes all voters"):
        solo = new_raft(1, [1])
        solo.apply_conf_change(ConfChange(type=REMOVE, node_id=1))


def test_only_one_pending_conf_change() -> None:
    """A second change proposed on the leader before the first is applied is refused; one forwarded from a follower
    becomes an empty entry."""
    r = new_raft(1, [1, 2])
    r.become_candidate()
    r.become_leader()
    persist(r)
    r.step(msg(MT.MsgAppResp, 2, 1, term=1, index=1))
    apply_committed(r)
    r.step(msg(MT.MsgProp, 1, 1, entries=[cc_entry(ADD, 3)]))
    with pytest.raises(ConfChangeRefusedError, match="not applied yet"):
        r.step(msg(MT.MsgProp, 1, 1, entries=[cc_entry(ADD, 4)]))
    assert r.raft_log.last_index() == 2
    r.step(msg(MT.MsgProp, 2, 1, entries=[cc_entry(ADD, 4)]))
    persist(r)
    ents = r.raft_log.slice(2, 4, None)
    assert [e.type for e in ents] == [EntryType.EntryConfChange, EntryType.EntryNormal]
    assert ents[1].data == b""
    # Once the first is committed and applied, another may be proposed.
    r.step(msg(MT.MsgAppResp, 2, 1, term=1, index=3))
    assert [cc.node_id for cc in apply_committed(r)] == [3]
    r.step(msg(MT.MsgProp, 1, 1, entries=[cc_entry(ADD, 4)]))
    assert r.raft_log.slice(4, 5, None)[0].type == EntryType.EntryConfChange


def test_new_leader_waits_for_earlier_conf_changes() -> None:
    r = new_raft(1, [1, 2])
    r.step(msg(MT.MsgApp, 2, 1, term=1, index=0, log_term=0, entries=[Entry(index=1, term=1)]))
    r.step(msg(MT.MsgApp, 2, 1, term=1, index=1, log_term=1, entries=[Entry(index=2, term=1, type=1)], commit=0))
    read_messages(r)
    r.become_candidate()
    r.become_leader()
    assert r.pending_conf_index == 2
    with pytest.raises(ConfChangeRefusedError, match="index 2 is not applied"):
        r.step(msg(MT.MsgProp, 1, 1, entries=[cc_entry(ADD, 3)]))
    r.step(msg(MT.MsgProp, 2, 1, entries=[cc_entry(ADD, 3)]))
    assert r.raft_log.slice(4, 5, None)[0].type == EntryType.EntryNormal


def test_no_campaign_with_unapplied_conf_change() -> None:
    r = new_raft(1, [1, 2])
    r.step(msg(MT.MsgApp, 2, 1, term=1, index=0, log_term=0, entries=[Entry(index=1, term=1)], commit=1))
    r.step(msg(MT.MsgApp, 2, 1, term=1, index=1, log_term=1, entries=[cc_entry(ADD, 3, 2, 1)], commit=2))
    for e in r.raft_log.slice(2, 3, None):
        assert e.type == EntryType.EntryConfChange
    r.step(msg(MT.MsgHup, 1, 1))
    assert r.state is StateType.FOLLOWER
    apply_committed(r)
    r.step(msg(MT.MsgHup, 1, 1))
    assert r.state is StateType.CANDIDATE
    assert sorted(m.to for m in read_messages(r) if m.type == MT.MsgVote) == [2, 3]


def test_removing_a_voter_commits_with_the_smaller_quorum() -> None:
    r = new_raft(1, [1, 2, 3])
    r.become_candidate()
    r.become_leader()
    read_messages(r)
    r.step(msg(MT.MsgProp, 1, 1, entries=[Entry(data=b"x")]))
    persist(r)
    assert r.raft_log.committed == 0
    r.apply_conf_change(ConfChange(type=REMOVE, node_id=2))
    r.apply_conf_change(ConfChange(type=REMOVE, node_id=3))
    assert r.raft_log.committed == 2


def test_removed_leader_steps_down() -> None:
    r = new_raft(1, [1, 2, 3])
    r.become_candidate()
    r.become_leader()
    r.apply_conf_change(ConfChange(type=REMOVE, node_id=1))
    assert r.state is StateType.FOLLOWER
    assert not r.promotable()


def test_learner_gets_the_log_but_never_campaigns_nor_counts() -> None:
    a = new_raft(1, [1, 2])
    b = new_raft(2, [1, 2])
    c = new_raft(3, [])
    net = Network(a, b, c)
    net.campaign(1)
    a.apply_conf_change(ConfChange(type=LEARNER, node_id=3))
    net.propose(1, b"x")
    assert [e.data for e in c.raft_log.slice(1, c.raft_log.last_index() + 1, None)] == [b"", b"x"]
    assert c.raft_log.committed == 2
    # A node that is not a voter in its own configuration does not campaign.
    for _ in range(3 * c.election_timeout):
        c.tick()
    assert c.state is StateType.FOLLOWER
    assert read_messages(c) == []
    # The learner's acknowledgement does not count towards the quorum.
    net.isolate(2)
    net.propose(1, b"y")
    assert a.raft_log.committed == 2


def test_joining_node_learns_the_configuration_from_the_log() -> None:
    """A node started with no configuration replays the changes from the leader's log and can then be elected."""
    stores = {i: MemoryStorage() for i in (1, 2, 3)}
    boot = [cc_entry(ADD, 1, 1, 1), cc_entry(ADD, 2, 2, 1)]
    for i in (1, 2):
        stores[i].save(None, boot)
    nodes = {
        i: RawNode(Config(id=i, storage=stores[i], rng=random.Random(i), voters=(1, 2) if i < 3 else ()))
        for i in (1, 2, 3)
    }

    def pump() -> None:
        while any(rn.has_ready() for rn in nodes.values()):
            for i, rn in nodes.items():
                if rn.has_ready():
                    rd = rn.ready()
                    stores[i].save(rd.hard_state, rd.entries, rd.snapshot)
                    for m in rd.messages:
                        nodes[m.to].step(m)
                    for e in rd.committed_entries:
                        if e.type == EntryType.EntryConfChange:
                            rn.apply_conf_change(ConfChange.FromString(e.data))
                    rn.advance(rd)

    nodes[1].campaign()
    pump()
    nodes[1].propose_conf_change(ConfChange(type=ADD, node_id=3))
    pump()
    assert nodes[3].raft.prs.voters() == [1, 2, 3]
    assert nodes[3].raft.raft_log.committed == nodes[1].raft.raft_log.committed
    nodes[3].campaign()
    pump()
    assert nodes[3].raft.state is StateType.LEADER
