"""Replication flow control (probe / replicate / snapshot, the in-flight window), fast backtracking with
reject hints, and snapshots sent to followers behind a compacted log."""

from __future__ import annotations

import pytest
from raft_harness import Network, ent, log_ents, msg, new_raft, read_messages, storage_with

from aiowal.raft import Inflights, MemoryStorage, Progress, ProgressState, StateType
from aiowal.raft.messages import MT, msg_from
from aiowal.raft.raft import Raft
from aiowal.raftpb import ConfState, Entry, HardState, Snapshot, SnapshotMetadata


def leader(peers: list[int], **kw: object) -> Raft:
    r = new_raft(1, peers, **kw)  # type: ignore[arg-type]
    r.become_candidate()
    r.become_leader()
    read_messages(r)
    return r


def propose(r: Raft, data: bytes = b"somedata") -> None:
    r.step(msg(MT.MsgProp, 1, 1, entries=[Entry(data=data)]))


# --- inflights and progress ----------------------------------------------------------------------------------
def test_inflights_window() -> None:
    w = Inflights(3)
    for i in (5, 7, 9):
        w.add(i)
    assert w.full()
    with pytest.raises(OverflowError):
        w.add(10)
    w.free_le(7)
    assert len(w) == 1 and not w.full()
    w.free_first_one()
    assert len(w) == 0
    w.free_first_one()
    assert len(w) == 0


@pytest.mark.parametrize(
    ("state", "match", "next_", "rejected", "hint", "wok", "wnext"),
    [
        (ProgressState.REPLICATE, 5, 10, 5, 5, False, 10),  # stale: rejected <= match
        (ProgressState.REPLICATE, 5, 10, 4, 4, False, 10),
        (ProgressState.REPLICATE, 5, 10, 9, 9, True, 6),  # back to match + 1
        (ProgressState.PROBE, 0, 0, 0, 0, False, 0),  # next - 1 != rejected: stale
        (ProgressState.PROBE, 0, 10, 5, 5, False, 10),
        (ProgressState.PROBE, 0, 10, 9, 9, True, 9),
        (ProgressState.PROBE, 0, 2, 1, 1, True, 1),
        (ProgressState.PROBE, 0, 1, 0, 0, True, 1),  # never below 1
        (ProgressState.PROBE, 0, 10, 9, 2, True, 3),  # the hint skips ahead
        (ProgressState.PROBE, 0, 10, 9, 0, True, 1),
    ],
)
def test_progress_maybe_decr_to(
    state: ProgressState, match: int, next_: int, rejected: int, hint: int, wok: bool, wnext: int
) -> None:
    pr = Progress(next_, 256)
    pr.state, pr.match = state, match
    pr.probe_sent = True
    assert pr.maybe_decr_to(rejected, hint) is wok
    assert pr.next == wnext
    if wok and state is ProgressState.PROBE:
        assert not pr.probe_sent


def test_probe_sends_one_message_until_acked() -> None:
    """In probe state only one MsgApp is in flight; a heartbeat response allows the next probe."""
    r = leader([1, 2])
    r.prs.progress[2].become_probe()
    for _ in range(3):
        propose(r)
    msgs = [m for m in read_messages(r) if m.to == 2 and m.type == MT.MsgApp]
    assert len(msgs) == 1
    assert r.prs.progress[2].probe_sent
    propose(r)
    assert read_messages(r) == []
    r.step(msg(MT.MsgHeartbeatResp, 2, 1, term=r.term))
    msgs = read_messages(r)
    assert [m.type for m in msgs] == [MT.MsgApp]


