"""The Raft paper's rules (sections 5.1-5.4), re-expressed from etcd raft's raft_paper_test.go."""

from __future__ import annotations

import pytest
from raft_harness import NONE, Network, ent, hup, log_ents, msg, new_raft, persist, read_messages, storage_with

from aiowal.raft import StateType
from aiowal.raft.messages import MT, msg_from
from aiowal.raft.raft import Raft
from aiowal.raftpb import Entry, HardState, Message


def become(r: Raft, state: StateType, term: int, lead: int = NONE) -> None:
    if state is StateType.FOLLOWER:
        r.become_follower(term, lead)
    elif state is StateType.CANDIDATE:
        r.term = term - 1
        r.become_candidate()
    else:
        r.term = term - 1
        r.become_candidate()
        r.become_leader()


# --- 5.1: terms ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("state", [StateType.FOLLOWER, StateType.CANDIDATE, StateType.LEADER])
def test_update_term_from_message(state: StateType) -> None:
    """A node that sees a larger term adopts it and reverts to follower."""
    r = new_raft(1, [1, 2, 3])
    become(r, state, 1, lead=2)
    r.step(msg(MT.MsgApp, 2, 1, term=2))
    assert r.term == 2
    assert r.state is StateType.FOLLOWER


def test_reject_stale_term_message() -> None:
    """A request with a stale term number is ignored."""
    r = new_raft(1, [1, 2, 3], storage=storage_with(hs=HardState(term=2)))
    r.step(msg(MT.MsgApp, 2, 1, term=1, index=0, log_term=0, commit=0))
    assert r.term == 2
    assert read_messages(r) == []
    assert r.lead == NONE


def test_start_as_follower() -> None:
    r = new_raft(1, [1, 2, 3])
    assert r.state is StateType.FOLLOWER
    assert r.term == 0


# --- 5.2: leader election ------------------------------------------------------------------------------------
def test_leader_bcast_beat() -> None:
    """A leader sends heartbeats to every follower each heartbeat interval."""
    hi = 1
    r = new_raft(1, [1, 2, 3], 10, hi)
    r.become_candidate()
    r.become_leader()
    for _ in range(10):
        r._append_entry([Entry(data=b"x")])
    read_messages(r)
    for _ in range(hi):
        r.tick()
    got = sorted((m.to, m.type, m.term, m.commit) for m in read_messages(r))
    assert got == [(2, MT.MsgHeartbeat, 1, 0), (3, MT.MsgHeartbeat, 1, 0)]


@pytest.mark.parametrize("state", [StateType.FOLLOWER, StateType.CANDIDATE])
def test_nonleader_start_election(state: StateType) -> None:
    """On election timeout a node increments its term, votes for itself and requests votes from every peer."""
    et = 10
    r = new_raft(1, [1, 2, 3], et)
    become(r, state, 1, lead=2)
    for _ in range(2 * et):
        r.tick()
    assert r.term == 2
    assert r.state is StateType.CANDIDATE
    assert r.prs.votes[1] is True
    got = sorted((m.to, m.type, m.term) for m in read_messages(r))
    assert got == [(2, MT.MsgVote, 2), (3, MT.MsgVote, 2)]


@pytest.mark.parametrize(
    ("size", "votes", "state"),
    [
        (1, {}, StateType.LEADER),
        (3, {2: True, 3: True}, StateType.LEADER),
        (3, {2: True}, StateType.LEADER),
        (5, {2: True, 3: True, 4: True, 5: True}, StateType.LEADER),
        (5, {2: True, 3: True, 4: True}, StateType.LEADER),
        (5, {2: True, 3: True}, StateType.LEADER),
        (3, {2: False, 3: False}, StateType.FOLLOWER),
        (5, {2: False, 3: False, 4: False, 5: False}, StateType.FOLLOWER),
        (5, {2: True, 3: False, 4: False, 5: False}, StateType.FOLLOWER),
        (3, {}, StateType.CANDIDATE),
        (5, {2: True}, StateType.CANDIDATE),
        (5, {2: False, 3: False}, StateType.CANDIDATE),
        (5, {}, StateType.CANDIDATE),
    ],
)
def test_leader_election_in_one_round(size: int, votes: dict[int, bool], state: StateType) -> None:
    """A candidate wins with a majority of votes, loses with a majority of rejections, waits otherwise."""
    r = new_raft(1, range(1, size + 1))
    hup(r)
    for id_, granted in votes.items():
        r.step(msg(MT.MsgVoteResp, id_, 1, term=r.term, reject=not granted))
    assert r.state is state
    assert r.term == 1


