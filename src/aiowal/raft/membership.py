"""Cluster configurations and how a configuration change turns one into the next (etcd's confchange rules).

A configuration has incoming voters, outgoing voters (only while joint), learners, and ``learners_next``: voters
being demoted to learners, who stay voters of the outgoing half until the joint configuration is left. A change is
either simple (at most one voter added or removed, from a configuration that is not joint), enters a joint
configuration (the current voters become the outgoing half and the changes shape the incoming half), or leaves it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from aiowal.raftpb import ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState


class ConfChangeError(ValueError):
    """A configuration change that cannot be applied to the current configuration; nothing was changed."""


@dataclasses.dataclass(frozen=True)
class Membership:
    """One configuration. The four sets never overlap except that ``learners_next`` lies inside
    ``voters_outgoing``; outside a joint configuration only ``voters`` and ``learners`` are used."""

    voters: frozenset[int] = frozenset()
    voters_outgoing: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()
    learners_next: frozenset[int] = frozenset()
    auto_leave: bool = False

    @classmethod
    def of(cls, voters: Iterable[int] = (), learners: Iterable[int] = ()) -> Membership:
        m = cls(voters=frozenset(voters), learners=frozenset(learners))
        m.check()
        return m

    @classmethod
    def from_conf_state(cls, cs: ConfState) -> Membership:
        """The configuration a snapshot or the storage recorded; raises ConfChangeError if it is inconsistent."""
        m = cls(
            voters=frozenset(cs.voters),
            voters_outgoing=frozenset(cs.voters_outgoing),
            learners=frozenset(cs.learners),
            learners_next=frozenset(cs.learners_next),
            auto_leave=cs.auto_leave,
        )
        m.check()
        return m

    def to_conf_state(self) -> ConfState:
        """The ConfState of this configuration, its lists sorted (``auto_leave`` is set only when true, so that it
        compares equal to a ConfState built with only the fields in use)."""
        cs = ConfState(
            voters=sorted(self.voters),
            voters_outgoing=sorted(self.voters_outgoing),
            learners=sorted(self.learners),
            learners_next=sorted(self.learners_next),
        )
        if self.auto_leave:
            cs.auto_leave = True
        return cs

    @property
    def joint(self) -> bool:
        return bool(self.voters_outgoing)

    def voter_ids(self) -> frozenset[int]:
        """Every node whose vote counts: the voters of both halves."""
        return self.voters | self.voters_outgoing

    def member_ids(self) -> frozenset[int]:
        """Every node that receives the log."""
        return self.voters | self.voters_outgoing | self.learners | self.learners_next

    def is_learner(self, id_: int) -> bool:
        """True for a learner; a voter being demoted (``learners_next``) still votes in the outgoing half."""
        return id_ in self.learners

    def check(self) -> None:
        """Raise ConfChangeError unless the sets are consistent with each other."""
        if self.learners & self.voter_ids():
            raise ConfChangeError(f"nodes {sorted(self.learners & self.voter_ids())} are both voters and learners")
        if not self.learners_next <= self.voters_outgoing - self.voters:
            raise ConfChangeError("learners_next must be outgoing voters that are not incoming voters")
        if not self.joint and (self.learners_next or self.auto_leave):
            raise ConfChangeError("learners_next and auto_leave are only set in a joint configuration")

    def __str__(self) -> str:
        def ids(s: frozenset[int]) -> str:
            return " ".join(str(i) for i in sorted(s))

        out = f"voters=({ids(self.voters)})"
        if self.joint:
            out += f"&&({ids(self.voters_outgoing)})"
        if self.learners:
            out += f" learners=({ids(self.learners)})"
        if self.learners_next:
            out += f" learners_next=({ids(self.learners_next)})"
        if self.auto_leave:
            out += " autoleave"
        return out


def as_v2(cc: ConfChange | ConfChangeV2) -> ConfChangeV2:
    """A single-server ``ConfChange`` as the equivalent ``ConfChangeV2`` (one change, automatic transition)."""
    if isinstance(cc, ConfChangeV2):
        return cc
    return ConfChangeV2(changes=[ConfChangeSingle(type=cc.type, node_id=cc.node_id)], context=cc.context)


def leaves_joint(cc: ConfChangeV2) -> bool:
    """An empty ConfChangeV2 (automatic transition, no changes; the context is not looked at) leaves a joint
    configuration."""
    return not cc.changes and cc.transition == ConfChangeTransition.ConfChangeTransitionAuto


def enters_joint(cc: ConfChangeV2) -> tuple[bool, bool]:
    """(enters, auto_leave): more than one change, or an explicitly requested transition, goes through a joint
    configuration; it is left automatically unless the transition is JointExplicit."""
    if cc.transition == ConfChangeTransition.ConfChangeTransitionAuto and len(cc.changes) <= 1:
        return False, False
    return True, cc.transition != ConfChangeTransition.ConfChangeTransitionJointExplicit


def apply_change(m: Membership, cc: ConfChange | ConfChangeV2) -> Membership:
    """The configuration that ``cc`` turns ``m`` into; raises ConfChangeError if it is not allowed from ``m``."""
    v2 = as_v2(cc)
    if leaves_joint(v2):
        return leave_joint(m)
    enters, auto_leave = enters_joint(v2)
    if enters:
        return enter_joint(m, auto_leave, v2.changes)
    return simple(m, v2.changes)


def enter_joint(m: Membership, auto_leave: bool, changes: Iterable[ConfChangeSingle]) -> Membership:
    if m.joint:
        raise ConfChangeError("configuration is already joint")
    if not m.voters:
        raise ConfChangeError("cannot make a configuration without voters joint")
    s = _Sets(m.voters, m.voters, m.learners, frozenset())
    s.apply(changes)
    out = Membership(frozenset(s.voters), m.voters, frozenset(s.learners), frozenset(s.learners_next), auto_leave)
    out.check()
    return out


def leave_joint(m: Membership) -> Membership:
    if not m.joint:
        raise ConfChangeError("cannot leave a configuration that is not joint")
    out = Membership(voters=m.voters, learners=m.learners | m.learners_next)
    out.check()
    return out


def simple(m: Membership, changes: Iterable[ConfChangeSingle]) -> Membership:
    if m.joint:
        raise ConfChangeError("cannot apply a simple configuration change to a joint configuration")
    s = _Sets(m.voters, frozenset(), m.learners, frozenset())
    s.apply(changes)
    if len(m.voters ^ s.voters) > 1:
        raise ConfChangeError("more than one voter changed without entering a joint configuration")
    out = Membership(frozenset(s.voters), learners=frozenset(s.learners))
    out.check()
    return out


class _Sets:
    """Mutable copies of a configuration's sets while its changes are applied one by one."""

    def __init__(
        self, voters: frozenset[int], outgoing: frozenset[int], learners: frozenset[int], learners_next: frozenset[int]
    ) -> None:
        self.voters = set(voters)
        self.outgoing = outgoing
        self.learners = set(learners)
        self.learners_next = set(learners_next)

    def apply(self, changes: Iterable[ConfChangeSingle]) -> None:
        for c in changes:
            nid = c.node_id
            if nid == 0:
                continue  # etcd ignores changes that name no node
            if c.type == ConfChangeType.ConfChangeAddNode:
                self.make_voter(nid)
            elif c.type == ConfChangeType.ConfChangeAddLearnerNode:
                self.make_learner(nid)
            elif c.type == ConfChangeType.ConfChangeRemoveNode:
                self.remove(nid)
            # ConfChangeUpdateNode changes no membership (the protobuf enum admits no other value).
        if not self.voters:
            raise ConfChangeError("the change removes all voters")

    def make_voter(self, nid: int) -> None:
        self.learners.discard(nid)
        self.learners_next.discard(nid)
        self.voters.add(nid)

    def make_learner(self, nid: int) -> None:
        if nid in self.learners:
            return
        self.voters.discard(nid)
        self.learners_next.discard(nid)
        if nid in self.outgoing:
            # Still a voter of the outgoing half: it becomes a learner when the joint configuration is left.
            self.learners_next.add(nid)
        else:
            self.learners.add(nid)

    def remove(self, nid: int) -> None:
        self.voters.discard(nid)
        self.learners.discard(nid)
        self.learners_next.discard(nid)
