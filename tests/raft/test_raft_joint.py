"""Joint consensus in the Raft core: while joint, every quorum decision (commit index, elections, check-quorum,
read-index acks) needs a majority of both the incoming and the outgoing voters; entering and leaving (also
automatically) through ConfChangeV2 entries; changes the leader refuses."""

from __future__ import annotations

import random

import pytest
from raft_cluster import ADD, EXPLICIT, IMPLICIT, LEARNER, LEAVE, REMOVE, Cluster, v2
from raft_harness import msg, persist, read_messages

from aiowal.raft import (
    ConfChangeError,
    ConfChangeRefusedError,
    Config,
    MemoryStorage,
    ProposalDroppedError,
    Raft,
    StateType,
    decode_conf_change,
)
from aiowal.raft.messages import MT
from aiowal.raftpb import (
    ConfChange,
    ConfChangeV2,
    ConfState,
    Entry,
    EntryType,
    Snapshot,
    SnapshotMetadata,
)

JOINT = ConfState(voters=[1, 4, 5], voters_outgoing=[1, 2, 3])


def raft_in(cs: ConfState, id_: int = 1, *, check_quorum: bool = False) -> Raft:
    """A node restarted from a storage whose snapshot (index 1, term 1) holds the configuration ``cs``."""
    st = MemoryStorage()
    st.save(None, [], Snapshot(metadata=SnapshotMetadata(index=1, term=1, conf_state=cs)))
    return Raft(Config(id=id_, storage=st, rng=random.Random(id_), check_quorum=check_quorum))


def joint_leader(*, check_quorum: bool = False) -> Raft:
    """Node 1 leading the joint configuration {1,4,5} && {1,2,3}, its first entry of term 2 saved."""
    r = raft_in(JOINT, check_quorum=check_quorum)
    r.step(msg(MT.MsgHup, 1, 1))
    for v in (2, 4):
        r.step(msg(MT.MsgVoteResp, v, 1, term=r.term))
    assert r.state is StateType.LEADER
    persist(r)
    read_messages(r)
    return r


def ack(r: Raft, frm: int, index: int) -> None:
    r.step(msg(MT.MsgAppResp, frm, r.id, term=r.term, index=index))


# --- quorum rules while joint -----------------------------------------------------------------------------------
def test_joint_commit_needs_a_majority_of_both_halves() -> None:
    r = joint_leader()
    idx = r.raft_log.last_index()
    ack(r, 4, idx)
    ack(r, 5, idx)
    assert r.raft_log.committed < idx  # the incoming half agrees, the outgoing {1,2,3} has only the leader
    ack(r, 2, idx)
    assert r.raft_log.committed == idx
    r.step(msg(MT.MsgProp, 1, 1, entries=[Entry(data=b"x")]))
    persist(r)
    idx += 1
    ack(r, 2, idx)
    ack(r, 3, idx)
    assert r.raft_log.committed < idx  # now the outgoing half agrees and the incoming one does not
    ack(r, 5, idx)
    assert r.raft_log.committed == idx


def test_joint_election_needs_a_majority_of_both_halves() -> None:
    r = raft_in(JOINT)
    r.step(msg(MT.MsgHup, 1, 1))
    assert sorted(m.to for m in read_messages(r) if m.type == MT.MsgVote) == [2, 3, 4, 5]
    r.step(msg(MT.MsgVoteResp, 4, 1, term=r.term))
    r.step(msg(MT.MsgVoteResp, 5, 1, term=r.term))
    assert r.state is StateType.CANDIDATE  # the incoming half is won, the outgoing one is still open
    r.step(msg(MT.MsgVoteResp, 3, 1, term=r.term))
    assert r.state is StateType.LEADER

    lost = raft_in(JOINT)
    lost.step(msg(MT.MsgHup, 1, 1))
    lost.step(msg(MT.MsgVoteResp, 4, 1, term=lost.term))
    lost.step(msg(MT.MsgVoteResp, 5, 1, term=lost.term))
    lost.step(msg(MT.MsgVoteResp, 2, 1, term=lost.term, reject=True))
    assert lost.state is StateType.CANDIDATE
    lost.step(msg(MT.MsgVoteResp, 3, 1, term=lost.term, reject=True))
    assert lost.state is StateType.FOLLOWER  # the outgoing half is lost, whatever the incoming one says


