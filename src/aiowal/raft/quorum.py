"""Quorum arithmetic for a majority of one voter set and for a joint configuration (a majority of each of two sets).

An empty voter set places no constraint: it commits everything and wins every vote, so that a joint configuration
whose outgoing half is empty behaves exactly like its incoming half.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping

UNBOUNDED = (1 << 64) - 1
"""The commit index of an empty voter set: larger than any real index."""


class VoteResult(enum.Enum):
    PENDING = "pending"
    LOST = "lost"
    WON = "won"


def majority(n: int) -> int:
    """How many of ``n`` voters make a majority."""
    return n // 2 + 1


def majority_committed(voters: Collection[int], match: Mapping[int, int]) -> int:
    """The largest index that a majority of ``voters`` hold (``match`` gives each one's; a missing one holds 0)."""
    if not voters:
        return UNBOUNDED
    acked = sorted((match.get(id_, 0) for id_ in voters), reverse=True)
    return acked[majority(len(acked)) - 1]


def majority_vote(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """Won once a majority granted, lost once a majority can no longer be reached, pending otherwise."""
    if not voters:
        return VoteResult.WON
    granted = rejected = 0
    for id_ in voters:
        v = votes.get(id_)
        if v is True:
            granted += 1
        elif v is False:
            rejected += 1
    q = majority(len(voters))
    if granted >= q:
        return VoteResult.WON
    if len(voters) - rejected >= q:
        return VoteResult.PENDING
    return VoteResult.LOST


def joint_committed(incoming: Collection[int], outgoing: Collection[int], match: Mapping[int, int]) -> int:
    """An index is committed in a joint configuration once each half's majority holds it."""
    return min(majority_committed(incoming, match), majority_committed(outgoing, match))


def joint_vote(incoming: Collection[int], outgoing: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """A joint vote is won when both halves win it and lost as soon as either loses it."""
    a, b = majority_vote(incoming, votes), majority_vote(outgoing, votes)
    if a is b:
        return a
    if VoteResult.LOST in (a, b):
        return VoteResult.LOST
    return VoteResult.PENDING
