"""What a node reports about itself: ``NodeStatus`` (role, term, indexes, members, followers' progress) and
``NodeCounters`` (events counted since the node started, for metrics)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FollowerProgress:
    """The leader's view of one follower: ``match`` is known replicated there, ``next`` is the next index to send,
    ``state`` is ``probe``, ``replicate`` or ``snapshot``."""

    match: int
    next: int
    state: str
    learner: bool


@dataclass(frozen=True)
class NodeStatus:
    """One node at one moment. ``role`` is ``leader``, ``follower``, ``candidate`` or ``pre-candidate``; ``leader``
    is 0 when none is known. ``commit`` is the commit index this node knows of, ``applied`` what its state machine
    holds, ``last_index`` the end of its log (saved or not yet), ``snapshot_index`` that of its stored snapshot.
    ``voters_outgoing`` is empty unless a joint configuration is in force. ``progress`` holds every other member's
    progress on the leader, and is empty elsewhere."""

    id: int
    role: str
    term: int
    leader: int
    commit: int
    applied: int
    last_index: int
    snapshot_index: int
    voters: list[int]
    learners: list[int]
    voters_outgoing: list[int]
    progress: dict[int, FollowerProgress]

    def to_dict(self) -> dict[str, Any]:
        """The status as plain JSON-ready data (progress keyed by member id as a string)."""
        d = dataclasses.asdict(self)
        d["progress"] = {str(k): v for k, v in d["progress"].items()}
        return d


@dataclass
class NodeCounters:
    """Events since the node started; they only grow, so rates come from differences over time."""

    proposals: int = 0
    """``propose`` calls taken (read barriers included)."""
    proposals_failed: int = 0
    """Of those, the ones that ended without a result: not the leader any more, timed out, or the node stopped."""
    committed: int = 0
    """Entries this node learned were committed."""
    applied: int = 0
    """Entries applied to the state machine (empty and configuration entries included)."""
    leader_changes: int = 0
    """Times this node saw a new leader."""
    snapshots_sent: int = 0
    """Snapshot files streamed to followers, in full (on a leader)."""
    snapshots_received: int = 0
    """Snapshots from a leader restored into the state machine."""
    snapshot_bytes_sent: int = 0
    """Bytes of snapshot files streamed to followers (what a resumed transfer skipped is not counted)."""
    snapshot_bytes_received: int = 0
    """Bytes of snapshot files received from leaders."""
    snapshot_streams_failed: int = 0
    """Snapshot transfers to followers that did not complete (Raft sends the snapshot again later)."""