def test_joint_check_quorum_needs_both_halves_active() -> None:
    r = joint_leader(check_quorum=True)
    for v in (4, 5):
        r.step(msg(MT.MsgHeartbeatResp, v, 1, term=r.term))
    r.step(msg(MT.MsgCheckQuorum, 1, 1))
    assert r.state is StateType.FOLLOWER  # only the leader of the outgoing half was heard from

    r = joint_leader(check_quorum=True)
    for v in (4, 2):
        r.step(msg(MT.MsgHeartbeatResp, v, 1, term=r.term))
    r.step(msg(MT.MsgCheckQuorum, 1, 1))
    assert r.state is StateType.LEADER


def test_joint_read_index_needs_acks_from_both_halves() -> None:
    r = joint_leader()
    idx = r.raft_log.last_index()
    for v in (2, 4):
        ack(r, v, idx)
    assert r.raft_log.committed == idx
    read_messages(r)
    r.step(msg(MT.MsgReadIndex, 1, 1, entries=[Entry(data=b"ctx")]))
    beats = [m for m in read_messages(r) if m.type == MT.MsgHeartbeat]
    assert sorted(m.to for m in beats) == [2, 3, 4, 5]
    for v in (4, 5):
        r.step(msg(MT.MsgHeartbeatResp, v, 1, term=r.term, context=b"ctx"))
    assert r.read_states == []
    r.step(msg(MT.MsgHeartbeatResp, 3, 1, term=r.term, context=b"ctx"))
    assert [(rs.index, rs.request_ctx) for rs in r.read_states] == [(idx, b"ctx")]


def test_a_voter_being_demoted_still_counts_in_the_outgoing_half() -> None:
    r = raft_in(ConfState(voters=[1, 2, 4], voters_outgoing=[1, 2, 3], learners_next=[3]))
    assert r.prs.learners_next() == [3] and not r.prs.progress[3].is_learner
    r.step(msg(MT.MsgHup, 1, 1))
    r.step(msg(MT.MsgVoteResp, 4, 1, term=r.term))
    assert r.state is StateType.CANDIDATE
    r.step(msg(MT.MsgVoteResp, 3, 1, term=r.term))
    assert r.state is StateType.LEADER


# --- learners ---------------------------------------------------------------------------------------------------
def test_learner_never_campaigns_and_its_vote_does_not_count() -> None:
    c = Cluster([1, 2], learners=[3])
    c.elect(1)
    c.propose(1, b"x")
    assert c.applied_data(3) == [b"x"]
    c.isolate(1)
    term = c.nodes[3].raft.term
    c.tick(40, ids=[3])
    assert c.nodes[3].raft.state is StateType.FOLLOWER and c.nodes[3].raft.term == term
    c.nodes[2].campaign()
    c.pump()
    r2 = c.nodes[2].raft
    assert r2.state is StateType.CANDIDATE  # no vote request goes to the learner: the voters are 1 and 2
    r2.step(msg(MT.MsgVoteResp, 3, 2, term=r2.term))
    assert r2.state is StateType.CANDIDATE


def test_promoted_learner_counts_and_can_lead() -> None:
    c = Cluster([1, 2], learners=[3])
    c.elect(1)
    c.isolate(2)
    c.propose(1, b"before")
    assert c.applied_data(1) == []  # 1 of the voters {1,2}: the learner's copy does not count
    c.heal()
    c.tick(3, ids=[1])
    assert c.applied_data(1) == [b"before"]
    c.change(1, ConfChange(type=ADD, node_id=3))
    assert list(c.conf(3).voters) == [1, 2, 3] and not list(c.conf(3).learners)
    c.isolate(2)
    c.propose(1, b"after")
    assert c.applied_data(1) == [b"before", b"after"]  # 1 and 3 are a majority of {1,2,3}
    c.heal()
    c.isolate(1)
    c.elect(3)