@pytest.mark.parametrize(
    ("vote", "nvote", "reject"),
    [(NONE, 2, False), (NONE, 3, False), (2, 2, False), (3, 3, False), (2, 3, True), (3, 2, True)],
)
def test_follower_vote(vote: int, nvote: int, reject: bool) -> None:
    """A follower votes for at most one candidate in a term, first come first served."""
    r = new_raft(1, [1, 2, 3])
    r.term, r.vote = 1, vote
    r.step(msg(MT.MsgVote, nvote, 1, term=1))
    got = [(msg_from(m), m.to, m.type, m.term, m.reject) for m in read_messages(r)]
    assert got == [(1, nvote, MT.MsgVoteResp, 1, reject)]


@pytest.mark.parametrize("term", [1, 2])
def test_candidate_fallback(term: int) -> None:
    """A candidate that hears from a leader of at least its own term steps down to follower."""
    r = new_raft(1, [1, 2, 3])
    hup(r)
    assert r.state is StateType.CANDIDATE
    r.step(msg(MT.MsgApp, 2, 1, term=term))
    assert r.state is StateType.FOLLOWER
    assert r.term == term
    assert r.lead == 2


@pytest.mark.parametrize("state", [StateType.FOLLOWER, StateType.CANDIDATE])
def test_election_timeout_randomized(state: StateType) -> None:
    """Election timeouts are drawn from [et, 2et), and every value in it occurs."""
    et = 10
    r = new_raft(1, [1, 2, 3], et)
    seen = set()
    for _ in range(50 * et):
        become(r, state, r.term + 1, lead=2)
        t = 0
        while not read_messages(r):
            r.tick()
            t += 1
        seen.add(t)
    assert seen == set(range(et, 2 * et))


@pytest.mark.parametrize("state", [StateType.FOLLOWER, StateType.CANDIDATE])
def test_election_timeouts_rarely_conflict(state: StateType) -> None:
    """Randomized timeouts make it rare that two nodes time out together (split votes)."""
    et, size, rounds = 10, 5, 1000
    rs = [new_raft(i, range(1, size + 1), et, seed=100 + i) for i in range(1, size + 1)]
    conflicts = 0
    for _ in range(rounds):
        for r in rs:
            become(r, state, r.term + 1)
        timed_out = 0
        while timed_out == 0:
            for r in rs:
                r.tick()
                if read_messages(r):
                    timed_out += 1
        if timed_out > 1:
            conflicts += 1
    assert conflicts / rounds <= 0.3


# --- 5.3: log replication ------------------------------------------------------------------------------------
def committed_leader(n: int = 3) -> Raft:
    r = new_raft(1, range(1, n + 1))
    r.become_candidate()
    r.become_leader()
    commit_noop_entry(r)
    return r


def commit_noop_entry(r: Raft) -> None:
    """Acknowledge the leader's empty entry from every follower and mark everything stable."""
    assert r.state is StateType.LEADER
    r.bcast_append()
    for m in read_messages(r):
        assert m.type == MT.MsgApp and len(m.entries) == 1 and not m.entries[0].data
        r.step(accept_and_reply(m))
    read_messages(r)
    stabilize(r)


def stabilize(r: Raft) -> None:
    persist(r)


def accept_and_reply(m: Message) -> Message:
    return msg(MT.MsgAppResp, m.to, msg_from(m), term=m.term, index=m.index + len(m.entries))


def test_leader_start_replication() -> None:
    """A leader appends a proposal to its log and sends it to every follower in MsgApp."""
    r = committed_leader()
    li = r.raft_log.last_index()
    r.step(msg(MT.MsgProp, 1, 1, entries=[Entry(data=b"some data")]))
    assert r.raft_log.last_index() == li + 1
    assert r.raft_log.committed == li
    got = sorted(
        (m.to, m.type, m.index, m.log_term, m.commit, [(e.index, e.data) for e in m.entries]) for m in read_messages(r)
    )
    want = [(i, MT.MsgApp, li, 1, li, [(li + 1, b"some data")]) for i in (2, 3)]
    assert got == want
    assert [(e.index, e.term, e.data) for e in r.raft_log.unstable_entries()] == [(li + 1, 1, b"some data")]


def test_leader_commit_entry() -> None:
    """An entry is committed once a majority holds it; followers learn the commit index from the next MsgApp."""
    r = committed_leader()
    li = r.raft_log.last_index()
    r.step(msg(MT.MsgProp, 1, 1, entries=[Entry(data=b"some data")]))
    for m in read_messages(r):
        r.step(accept_and_reply(m))
    assert r.raft_log.committed == li + 1
    assert [(e.index, e.data) for e in r.raft_log.next_ents()][-1] == (li + 1, b"some data")
    msgs = sorted(read_messages(r), key=lambda m: m.to)
    assert [(m.to, m.type, m.commit) for m in msgs] == [(2, MT.MsgApp, li + 1), (3, MT.MsgApp, li + 1)]