def test_replicate_state_window_is_bounded() -> None:
    """In replicate state the leader streams MsgApps optimistically, up to max_inflight unacknowledged."""
    r = leader([1, 2], max_inflight=3)
    pr = r.prs.progress[2]
    pr.match = 1
    pr.become_replicate()
    for i in range(6):
        propose(r, b"%d" % i)
    apps = [m for m in read_messages(r) if m.type == MT.MsgApp]
    assert len(apps) == 3
    assert pr.inflights.full()
    assert pr.is_paused()
    # Acknowledging the first frees one slot; the leader sends the rest in one message.
    r.step(msg(MT.MsgAppResp, 2, 1, term=r.term, index=apps[0].index + len(apps[0].entries)))
    more = [m for m in read_messages(r) if m.type == MT.MsgApp]
    assert len(more) == 1
    assert more[0].entries[-1].index == r.raft_log.last_index()


def test_heartbeat_response_frees_a_full_window() -> None:
    r = leader([1, 2], max_inflight=1)
    pr = r.prs.progress[2]
    pr.match = 1
    pr.become_replicate()
    propose(r)
    propose(r)
    assert len([m for m in read_messages(r) if m.type == MT.MsgApp]) == 1
    r.step(msg(MT.MsgHeartbeatResp, 2, 1, term=r.term))
    assert [m.type for m in read_messages(r)] == [MT.MsgApp]


def test_max_size_per_msg_splits_entries() -> None:
    r = leader([1, 2], max_size_per_msg=40)
    pr = r.prs.progress[2]
    pr.match = 1
    pr.become_replicate()
    r.prs.progress[2].inflights.size = 100
    for i in range(5):
        r._append_entry([Entry(data=b"x" * 30 + b"%d" % i)])
    r.bcast_append()
    (first,) = read_messages(r)
    assert [e.index for e in first.entries] == [2]
    # The acknowledgement lets the leader stream the rest, still one entry per message.
    r.step(msg(MT.MsgAppResp, 2, 1, term=r.term, index=2))
    apps = [m for m in read_messages(r) if m.type == MT.MsgApp]
    assert [[e.index for e in m.entries] for m in apps] == [[3], [4], [5], [6]]


def test_rejection_moves_replicate_to_probe() -> None:
    r = leader([1, 2])
    for _ in range(3):
        propose(r)
    pr = r.prs.progress[2]
    pr.match = 1
    pr.become_replicate()
    r.bcast_append()
    read_messages(r)
    r.step(msg(MT.MsgAppResp, 2, 1, term=r.term, index=4, reject=True, reject_hint=1, log_term=1))
    assert pr.state is ProgressState.PROBE
    (m,) = read_messages(r)
    assert (m.type, m.index) == (MT.MsgApp, 1)


# --- fast backtracking with reject hints ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("leader_terms", "follower_terms", "max_probes"),
    [
        # The follower holds a long run of a term the leader never saw: one rejection skips all of it.
        ([1, 1, 2, 2, 4, 4, 4, 4, 4, 4], [1, 1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3], 3),
        # The follower is far behind: the hint is its last index.
        ([1] * 4 + [2] * 30, [1] * 4, 2),
        # Both diverge after index 5 with many terms each.
        ([1] * 5 + [2, 3, 4, 5, 6, 7, 8, 9] * 3, [1] * 5 + [10] * 20, 3),
    ],
)
def test_reject_hint_backtracks_quickly(leader_terms: list[int], follower_terms: list[int], max_probes: int) -> None:
    """A follower's reject_hint and log_term let the leader find the match point in a few round trips."""
    lterm = max(leader_terms) + 1
    lead = new_raft(
        1,
        [1, 2],
        storage=storage_with(enumerate(leader_terms, start=1), HardState(term=lterm)),
    )
    foll = new_raft(
        2,
        [1, 2],
        storage=storage_with(enumerate(follower_terms, start=1), HardState(term=lterm)),
    )
    lead.become_candidate()
    lead.become_leader()
    read_messages(lead)
    lead.bcast_append()
    rejections = 0
    for _ in range(50):
        out = read_messages(lead)
        if not out:
            break
        for m in out:
            foll.step(m)
        for resp in read_messages(foll):
            rejections += resp.reject
            lead.step(resp)
    assert rejections <= max_probes
    assert log_ents(lead) == log_ents(foll)
    assert lead.prs.progress[2].state is ProgressState.REPLICATE


