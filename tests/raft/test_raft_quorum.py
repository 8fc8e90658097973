"""Quorum arithmetic: the commit index and vote outcome of a majority and of a joint configuration, checked on
hand-picked cases and against a brute-force definition."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aiowal.raft.quorum import (
    UNBOUNDED,
    VoteResult,
    joint_committed,
    joint_vote,
    majority_committed,
    majority_vote,
)

WON, LOST, PENDING = VoteResult.WON, VoteResult.LOST, VoteResult.PENDING


def test_majority_commit_index() -> None:
    assert majority_committed({1}, {1: 7}) == 7
    assert majority_committed({1, 2}, {1: 7, 2: 5}) == 5
    assert majority_committed({1, 2, 3}, {1: 9, 2: 5, 3: 2}) == 5
    assert majority_committed({1, 2, 3, 4}, {1: 9, 2: 5, 3: 2, 4: 8}) == 5
    assert majority_committed({1, 2, 3, 4, 5}, {1: 9, 2: 5, 3: 2, 4: 8, 5: 1}) == 5
    # A voter not heard from holds nothing.
    assert majority_committed({1, 2, 3}, {1: 9}) == 0
    assert majority_committed(set(), {1: 9}) == UNBOUNDED


def test_joint_commit_index_needs_both_halves() -> None:
    match = {1: 10, 2: 10, 3: 1, 4: 1, 5: 6}
    # Incoming {1,2,3} alone would commit 10, outgoing {3,4,5} alone 1.
    assert majority_committed({1, 2, 3}, match) == 10
    assert joint_committed({1, 2, 3}, {3, 4, 5}, match) == 1
    match[4] = 6
    assert joint_committed({1, 2, 3}, {3, 4, 5}, match) == 6
    # An empty outgoing half changes nothing.
    assert joint_committed({1, 2, 3}, set(), match) == 10
    # The same voters in both halves: an ordinary majority.
    assert joint_committed({1, 2, 3}, {1, 2, 3}, match) == 10


def test_majority_vote() -> None:
    assert majority_vote(set(), {}) is WON
    assert majority_vote({1}, {}) is PENDING
    assert majority_vote({1}, {1: True}) is WON
    assert majority_vote({1}, {1: False}) is LOST
    assert majority_vote({1, 2, 3}, {1: True}) is PENDING
    assert majority_vote({1, 2, 3}, {1: True, 2: False}) is PENDING
    assert majority_vote({1, 2, 3}, {1: True, 2: False, 3: False}) is LOST
    assert majority_vote({1, 2, 3, 4}, {1: True, 2: True}) is PENDING
    assert majority_vote({1, 2, 3, 4}, {1: True, 2: True, 3: False}) is PENDING
    assert majority_vote({1, 2, 3, 4}, {1: True, 3: False, 4: False}) is LOST
    # Votes from outside the voter set are not counted.
    assert majority_vote({1, 2, 3}, {1: True, 7: True, 8: True}) is PENDING


def test_joint_vote() -> None:
    inc, out = {1, 2, 3}, {3, 4, 5}
    assert joint_vote(inc, out, {1: True, 2: True}) is PENDING  # incoming won, outgoing undecided
    assert joint_vote(inc, out, {1: True, 2: True, 3: True}) is PENDING
    assert joint_vote(inc, out, {1: True, 2: True, 3: True, 4: True}) is WON
    assert joint_vote(inc, out, {1: True, 2: True, 4: False, 5: False}) is LOST  # outgoing lost
    assert joint_vote(inc, out, {4: True, 5: True, 1: False, 2: False}) is LOST  # incoming lost
    assert joint_vote(inc, set(), {1: True, 2: True}) is WON


def brute_commit(incoming: set[int], outgoing: set[int], match: dict[int, int]) -> int:
    """The largest index that a majority of each non-empty half holds, found by trying every index."""
    best = 0
    for i in range(1, max(match.values(), default=0) + 1):
        if all(sum(1 for v in half if match.get(v, 0) >= i) * 2 > len(half) for half in (incoming, outgoing) if half):
            best = i
    return best


def brute_vote(voters: set[int], votes: dict[int, bool]) -> VoteResult:
    """Won if the granted votes alone make a majority; lost if they cannot even with every missing vote."""
    if not voters:
        return WON
    granted = {v for v in voters if votes.get(v) is True}
    possible = {v for v in voters if votes.get(v) is not False}
    if len(granted) * 2 > len(voters):
        return WON
    if len(possible) * 2 > len(voters):
        return PENDING
    return LOST


ids = st.sets(st.integers(1, 7), max_size=7)


@given(ids.filter(bool), ids, st.dictionaries(st.integers(1, 7), st.integers(0, 20)))
def test_joint_commit_matches_brute_force(incoming: set[int], outgoing: set[int], match: dict[int, int]) -> None:
    assert joint_committed(incoming, outgoing, match) == brute_commit(incoming, outgoing, match)


@given(ids, ids, st.dictionaries(st.integers(1, 7), st.booleans()))
def test_joint_vote_matches_brute_force(incoming: set[int], outgoing: set[int], votes: dict[int, bool]) -> None:
    a, b = brute_vote(incoming, votes), brute_vote(outgoing, votes)
    want = a if a is b else LOST if LOST in (a, b) else PENDING
    assert joint_vote(incoming, outgoing, votes) is want
    assert majority_vote(incoming, votes) is a