@pytest.mark.parametrize(
    ("size", "acceptors", "committed"),
    [
        (1, set(), True),
        (3, set(), False),
        (3, {2}, True),
        (3, {2, 3}, True),
        (5, set(), False),
        (5, {2}, False),
        (5, {2, 3}, True),
        (5, {2, 3, 4}, True),
        (5, {2, 3, 4, 5}, True),
    ],
)
def test_leader_acknowledge_commit(size: int, acceptors: set[int], committed: bool) -> None:
    r = committed_leader(size)
    li = r.raft_log.last_index()
    r.step(msg(MT.MsgProp, 1, 1, entries=[Entry(data=b"some data")]))
    persist(r)  # the leader's own copy counts once saved
    for m in read_messages(r):
        if m.to in acceptors:
            r.step(accept_and_reply(m))
    assert (r.raft_log.committed > li) is committed


@pytest.mark.parametrize(
    "prior",
    [[], [(1, 2)], [(1, 1), (2, 2)], [(1, 1)]],
)
def test_leader_commit_preceding_entries(prior: list[tuple[int, int]]) -> None:
    """Committing an entry of its term commits every entry before it, including those of earlier terms."""
    r = new_raft(1, [1, 2, 3], storage=storage_with(prior, hs=HardState(term=2)))
    r.become_candidate()
    r.become_leader()
    r.step(msg(MT.MsgProp, 1, 1, entries=[Entry(data=b"some data")]))
    for m in read_messages(r):
        r.step(accept_and_reply(m))
    li = len(prior)
    want = [(i, t, b"") for i, t in prior] + [(li + 1, 3, b""), (li + 2, 3, b"some data")]
    assert [(e.index, e.term, e.data) for e in r.raft_log.next_ents()] == want


@pytest.mark.parametrize(
    ("ents", "commit"),
    [
        ([(1, 1, b"some data")], 1),
        ([(1, 1, b"some data"), (2, 1, b"some data2")], 2),
        ([(1, 1, b"some data2"), (2, 1, b"some data")], 2),
        ([(1, 1, b"some data"), (2, 1, b"some data2")], 1),
    ],
)
def test_follower_commit_entry(ents: list[tuple[int, int, bytes]], commit: int) -> None:
    """A follower applies entries up to the leader's commit index it has learned."""
    r = new_raft(1, [1, 2, 3])
    r.become_follower(1, 2)
    r.step(msg(MT.MsgApp, 2, 1, term=1, commit=commit, entries=[ent(i, t, d) for i, t, d in ents]))
    assert r.raft_log.committed == commit
    assert [(e.index, e.term, e.data) for e in r.raft_log.next_ents()] == ents[:commit]


@pytest.mark.parametrize(
    ("term", "index", "windex", "wreject", "whint", "wlogterm"),
    [
        (0, 0, 1, False, 0, 0),  # match with committed entries
        (1, 1, 1, False, 0, 0),
        (2, 2, 2, False, 0, 0),  # match with uncommitted entries
        (1, 1, 1, False, 0, 0),
        (3, 2, 2, True, 2, 2),  # unmatch with existing entry
        (3, 3, 3, True, 2, 2),  # unexisting entry
    ],
)
def test_follower_check_msg_app(term: int, index: int, windex: int, wreject: bool, whint: int, wlogterm: int) -> None:
    """A follower rejects a MsgApp whose previous entry it does not hold, with a hint to its matching point."""
    r = new_raft(1, [1, 2, 3], storage=storage_with([(1, 1), (2, 2)], hs=HardState(term=2, commit=1)))
    r.become_follower(2, 2)
    r.step(msg(MT.MsgApp, 2, 1, term=2, log_term=term, index=index))
    got = [(m.type, m.index, m.reject, m.reject_hint, m.log_term) for m in read_messages(r)]
    assert got == [(MT.MsgAppResp, windex, wreject, whint, wlogterm if wreject else 0)]


@pytest.mark.parametrize(
    ("index", "term", "ents", "want", "wunstable"),
    [
        (2, 2, [(3, 3)], [(1, 1), (2, 2), (3, 3)], [(3, 3)]),
        (1, 1, [(2, 3), (3, 4)], [(1, 1), (2, 3), (3, 4)], [(2, 3), (3, 4)]),
        (0, 0, [(1, 1)], [(1, 1), (2, 2)], []),
        (0, 0, [(1, 3)], [(1, 3)], [(1, 3)]),
    ],
)
def test_follower_append_entries(
    index: int, term: int, ents: list[tuple[int, int]], want: list[tuple[int, int]], wunstable: list[tuple[int, int]]
) -> None:
    """A follower deletes conflicting entries and everything after them, and appends the new ones."""
    r = new_raft(1, [1, 2, 3], storage=storage_with([(1, 1), (2, 2)]))
    r.become_follower(2, 2)
    r.step(msg(MT.MsgApp, 2, 1, term=2, log_term=term, index=index, entries=[ent(i, t) for i, t in ents]))
    assert [(i, t) for i, t, _ in log_ents(r)] == want
    assert [(e.index, e.term) for e in r.raft_log.unstable_entries()] == wunstable


