"""The current configuration with every member's progress and the votes of the current election; every quorum
decision (commit index, election, check-quorum, read-index acks) is taken here, over both halves of a joint
configuration."""

from __future__ import annotations

from collections.abc import Iterable

from aiowal.raft.membership import Membership
from aiowal.raft.progress import Progress
from aiowal.raft.quorum import VoteResult, joint_committed, joint_vote
from aiowal.raftpb import ConfState


class ProgressTracker:
    """etcd's tracker.ProgressTracker: ``membership`` is the configuration in force, ``progress`` has an entry for
    each of its members (voters of both halves and learners)."""

    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.membership = Membership()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}

    def set_membership(self, m: Membership, next_index: int) -> None:
        """Switch to ``m``: members kept keep their progress, new ones are probed from ``next_index`` and count as
        recently active (or check-quorum could depose the leader before they answer)."""
        m.check()
        progress: dict[int, Progress] = {}
        for id_ in sorted(m.member_ids()):
            pr = self.progress.get(id_)
            if pr is None:
                pr = Progress(next_index, self.max_inflight)
                pr.recent_active = True
            pr.is_learner = m.is_learner(id_)
            progress[id_] = pr
        self.membership = m
        self.progress = progress

    def set_members(self, voters: Iterable[int], learners: Iterable[int], next_index: int) -> None:
        """A configuration that is not joint, from its voters and learners."""
        self.set_membership(Membership.of(voters, learners), next_index)

    def reset_progress(self, last_index: int, self_id: int, self_match: int) -> None:
        """Fresh progress for everyone (a new term): only this node is known to hold anything (up to ``self_match``,
        what it has saved)."""
        for id_, pr in self.progress.items():
            fresh = Progress(last_index + 1, self.max_inflight, is_learner=pr.is_learner)
            if id_ == self_id:
                fresh.match = self_match
                fresh.recent_active = True
            self.progress[id_] = fresh

    # --- the configuration -----------------------------------------------------------------------------------
    def conf_state(self) -> ConfState:
        return self.membership.to_conf_state()

    def voters(self) -> list[int]:
        """The voters of the incoming (or only) half."""
        return sorted(self.membership.voters)

    def voters_outgoing(self) -> list[int]:
        return sorted(self.membership.voters_outgoing)

    def voter_ids(self) -> list[int]:
        """Every node whose vote counts, in either half."""
        return sorted(self.membership.voter_ids())

    def learners(self) -> list[int]:
        return sorted(self.membership.learners)

    def learners_next(self) -> list[int]:
        return sorted(self.membership.learners_next)

    def is_joint(self) -> bool:
        return self.membership.joint

    # --- quorum decisions ------------------------------------------------------------------------------------
    def committed(self) -> int:
        """The largest index replicated on a majority of voters (of each half, when joint)."""
        m = self.membership
        match = {id_: self.progress[id_].match for id_ in m.voter_ids()}
        return joint_committed(m.voters, m.voters_outgoing, match)

    def has_quorum(self, ids: set[int]) -> bool:
        """Whether ``ids`` include a majority of the voters (of each half, when joint)."""
        m = self.membership
        return joint_vote(m.voters, m.voters_outgoing, dict.fromkeys(ids, True)) is VoteResult.WON

    def quorum_active(self, self_id: int) -> bool:
        """Whether the voters heard from recently (and this node) make a quorum."""
        m = self.membership
        active = {id_: self.progress[id_].recent_active or id_ == self_id for id_ in m.voter_ids()}
        return joint_vote(m.voters, m.voters_outgoing, active) is VoteResult.WON

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, id_: int, granted: bool) -> None:
        self.votes.setdefault(id_, granted)

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        """(granted, rejected, result) of the current election, counting the voters of both halves."""
        m = self.membership
        granted = rejected = 0
        for id_ in m.voter_ids():
            v = self.votes.get(id_)
            if v is True:
                granted += 1
            elif v is False:
                rejected += 1
        return granted, rejected, joint_vote(m.voters, m.voters_outgoing, self.votes)