def test_demoted_voter_becomes_learner_when_the_joint_configuration_is_left() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.change(1, v2((LEARNER, 3), transition=EXPLICIT))
    assert c.conf(3) == ConfState(voters=[1, 2], voters_outgoing=[1, 2, 3], learners_next=[3])
    assert c.nodes[3].raft.promotable()
    c.change(1, LEAVE)
    for i in (1, 2, 3):
        assert c.conf(i) == ConfState(voters=[1, 2], learners=[3])
    assert not c.nodes[3].raft.promotable()


# --- entering and leaving ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cc", "voters"),
    [
        (v2((ADD, 4), (ADD, 5)), [1, 2, 3, 4, 5]),
        (v2((ADD, 4), transition=IMPLICIT), [1, 2, 3, 4]),
        (v2((ADD, 4), (REMOVE, 2), (REMOVE, 3)), [1, 4]),
    ],
)
def test_auto_leave(cc: ConfChangeV2, voters: list[int]) -> None:
    c = Cluster([1, 2, 3])
    c.start(4)
    c.start(5)
    c.elect(1)
    c.change(1, cc)
    confs = [cs for _, cs in c.confs[1][-2:]]
    assert confs[0].auto_leave and list(confs[0].voters_outgoing) == [1, 2, 3]
    assert confs[1] == ConfState(voters=voters)
    # The leader proposed the leave itself, right after the entry that entered the joint configuration.
    log = c.nodes[1].raft.raft_log
    enter, leave = log.slice(log.last_index() - 1, log.last_index() + 1, None)
    assert enter.type == leave.type == EntryType.EntryConfChangeV2
    assert leave.data == b"" and leave.term == c.nodes[1].raft.term
    for i in voters:
        assert c.conf(i) == ConfState(voters=voters)


def test_explicit_joint_configuration_stays_until_left() -> None:
    c = Cluster([1, 2, 3])
    c.start(4)
    c.elect(1)
    c.change(1, v2((ADD, 4), (REMOVE, 3), transition=EXPLICIT))
    c.propose(1, b"x")
    c.tick(30)
    assert c.conf(1) == ConfState(voters=[1, 2, 4], voters_outgoing=[1, 2, 3])
    c.change(1, LEAVE)
    assert c.conf(1) == ConfState(voters=[1, 2, 4])
    assert c.conf(4) == ConfState(voters=[1, 2, 4])


def test_a_new_leader_leaves_the_joint_configuration_automatically() -> None:
    c = Cluster([1, 2, 3])
    c.start(4)
    c.elect(1)
    # The old leader's leave entry never reaches anyone.
    c.drop_if = lambda m: any(e.type == EntryType.EntryConfChangeV2 and not e.data for e in m.entries)
    c.change(1, v2((LEARNER, 4), (ADD, 4)))
    assert c.conf(2).auto_leave and c.conf(2).voters_outgoing
    c.drop_if = None
    c.isolate(1)
    c.elect(2)
    assert c.conf(2) == ConfState(voters=[1, 2, 3, 4])
    assert c.conf(3) == ConfState(voters=[1, 2, 3, 4])


def test_no_campaign_while_a_committed_conf_change_v2_is_unapplied() -> None:
    r = raft_in(ConfState(voters=[1, 2]))
    e = Entry(index=2, term=1, type=EntryType.EntryConfChangeV2, data=v2((ADD, 3)).SerializeToString())
    r.step(msg(MT.MsgApp, 2, 1, term=1, index=1, log_term=1, entries=[e], commit=2))
    r.step(msg(MT.MsgHup, 1, 1))
    assert r.state is StateType.FOLLOWER
    r.apply_conf_change(v2((ADD, 3)))
    r.raft_log.applied_to(2)
    r.step(msg(MT.MsgHup, 1, 1))
    assert r.state is StateType.CANDIDATE


