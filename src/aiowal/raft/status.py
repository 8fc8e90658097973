"""A snapshot of a node for a status view: role, term, indexes, configuration and, on the leader, each member's
replication progress."""

from __future__ import annotations

import dataclasses

from aiowal.raft.progress import Progress, ProgressState
from aiowal.raft.raft import Raft, StateType
from aiowal.raftpb import ConfState


@dataclasses.dataclass(frozen=True)
class MemberProgress:
    """The leader's view of one member: ``match`` is known replicated there, ``next`` is the next index to send."""

    match: int
    next: int
    state: ProgressState
    recent_active: bool
    is_learner: bool
    paused: bool
    pending_snapshot: int

    @classmethod
    def of(cls, pr: Progress) -> MemberProgress:
        return cls(
            match=pr.match,
            next=pr.next,
            state=pr.state,
            recent_active=pr.recent_active,
            is_learner=pr.is_learner,
            paused=pr.is_paused(),
            pending_snapshot=pr.pending_snapshot,
        )


@dataclasses.dataclass(frozen=True)
class Status:
    """What ``RawNode.status()`` reports; ``progress`` is empty unless this node is the leader."""

    id: int
    term: int
    vote: int
    commit: int
    applied: int
    last_index: int
    lead: int
    state: StateType
    conf_state: ConfState
    progress: dict[int, MemberProgress]

    @classmethod
    def of(cls, r: Raft) -> Status:
        leader = r.state is StateType.LEADER
        return cls(
            id=r.id,
            term=r.term,
            vote=r.vote,
            commit=r.raft_log.committed,
            applied=r.raft_log.applied,
            last_index=r.raft_log.last_index(),
            lead=r.lead,
            state=r.state,
            conf_state=r.conf_state(),
            progress={id_: MemberProgress.of(pr) for id_, pr in r.prs.progress.items()} if leader else {},
        )
