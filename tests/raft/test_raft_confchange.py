"""Configuration changes on their own: how simple changes, entering and leaving a joint configuration transform a
configuration, and which changes are refused (etcd's confchange rules)."""

from __future__ import annotations

import pytest
from raft_cluster import ADD, EXPLICIT, IMPLICIT, LEARNER, LEAVE, REMOVE, UPDATE, v2

from aiowal.raft import ConfChangeError, Membership
from aiowal.raft.membership import apply_change, enters_joint, leaves_joint, simple
from aiowal.raftpb import ConfChange, ConfChangeSingle, ConfChangeV2, ConfState


def conf(
    voters: set[int],
    outgoing: set[int] | None = None,
    learners: set[int] | None = None,
    learners_next: set[int] | None = None,
    auto_leave: bool = False,
) -> Membership:
    return Membership(
        frozenset(voters),
        frozenset(outgoing or ()),
        frozenset(learners or ()),
        frozenset(learners_next or ()),
        auto_leave,
    )


def test_which_changes_go_through_a_joint_configuration() -> None:
    assert enters_joint(v2((ADD, 4))) == (False, False)
    assert enters_joint(v2((ADD, 4), (ADD, 5))) == (True, True)
    assert enters_joint(v2((ADD, 4), transition=IMPLICIT)) == (True, True)
    assert enters_joint(v2((ADD, 4), transition=EXPLICIT)) == (True, False)
    assert enters_joint(v2(transition=EXPLICIT)) == (True, False)
    assert leaves_joint(LEAVE)
    assert leaves_joint(ConfChangeV2(context=b"ignored"))
    assert not leaves_joint(v2(transition=IMPLICIT))
    assert not leaves_joint(v2((ADD, 4)))


def test_simple_changes() -> None:
    m = Membership.of([1, 2, 3])
    assert apply_change(m, ConfChange(type=ADD, node_id=4)) == conf({1, 2, 3, 4})
    assert apply_change(m, ConfChange(type=LEARNER, node_id=4)) == conf({1, 2, 3}, learners={4})
    assert apply_change(m, ConfChange(type=REMOVE, node_id=3)) == conf({1, 2})
    assert apply_change(m, ConfChange(type=UPDATE, node_id=3)) == m
    assert apply_change(m, ConfChange(type=REMOVE, node_id=9)) == m  # removing a stranger changes nothing
    assert apply_change(m, ConfChange(type=ADD, node_id=0)) == m  # no node named: ignored
    # Promote a learner, demote a voter (outside a joint configuration the demotion is immediate).
    m = conf({1, 2, 3}, learners={4})
    assert apply_change(m, ConfChange(type=ADD, node_id=4)) == conf({1, 2, 3, 4})
    assert apply_change(m, ConfChange(type=LEARNER, node_id=3)) == conf({1, 2}, learners={3, 4})
    # Several changes go through a joint configuration even when only one voter changes.
    assert apply_change(m, v2((LEARNER, 5), (ADD, 4))) == conf({1, 2, 3, 4}, {1, 2, 3}, {5}, auto_leave=True)


def test_simple_change_of_two_voters_is_refused() -> None:
    m = Membership.of([1, 2, 3])
    with pytest.raises(ConfChangeError, match="more than one voter"):
        simple(m, [ConfChangeSingle(type=ADD, node_id=4), ConfChangeSingle(type=ADD, node_id=5)])
    with pytest.raises(ConfChangeError, match="more than one voter"):
        simple(m, [ConfChangeSingle(type=REMOVE, node_id=1), ConfChangeSingle(type=ADD, node_id=5)])
    # A voter added and removed again in one change leaves the voters as they were.
    assert simple(m, [ConfChangeSingle(type=ADD, node_id=4), ConfChangeSingle(type=REMOVE, node_id=4)]) == m


def test_enter_and_leave_joint() -> None:
    m = Membership.of([1, 2, 3], [4])
    joint = apply_change(m, v2((ADD, 5), (REMOVE, 1), (ADD, 4)))
    assert joint == conf({2, 3, 4, 5}, outgoing={1, 2, 3}, auto_leave=True)
    assert joint.voter_ids() == {1, 2, 3, 4, 5}
    cs = joint.to_conf_state()
    assert (list(cs.voters), list(cs.voters_outgoing), list(cs.learners), cs.auto_leave) == (
        [2, 3, 4, 5],
        [1, 2, 3],
        [],
        True,
    )
    left = apply_change(joint, LEAVE)
    assert left == conf({2, 3, 4, 5})
    assert not left.joint


def test_demoting_a_voter_while_joint_goes_through_learners_next() -> None:
    m = Membership.of([1, 2, 3])
    joint = apply_change(m, v2((LEARNER, 3), (ADD, 4), transition=EXPLICIT))
    # 3 still votes in the outgoing half, and becomes a learner when the joint configuration is left.
    assert joint == conf({1, 2, 4}, outgoing={1, 2, 3}, learners_next={3})
    assert not joint.is_learner(3)
    assert apply_change(joint, LEAVE) == conf({1, 2, 4}, learners={3})
    # A learner that was never a voter becomes one at once.
    joint = apply_change(m, v2((LEARNER, 5), (ADD, 4)))
    assert joint.learners == {5} and not joint.learners_next


def test_a_node_removed_while_joint_stays_in_the_outgoing_half() -> None:
    joint = apply_change(Membership.of([1, 2, 3]), v2((REMOVE, 3), (ADD, 4), transition=EXPLICIT))
    assert 3 in joint.member_ids() and 3 not in joint.voters
    assert 3 not in apply_change(joint, LEAVE).member_ids()


@pytest.mark.parametrize(
    ("start", "cc", "error"),
    [
        (conf({1, 2}, outgoing={1}), v2((ADD, 3), (ADD, 4)), "already joint"),
        (conf({1, 2}, outgoing={1}), v2(transition=EXPLICIT), "already joint"),
        (conf({1, 2}, outgoing={1}), ConfChange(type=ADD, node_id=3), "simple configuration change to a joint"),
        (conf({1, 2}), LEAVE, "not joint"),
        (conf({1}), ConfChange(type=REMOVE, node_id=1), "removes all voters"),
        (conf({1}), ConfChange(type=LEARNER, node_id=1), "removes all voters"),
        (conf({1, 2}), v2((REMOVE, 1), (REMOVE, 2)), "removes all voters"),
        (conf(set(), learners={1}), v2((ADD, 2), (ADD, 3)), "without voters joint"),
    ],
)
def test_refused_changes(start: Membership, cc: ConfChange | ConfChangeV2, error: str) -> None:
    with pytest.raises(ConfChangeError, match=error):
        apply_change(start, cc)


def test_conf_state_round_trip_and_consistency() -> None:
    m = conf({2, 3, 4}, outgoing={1, 2, 3}, learners={5}, learners_next={1}, auto_leave=True)
    assert Membership.from_conf_state(m.to_conf_state()) == m
    bad = [
        ConfState(voters=[1, 2], learners=[2]),  # a voter and a learner at once
        ConfState(voters=[1, 2], voters_outgoing=[1, 3], learners=[3]),  # an outgoing voter listed as a learner
        ConfState(voters=[1, 2], voters_outgoing=[1, 2], learners_next=[3]),  # learners_next outside outgoing
        ConfState(voters=[1, 2], voters_outgoing=[1, 2], learners_next=[2]),  # learners_next still incoming
        ConfState(voters=[1, 2], auto_leave=True),  # auto_leave outside a joint configuration
    ]
    for cs in bad:
        with pytest.raises(ConfChangeError):
            Membership.from_conf_state(cs)