# --- refusals ---------------------------------------------------------------------------------------------------
def test_leader_refuses_invalid_changes() -> None:
    c = Cluster([1, 2, 3])
    c.start(4)
    c.elect(1)
    rn = c.nodes[1]
    last = rn.raft.raft_log.last_index()
    with pytest.raises(ConfChangeRefusedError, match="not joint"):
        rn.propose_conf_change(LEAVE)
    rn.propose_conf_change(v2((ADD, 4), transition=EXPLICIT))
    with pytest.raises(ConfChangeRefusedError, match="not applied yet"):
        rn.propose_conf_change(ConfChange(type=REMOVE, node_id=2))
    c.pump()
    assert c.conf(1).voters_outgoing
    for cc, why in [
        (ConfChange(type=REMOVE, node_id=2), "leave it first"),
        (v2((ADD, 5), (ADD, 6)), "leave it first"),
        (v2(transition=EXPLICIT), "already joint"),
    ]:
        with pytest.raises(ConfChangeRefusedError, match=why):
            rn.propose_conf_change(cc)
    assert rn.raft.raft_log.last_index() == last + 1  # only the accepted change was logged
    c.change(1, LEAVE)

    solo = Cluster([1])
    solo.elect(1)
    with pytest.raises(ConfChangeRefusedError, match="removes all voters"):
        solo.nodes[1].propose_conf_change(ConfChange(type=REMOVE, node_id=1))
    with pytest.raises(ConfChangeRefusedError, match="undecodable"):
        solo.nodes[1].raft.step(msg(MT.MsgProp, 1, 1, entries=[Entry(type=EntryType.EntryConfChangeV2, data=b"\xff")]))
    assert list(solo.conf(1).voters) == [1]


def test_refused_change_forwarded_by_a_follower_becomes_an_empty_entry() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    last = c.nodes[1].raft.raft_log.last_index()
    c.nodes[2].propose_conf_change(LEAVE)  # no error on the follower: it only forwards
    c.pump()
    log = c.nodes[1].raft.raft_log
    assert log.last_index() == last + 1
    e = log.slice(last + 1, last + 2, None)[0]
    assert (e.type, e.data) == (EntryType.EntryNormal, b"")
    assert c.conf(2) == ConfState(voters=[1, 2, 3])


def test_apply_of_an_invalid_change_raises_and_changes_nothing() -> None:
    r = raft_in(ConfState(voters=[1, 2, 3]))
    with pytest.raises(ConfChangeError, match="not joint"):
        r.apply_conf_change(LEAVE)
    with pytest.raises(ConfChangeError, match="removes all voters"):
        r.apply_conf_change(v2((REMOVE, 1), (REMOVE, 2), (REMOVE, 3)))
    assert r.conf_state() == ConfState(voters=[1, 2, 3])
    assert sorted(r.prs.progress) == [1, 2, 3]


# --- removing the leader ----------------------------------------------------------------------------------------
def test_removed_leader_steps_down_once_the_change_is_applied() -> None:
    c = Cluster([1, 2, 3], pre_vote=True, check_quorum=True)
    c.elect(1)
    c.propose(1, b"x")
    c.nodes[1].propose_conf_change(ConfChange(type=REMOVE, node_id=1))
    assert c.nodes[1].raft.state is StateType.LEADER  # proposed, not yet committed
    c.pump()
    r1 = c.nodes[1].raft
    assert r1.state is StateType.FOLLOWER and not r1.promotable()
    # The others learnt the commit before the old leader stepped down, and applied the change too.
    for i in (2, 3):
        assert c.conf(i) == ConfState(voters=[2, 3])
    c.dropped.clear()
    c.tick(60)
    assert not [m for m in c.dropped if m.type in (MT.MsgVote, MT.MsgPreVote) and m.to == 1]
    assert r1.state is StateType.FOLLOWER
    lead = c.leader()
    assert lead in (2, 3)
    c.propose(lead, b"y")
    assert c.applied_data(2) == c.applied_data(3) == [b"x", b"y"]