def test_leader_sync_follower_log_after_many_terms_in_a_network() -> None:
    """A follower with a long divergent log converges on the leader's in a lossless network."""
    lead_log = [(i, 1) for i in range(1, 4)] + [(i, 5) for i in range(4, 20)]
    foll_log = [(i, 1) for i in range(1, 4)] + [(i, t) for i, t in zip(range(4, 40), [2, 3, 4] * 12, strict=True)]
    a = new_raft(1, [1, 2, 3], storage=storage_with(lead_log, HardState(term=6)))
    b = new_raft(2, [1, 2, 3], storage=storage_with(foll_log, HardState(term=6)))
    c = new_raft(3, [1, 2, 3], storage=storage_with(lead_log, HardState(term=6)))
    net = Network(a, b, c)
    net.campaign(1)
    net.propose(1, b"after")
    assert log_ents(a) == log_ents(b) == log_ents(c)
    assert b.raft_log.committed == a.raft_log.last_index()


# --- snapshots -----------------------------------------------------------------------------------------------
def snapshot(index: int, term: int, voters: list[int]) -> Snapshot:
    return Snapshot(
        data=b"state", metadata=SnapshotMetadata(index=index, term=term, conf_state=ConfState(voters=voters))
    )


def compacted_leader(index: int = 11, term: int = 11) -> Raft:
    """A leader whose log starts after a snapshot at ``index``."""
    st = MemoryStorage()
    st.save(HardState(term=term, commit=index), (), snapshot(index, term, [1, 2]))
    r = new_raft(1, [], storage=st)
    r.become_candidate()
    r.become_leader()
    read_messages(r)
    return r


def test_leader_sends_snapshot_when_follower_needs_compacted_entries() -> None:
    r = compacted_leader()
    pr = r.prs.progress[2]
    # The follower answers the probe: it has nothing.
    r.step(msg(MT.MsgAppResp, 2, 1, term=r.term, index=11, reject=True, reject_hint=0, log_term=0))
    (m,) = read_messages(r)
    assert m.type == MT.MsgSnap
    assert (m.snapshot.metadata.index, m.snapshot.metadata.term) == (11, 11)
    assert pr.state is ProgressState.SNAPSHOT
    assert pr.pending_snapshot == 11
    # Replication to it is paused while the snapshot is in flight.
    propose(r)
    assert [x for x in read_messages(r) if x.to == 2] == []


def test_inactive_follower_gets_no_snapshot() -> None:
    r = compacted_leader()
    pr = r.prs.progress[2]
    pr.next = 5
    pr.recent_active = False
    r.bcast_append()
    assert read_messages(r) == []
    assert pr.state is ProgressState.PROBE


@pytest.mark.parametrize("failed", [False, True])
def test_snapshot_status(failed: bool) -> None:
    """After the transport reports the snapshot, the leader probes; a failure restarts from match + 1."""
    r = compacted_leader()
    pr = r.prs.progress[2]
    pr.recent_active = True
    pr.next = 1
    r.bcast_append()
    assert pr.state is ProgressState.SNAPSHOT
    read_messages(r)
    r.step(msg(MT.MsgSnapStatus, 2, 1, reject=failed))
    assert pr.state is ProgressState.PROBE
    assert pr.probe_sent
    assert pr.next == (1 if failed else 12)
    assert read_messages(r) == []
    # The next heartbeat response resumes the probe (with the snapshot again after a failure).
    r.step(msg(MT.MsgHeartbeatResp, 2, 1, term=r.term))
    (m,) = read_messages(r)
    assert m.type == (MT.MsgSnap if failed else MT.MsgApp)


def test_snapshot_ack_resumes_replication() -> None:
    r = compacted_leader()
    pr = r.prs.progress[2]
    pr.recent_active = True
    pr.next = 1
    r.bcast_append()
    read_messages(r)
    r.step(msg(MT.MsgAppResp, 2, 1, term=r.term, index=11))
    assert pr.state is ProgressState.REPLICATE
    assert pr.match == 11
    (m,) = read_messages(r)
    assert (m.type, m.index) == (MT.MsgApp, 11)


