"""The leader's view of each follower: probe / replicate / snapshot states and a bounded in-flight window."""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """The last indexes of the MsgApps sent but not yet acknowledged, at most ``size`` of them."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("inflight window must hold at least one message")
        self.size = size
        self._q: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._q)

    def add(self, index: int) -> None:
        if self.full():
            raise OverflowError("cannot add to a full inflight window")
        self._q.append(index)

    def free_le(self, to: int) -> None:
        q = self._q
        while q and q[0] <= to:
            q.popleft()

    def free_first_one(self) -> None:
        if self._q:
            self._q.popleft()

    def full(self) -> bool:
        return len(self._q) >= self.size

    def reset(self) -> None:
        self._q.clear()


class Progress:
    """etcd's tracker.Progress: ``match`` is known replicated, ``next`` is the next index to send."""

    def __init__(self, next_index: int, max_inflight: int, *, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.recent_active = False
        self.is_learner = is_learner
        self.inflights = Inflights(max_inflight)

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.value} match={self.match} next={self.next} probe_sent={self.probe_sent} "
            f"pending_snapshot={self.pending_snapshot} inflight={len(self.inflights)})"
        )

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, n: int) -> bool:
        """Record an acknowledgement up to ``n``; True if it moved ``match``."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        self.next = max(self.next, n + 1)
        return updated

    def optimistic_update(self, n: int) -> None:
        self.next = n + 1

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """Step ``next`` back after a rejection of the MsgApp at ``rejected``; False if the rejection is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True


class ProgressTracker:
    """The progress of every voter and learner, and the votes of the current election."""

    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}

    def set_members(self, voters: Iterable[int], learners: Iterable[int], next_index: int) -> None:
        progress: dict[int, Progress] = {}
        for id_ in sorted(set(voters)):
            progress[id_] = self.progress.get(id_) or Progress(next_index, self.max_inflight)
            progress[id_].is_learner = False
        for id_ in sorted(set(learners)):
            if id_ in progress:
                raise ValueError(f"{id_} is both a voter and a learner")
            progress[id_] = self.progress.get(id_) or Progress(next_index, self.max_inflight)
            progress[id_].is_learner = True
        self.progress = progress

    def reset_progress(self, last_index: int, self_id: int, self_match: int) -> None:
        """Fresh progress for everyone (a new term): only this node is known to hold anything (up to ``self_match``,
        what it has saved)."""
        for id_, pr in self.progress.items():
            fresh = Progress(last_index + 1, self.max_inflight, is_learner=pr.is_learner)
            if id_ == self_id:
                fresh.match = self_match
                fresh.recent_active = True
            self.progress[id_] = fresh

    def voters(self) -> list[int]:
        return [id_ for id_, pr in self.progress.items() if not pr.is_learner]

    def learners(self) -> list[int]:
        return [id_ for id_, pr in self.progress.items() if pr.is_learner]

    def is_singleton(self) -> bool:
        return len(self.voters()) == 1

    def quorum(self) -> int:
        return len(self.voters()) // 2 + 1

    def committed(self) -> int:
        """The largest index replicated on a quorum of voters."""
        matches = sorted((pr.match for pr in self.progress.values() if not pr.is_learner), reverse=True)
        if not matches:
            return 0
        return matches[len(matches) // 2]

    def has_quorum(self, ids: set[int]) -> bool:
        return sum(1 for id_ in self.voters() if id_ in ids) >= self.quorum()

    def quorum_active(self, self_id: int) -> bool:
        active = sum(
            1 for id_, pr in self.progress.items() if not pr.is_learner and (pr.recent_active or id_ == self_id)
        )
        return active >= self.quorum()

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, id_: int, granted: bool) -> None:
        self.votes.setdefault(id_, granted)

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        granted = rejected = 0
        for id_ in self.voters():
            v = self.votes.get(id_)
            if v is True:
                granted += 1
            elif v is False:
                rejected += 1
        q = self.quorum()
        if granted >= q:
            return granted, rejected, VoteResult.WON
        if len(self.voters()) - rejected < q:
            return granted, rejected, VoteResult.LOST
        return granted, rejected, VoteResult.PENDING


class VoteResult(enum.Enum):
    PENDING = "pending"
    LOST = "lost"
    WON = "won"