def test_leader_removed_through_a_joint_configuration_leads_until_it_is_left() -> None:
    c = Cluster([1, 2, 3])
    c.start(4)
    c.elect(1)
    c.change(1, v2((REMOVE, 1), (ADD, 4), transition=EXPLICIT))
    assert c.conf(1) == ConfState(voters=[2, 3, 4], voters_outgoing=[1, 2, 3])
    assert c.nodes[1].raft.state is StateType.LEADER
    c.propose(1, b"x")  # the leader counts in the outgoing half only
    assert c.applied_data(4) == [b"x"]
    c.change(1, LEAVE)
    assert c.nodes[1].raft.state is StateType.FOLLOWER
    assert c.conf(4) == ConfState(voters=[2, 3, 4])
    c.tick(60, ids=[2, 3, 4])
    lead = c.leader()
    assert lead in (2, 3, 4)
    c.propose(lead, b"y")
    assert c.applied_data(4) == [b"x", b"y"]


# --- the configuration survives restarts and travels in snapshots -----------------------------------------------
def test_configuration_restored_after_restart_from_the_log_and_from_a_snapshot() -> None:
    c = Cluster([1, 2, 3])
    c.start(4)
    c.elect(1)
    c.change(1, v2((ADD, 4), (LEARNER, 3), transition=EXPLICIT))
    want = ConfState(voters=[1, 2, 4], voters_outgoing=[1, 2, 3], learners_next=[3])
    assert c.conf(2) == want
    # From the log: the node replays its committed entries and re-applies the changes.
    c.restart(2)
    assert c.conf(2) != want  # before the replay: the bootstrap configuration
    c.pump()
    assert c.conf(2) == want
    # From a snapshot that holds the joint configuration.
    c.snapshot(2, c.nodes[2].raft.raft_log.applied)
    c.restart(2)
    assert c.conf(2) == want
    assert c.nodes[2].status().conf_state == want
    c.change(1, LEAVE)
    c.snapshot(2, c.nodes[2].raft.raft_log.applied)
    c.restart(2)
    assert c.conf(2) == ConfState(voters=[1, 2, 4], learners=[3])


def test_snapshot_carries_the_joint_configuration_to_a_new_member() -> None:
    c = Cluster([1, 2, 3])
    c.start(4)
    c.isolate(4)
    c.elect(1)
    c.change(1, v2((LEARNER, 4), transition=EXPLICIT))
    c.propose(1, b"x")
    c.snapshot(1, c.nodes[1].raft.raft_log.applied)
    c.heal()
    c.tick(3, ids=[1])
    assert c.nodes[4].raft.raft_log.first_index() > 1  # caught up through the snapshot
    assert c.conf(4) == ConfState(voters=[1, 2, 3], voters_outgoing=[1, 2, 3], learners=[4])


def test_status_shows_the_configuration_and_each_members_progress() -> None:
    c = Cluster([1, 2], learners=[3])
    c.elect(1)
    c.propose(1, b"x")
    st = c.nodes[1].status()
    last = c.nodes[1].raft.raft_log.last_index()
    assert st.state is StateType.LEADER and st.lead == 1 and st.commit == last and st.last_index == last
    assert st.conf_state == ConfState(voters=[1, 2], learners=[3])
    assert sorted(st.progress) == [1, 2, 3]
    assert all(p.match == last and p.next == last + 1 for p in st.progress.values())
    assert st.progress[3].is_learner and not st.progress[2].is_learner
    assert c.nodes[2].status().progress == {}