def test_follower_restores_snapshot() -> None:
    r = new_raft(2, [1, 2], storage=storage_with([(1, 1), (2, 1)]))
    s = snapshot(11, 11, [1, 2])
    r.step(snap_msg(s))
    assert r.raft_log.committed == 11
    assert r.raft_log.last_index() == 11
    assert r.raft_log.unstable.snapshot is not None
    assert r.raft_log.term(11) == 11
    assert r.prs.voters() == [1, 2]
    (m,) = read_messages(r)
    assert (m.type, m.index, m.reject) == (MT.MsgAppResp, 11, False)
    assert r.lead == 1


def snap_msg(s: Snapshot, term: int = 11) -> object:
    m = msg(MT.MsgSnap, 1, 2, term=term)
    m.snapshot.CopyFrom(s)
    return m


def test_follower_ignores_stale_snapshot() -> None:
    r = new_raft(2, [1, 2], storage=storage_with([(i, 1) for i in range(1, 6)], HardState(term=1, commit=5)))
    r.step(snap_msg(snapshot(3, 1, [1, 2]), term=1))  # type: ignore[arg-type]
    assert r.raft_log.unstable.snapshot is None
    (m,) = read_messages(r)
    assert (m.type, m.index) == (MT.MsgAppResp, 5)


def test_follower_with_snapshot_entry_fast_forwards_commit() -> None:
    r = new_raft(2, [1, 2], storage=storage_with([(i, 1) for i in range(1, 6)], HardState(term=1, commit=1)))
    r.step(snap_msg(snapshot(3, 1, [1, 2]), term=1))  # type: ignore[arg-type]
    assert r.raft_log.unstable.snapshot is None
    assert r.raft_log.committed == 3
    assert r.raft_log.last_index() == 5


def test_snapshot_catches_up_a_follower_in_a_network() -> None:
    """End to end: a follower that missed entries compacted on the leader receives the snapshot and then the tail."""
    st1 = MemoryStorage()
    net = Network(new_raft(1, [1, 2, 3], storage=st1), new_raft(2, [1, 2, 3]), new_raft(3, [1, 2, 3]))
    net.campaign(1)
    net.isolate(3)
    for i in range(10):
        net.propose(1, b"%d" % i)
    a = net.raft(1)
    assert st1.last_index() == 11  # the network saved everything
    st1.create_snapshot(8, a.conf_state(), b"snap")
    net.recover()
    c = net.raft(3)
    net.propose(1, b"tail")
    assert c.raft_log.storage.snapshot().metadata.index == 8
    assert c.raft_log.first_index() == 9
    assert c.raft_log.committed == a.raft_log.committed == 12
    assert log_ents(c)[-3:] == log_ents(a)[-3:]
    assert a.prs.progress[3].state in (ProgressState.SNAPSHOT, ProgressState.REPLICATE, ProgressState.PROBE)
    assert c.state is StateType.FOLLOWER


def test_entries_below_commit_ack_with_commit() -> None:
    """A MsgApp for an index below the follower's commit is answered with the commit index."""
    r = new_raft(2, [1, 2], storage=storage_with([(1, 1), (2, 1), (3, 1)], HardState(term=1, commit=3)))
    r.step(msg(MT.MsgApp, 1, 2, term=1, index=1, log_term=1, entries=[ent(2, 1)]))
    (m,) = read_messages(r)
    assert (m.type, m.index, m.reject, msg_from(m)) == (MT.MsgAppResp, 3, False, 2)


def test_unreachable_follower_drops_to_probe() -> None:
    r = leader([1, 2])
    pr = r.prs.progress[2]
    pr.match = 1
    pr.become_replicate()
    propose(r)
    propose(r)
    assert len(pr.inflights) == 2
    r.step(msg(MT.MsgUnreachable, 2, 1))
    assert pr.state is ProgressState.PROBE
    assert pr.next == 2
    assert len(pr.inflights) == 0