LEADER_LOG = [(1, 1), (2, 1), (3, 1), (4, 4), (5, 4), (6, 5), (7, 5), (8, 6), (9, 6), (10, 6)]


def terms_log(terms: list[int]) -> list[tuple[int, int]]:
    return [(i, t) for i, t in enumerate(terms, start=1)]


@pytest.mark.parametrize(
    "follower",
    [
        # Figure 7 of the Raft paper, cases (a) to (f).
        terms_log([1, 1, 1, 4, 4, 5, 5, 6, 6]),
        terms_log([1, 1, 1, 4]),
        terms_log([1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        terms_log([1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        terms_log([1, 1, 1, 4, 4, 4, 4]),
        terms_log([1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ],
)
def test_leader_sync_follower_log(follower: list[tuple[int, int]]) -> None:
    """A new leader brings a follower's log, however divergent, into agreement with its own."""
    term = 8
    lead = new_raft(1, [1, 2, 3], storage=storage_with(LEADER_LOG, hs=HardState(term=term, commit=len(LEADER_LOG))))
    foll = new_raft(2, [1, 2, 3], storage=storage_with(follower, hs=HardState(term=term - 1)))
    net = Network(lead, foll, None)
    # A third node grants the vote that the follower, whose log may be newer, would refuse.
    net.send(msg(MT.MsgHup, 1, 1))
    net.send(msg(MT.MsgVoteResp, 3, 1, term=term + 1))
    net.propose(1, b"")
    assert lead.state is StateType.LEADER
    assert log_ents(lead) == log_ents(foll)
    assert foll.raft_log.committed == lead.raft_log.committed == lead.raft_log.last_index()


def test_vote_request() -> None:
    """A candidate's vote requests carry its last log index and term."""
    for ents, wterm in [([(1, 1)], 2), ([(1, 1), (2, 2)], 3)]:
        r = new_raft(1, [1, 2, 3])
        r.step(msg(MT.MsgApp, 2, 1, term=wterm - 1, entries=[ent(i, t) for i, t in ents]))
        read_messages(r)
        for _ in range(2 * r.election_timeout):
            r.tick()
        got = sorted((m.to, m.type, m.term, m.index, m.log_term) for m in read_messages(r))
        li, lt = ents[-1]
        assert got == [(2, MT.MsgVote, wterm, li, lt), (3, MT.MsgVote, wterm, li, lt)]


@pytest.mark.parametrize(
    ("ents", "logterm", "index", "wreject"),
    [
        # same log term
        ([(1, 1)], 1, 1, False),
        ([(1, 1)], 1, 2, False),
        ([(1, 1), (2, 1)], 1, 1, True),
        # candidate higher log term
        ([(1, 1)], 2, 1, False),
        ([(1, 1)], 2, 2, False),
        ([(1, 1), (2, 1)], 2, 1, False),
        # voter higher log term
        ([(1, 2)], 1, 1, True),
        ([(1, 2)], 1, 2, True),
        ([(1, 2), (2, 1)], 1, 1, True),
    ],
)
def test_voter(ents: list[tuple[int, int]], logterm: int, index: int, wreject: bool) -> None:
    """A voter refuses a candidate whose log is less up to date than its own."""
    r = new_raft(1, [1, 2], storage=storage_with(ents))
    r.step(msg(MT.MsgVote, 2, 1, term=3, log_term=logterm, index=index))
    got = [(m.type, m.reject) for m in read_messages(r)]
    assert got == [(MT.MsgVoteResp, wreject)]


@pytest.mark.parametrize(("index", "wcommit"), [(1, 0), (2, 0), (3, 3)])
def test_leader_only_commits_log_from_current_term(index: int, wcommit: int) -> None:
    """Entries of earlier terms are committed only by committing an entry of the current term after them."""
    r = new_raft(1, [1, 2], storage=storage_with([(1, 1), (2, 2)], hs=HardState(term=2)))
    r.become_candidate()
    r.become_leader()
    persist(r)
    read_messages(r)
    r.step(msg(MT.MsgAppResp, 2, 1, term=r.term, index=index))
    assert r.raft_log.committed == wcommit