def test_read_index_in_a_joint_configuration_of_the_leader_alone() -> None:
    """{1} && {1} (entered to add a learner): the leader's own ack is a quorum, so a read is served without
    waiting for a heartbeat response (the learner is cut off and never answers)."""
    c = Cluster([1], learners=[2])
    c.elect(1)
    c.change(1, v2((LEARNER, 3), transition=EXPLICIT))
    assert c.conf(1) == ConfState(voters=[1], voters_outgoing=[1], learners=[2, 3])
    c.isolate(2)
    rn = c.nodes[1]
    rn.read_index(b"ctx")
    rd = rn.ready()
    assert [(rs.index, rs.request_ctx) for rs in rd.read_states] == [(rn.raft.raft_log.committed, b"ctx")]


def test_proposed_changes_are_logged_with_their_entry_type() -> None:
    c = Cluster([1, 2, 3])
    c.elect(1)
    c.change(1, ConfChange(type=LEARNER, node_id=4))
    c.change(1, v2((ADD, 4), transition=EXPLICIT))
    log = c.nodes[1].raft.raft_log
    last = log.last_index()
    ents = log.slice(last - 1, last + 1, None)
    assert [e.type for e in ents] == [EntryType.EntryConfChange, EntryType.EntryConfChangeV2]
    assert decode_conf_change(ents[0]) == ConfChange(type=LEARNER, node_id=4)
    assert decode_conf_change(ents[1]) == v2((ADD, 4), transition=EXPLICIT)
    with pytest.raises(ValueError, match="not a configuration change"):
        decode_conf_change(Entry(index=9))


def test_a_leader_leaving_the_configuration_takes_no_more_proposals() -> None:
    """Regression: the leader of {4} && {1,2,3} logged a proposal after the leave; only 2 and 3 got it, the leader
    stepped down on applying the leave, and 4 (which had not learnt of the commit, so still needed the votes of
    1, 2 or 3) could never be elected: its log was behind theirs, and they no longer campaign."""
    c = Cluster([1, 2, 3])
    c.start(4)
    c.elect(1)
    c.change(1, v2((ADD, 4), (REMOVE, 1), (REMOVE, 2), (REMOVE, 3), transition=EXPLICIT))
    leave_index = c.nodes[1].raft.raft_log.last_index() + 1
    # 4 gets the leave entry, but nothing after it, nor the news that it is committed.
    c.drop_if = lambda m: m.to == 4 and m.type == MT.MsgApp and (m.commit >= leave_index or m.index >= leave_index)
    c.nodes[1].propose_conf_change(LEAVE)
    with pytest.raises(ProposalDroppedError, match="leaving"):
        c.nodes[1].propose(b"x")
    c.pump()
    assert c.nodes[1].raft.state is StateType.FOLLOWER
    assert c.conf(4).voters_outgoing  # 4 does not know the leave is committed
    c.drop_if = None
    c.tick(60)
    assert c.leader() == 4
    assert c.conf(4) == ConfState(voters=[4])


def test_auto_leave_waits_for_a_leader_transfer_to_end() -> None:
    """A leader that is handing over leadership takes no proposals, its own leave included; when the transfer is
    given up (an election timeout later) it leaves the joint configuration."""
    c = Cluster([1, 2, 3])
    c.start(4)
    c.elect(1)
    c.isolate(2)
    c.nodes[1].propose_conf_change(v2((ADD, 4), transition=IMPLICIT))
    c.nodes[1].transfer_leader(2)
    c.pump()
    assert c.conf(1).voters_outgoing and c.nodes[1].raft.lead_transferee == 2
    c.tick(c.election_tick, ids=[1])
    assert c.nodes[1].raft.lead_transferee == 0
    assert c.conf(1) == ConfState(voters=[1, 2, 3, 4])
    assert c.conf(4) == ConfState(voters=[1, 2, 3, 4])
