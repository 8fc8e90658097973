"""The Raft state machine after etcd raft's raft.go: elections (pre-vote, check-quorum, leader lease), log
replication with flow control, snapshots, linearizable reads (read index), leader transfer and membership changes
(single-server and joint consensus)."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import random
from collections.abc import Callable, Sequence

from google.protobuf.message import DecodeError

from aiowal.errors import CompactedError, SnapshotTemporarilyUnavailableError
from aiowal.raft.log import RaftInvariantError, RaftLog
from aiowal.raft.membership import ConfChangeError, Membership, apply_change, as_v2
from aiowal.raft.messages import (
    CAMPAIGN_TRANSFER,
    FORWARDED_MSGS,
    MT,
    NONE,
    VOTE_MSGS,
    msg_from,
    new_message,
    vote_resp_type,
)
from aiowal.raft.progress import ProgressState
from aiowal.raft.quorum import VoteResult
from aiowal.raft.readonly import ReadOnly, ReadState
from aiowal.raft.storage import Storage
from aiowal.raft.tracker import ProgressTracker
from aiowal.raftpb import (
    ConfChange,
    ConfChangeV2,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
)


class StateType(enum.Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"
    PRE_CANDIDATE = "pre-candidate"


class ProposalDroppedError(Exception):
    """etcd ErrProposalDropped: the proposal was ignored (no leader known, or this node is not in the group)."""

    def __init__(self, message: str = "raft proposal dropped") -> None:
        super().__init__(message)


class ConfChangeRefusedError(ProposalDroppedError):
    """The leader refused a configuration change proposed on it: another one is not applied yet, the change does
    not fit the current configuration (e.g. a simple change while joint, leaving a configuration that is not joint,
    removing every voter), or its data does not decode. A change forwarded from a follower is refused the same way
    but silently, as etcd does: the leader logs an empty entry in its place."""


CONF_CHANGE_TYPES = (EntryType.EntryConfChange, EntryType.EntryConfChangeV2)


def decode_conf_change(e: Entry) -> ConfChange | ConfChangeV2:
    """The configuration change an EntryConfChange or EntryConfChangeV2 entry holds (empty data: leave joint)."""
    if e.type == EntryType.EntryConfChange:
        return ConfChange.FromString(e.data)
    if e.type == EntryType.EntryConfChangeV2:
        return ConfChangeV2.FromString(e.data)
    raise ValueError(f"entry {e.index} is not a configuration change")


@dataclasses.dataclass
class Config:
    """How a node behaves; ``rng`` makes the randomized election timeouts reproducible."""

    id: int
    storage: Storage
    rng: random.Random
    voters: Sequence[int] = ()
    learners: Sequence[int] = ()
    election_tick: int = 10
    heartbeat_tick: int = 1
    applied: int = 0
    max_size_per_msg: int | None = 1 << 20
    max_committed_size_per_ready: int | None = None
    max_inflight_msgs: int = 256
    check_quorum: bool = False
    pre_vote: bool = False

    def validate(self) -> None:
        if self.id == NONE:
            raise ValueError("cannot use 0 as a node id")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election tick must be greater than heartbeat tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max inflight messages must be greater than 0")


class Raft:
    """One node's Raft state. Drive it with ``step`` and ``tick``; collect output from ``msgs`` and ``raft_log``."""

    def __init__(self, config: Config) -> None:
        config.validate()
        self.id = config.id
        self.rng = config.rng
        self.raft_log = RaftLog(config.storage, config.max_committed_size_per_ready)
        hs, cs = config.storage.initial_state()
        if cs.voters or cs.learners or cs.voters_outgoing or cs.learners_next:
            if config.voters or config.learners:
                raise ValueError("cannot pass voters or learners when restarting from a storage with a ConfState")
            membership = Membership.from_conf_state(cs)
        else:
            membership = Membership.of(config.voters, config.learners)
        self.max_msg_size = config.max_size_per_msg
        self.prs = ProgressTracker(config.max_inflight_msgs)
        self.prs.set_membership(membership, self.raft_log.last_index() + 1)
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.state = StateType.FOLLOWER
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.read_only = ReadOnly()
        self.pending_read_index_msgs: list[Message] = []
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.leaving_index = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.check_quorum = config.check_quorum
        self.pre_vote = config.pre_vote
        self.election_timeout = config.election_tick
        self.heartbeat_timeout = config.heartbeat_tick
        self.randomized_election_timeout = config.election_tick
        self._tick: Callable[[], None] = self._tick_election
        self._step: Callable[[Message], None] = self._step_follower
        if hs.term or hs.vote or hs.commit:
            self._load_state(hs)
        if config.applied:
            self.raft_log.applied_to(config.applied)
        self.become_follower(self.term, NONE)

    def __repr__(self) -> str:
        return f"Raft(id={self.id}, term={self.term}, state={self.state.value}, lead={self.lead}, {self.raft_log})"

    # --- state -----------------------------------------------------------------------------------------------
    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.raft_log.committed)

    def conf_state(self) -> ConfState:
        """The configuration in force: the one of the last change applied (or of the snapshot restored)."""
        return self.prs.conf_state()

    def _load_state(self, hs: HardState) -> None:
        if hs.commit < self.raft_log.committed or hs.commit > self.raft_log.last_index():
            raise RaftInvariantError(
                f"hard state commit {hs.commit} is out of range "
                f"[{self.raft_log.committed}, {self.raft_log.last_index()}]"
            )
        self.raft_log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    def promotable(self) -> bool:
        pr = self.prs.progress.get(self.id)
        return pr is not None and not pr.is_learner and not self.raft_log.unstable.snapshot

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(self.election_timeout)
        self.prs.reset_votes()
        self.prs.reset_progress(self.raft_log.last_index(), self.id, self._stable_last_index())
        self.lead_transferee = NONE
        self.read_only = ReadOnly()
        self.pending_read_index_msgs = []
        self.pending_conf_index = 0
        self.leaving_index = 0

    def become_follower(self, term: int, lead: int) -> None:
        self._step = self._step_follower
        self._reset(term)
        self._tick = self._tick_election
        self.lead = lead
        self.state = StateType.FOLLOWER

    def become_candidate(self) -> None:
        if self.state is StateType.LEADER:
            raise RaftInvariantError("invalid transition [leader -> candidate]")
        self._step = self._step_candidate
        self._reset(self.term + 1)
        self._tick = self._tick_election
        self.vote = self.id
        self.state = StateType.CANDIDATE

    def become_pre_candidate(self) -> None:
        if self.state is StateType.LEADER:
            raise RaftInvariantError("invalid transition [leader -> pre-candidate]")
        # Pre-candidates change neither the term nor the vote.
        self._step = self._step_candidate
        self.prs.reset_votes()
        self._tick = self._tick_election
        self.lead = NONE
        self.state = StateType.PRE_CANDIDATE

    def become_leader(self) -> None:
        if self.state is StateType.FOLLOWER:
            raise RaftInvariantError("invalid transition [follower -> leader]")
        self._step = self._step_leader
        self._reset(self.term)
        self._tick = self._tick_heartbeat
        self.lead = self.id
        self.state = StateType.LEADER
        self.prs.progress[self.id].become_replicate()
        # Entries up to here may hold a configuration change not yet applied: allow no new one before they are.
        self.pending_conf_index = self.raft_log.last_index()
        self.leaving_index = self._unapplied_self_removal()
        # An empty entry of the new term lets the leader commit the entries of earlier terms.
        self._append_entry([Entry()])
        self._maybe_auto_leave(broadcast=False)  # the caller broadcasts the new term's entries

    # --- persistence ---------------------------------------------------------------------------------------------
    def _stable_last_index(self) -> int:
        """The last index of the entries known saved (everything below the unstable ones)."""
        return min(self.raft_log.unstable.offset - 1, self.raft_log.last_index())

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` (of ``term``) are saved; a leader now counts them as replicated on itself."""
        self.raft_log.stable_to(index, term)
        if self.state is not StateType.LEADER:
            return
        pr = self.prs.progress.get(self.id)
        if pr is not None and pr.maybe_update(self._stable_last_index()) and self._maybe_commit():
            self._release_pending_read_index()
            self.bcast_append()

    # --- ticking ---------------------------------------------------------------------------------------------
    def tick(self) -> None:
        self._tick()

    def _past_election_timeout(self) -> bool:
        return self.election_elapsed >= self.randomized_election_timeout

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self._past_election_timeout():
            self.election_elapsed = 0
            self.step(new_message(MT.MsgHup, NONE, self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(new_message(MT.MsgCheckQuorum, NONE, self.id))
            if self.state is StateType.LEADER and self.lead_transferee != NONE:
                # The transferee did not take over within an election timeout: resume proposals.
                self.lead_transferee = NONE
                self._maybe_auto_leave()
        if self.state is not StateType.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(new_message(MT.MsgBeat, NONE, self.id))

    # --- sending ---------------------------------------------------------------------------------------------
    def _send(self, m: Message) -> None:
        if m.type not in FORWARDED_MSGS:
            setattr(m, "from", self.id)
        if m.type in VOTE_MSGS:
            if m.term == 0:
                raise RaftInvariantError(f"term should be set when sending {MessageType.Name(m.type)}")
        elif m.type in (MT.MsgProp, MT.MsgReadIndex):
            pass  # forwarded to the leader without a term, like local messages
        else:
            m.term = self.term
        self.msgs.append(m)

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        pr = self.prs.progress[to]
        if pr.is_paused():
            return False
        term = self.raft_log.term(pr.next - 1)
        ents = None
        if term is not None:
            try:
                ents = self.raft_log.entries(pr.next, self.max_msg_size)
            except CompactedError:
                ents = None
        if term is not None and ents is not None:
            if not ents and not send_if_empty:
                return False
            m = new_message(MT.MsgApp, to, self.id, index=pr.next - 1, log_term=term, commit=self.raft_log.committed)
            m.entries.extend(ents)
            if ents:
                last = ents[-1].index
                if pr.state is ProgressState.REPLICATE:
                    pr.optimistic_update(last)
                    pr.inflights.add(last)
                elif pr.state is ProgressState.PROBE:
                    pr.probe_sent = True
            self._send(m)
            return True
        # The entries the follower needs are compacted away: send the snapshot instead.
        if not pr.recent_active:
            return False
        try:
            snap = self.raft_log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        if snap.metadata.index == 0:
            raise RaftInvariantError("need a non-empty snapshot")
        pr.become_snapshot(snap.metadata.index)
        m = new_message(MT.MsgSnap, to, self.id)
        m.snapshot.CopyFrom(snap)
        self._send(m)
        return True

    def _send_heartbeat(self, to: int, ctx: bytes = b"") -> None:
        commit = min(self.prs.progress[to].match, self.raft_log.committed)
        self._send(new_message(MT.MsgHeartbeat, to, self.id, commit=commit, context=ctx))

    def _send_timeout_now(self, to: int) -> None:
        self._send(new_message(MT.MsgTimeoutNow, to, self.id))

    def bcast_append(self) -> None:
        for id_ in self.prs.progress:
            if id_ != self.id:
                self._send_append(id_)

    def bcast_heartbeat(self, ctx: bytes | None = None) -> None:
        if ctx is None:
            ctx = self.read_only.last_pending_ctx()
        for id_ in self.prs.progress:
            if id_ != self.id:
                self._send_heartbeat(id_, ctx)

    # --- leader helpers --------------------------------------------------------------------------------------
    def _maybe_commit(self) -> bool:
        return self.raft_log.maybe_commit(self.prs.committed(), self.term)

    def _append_entry(self, ents: Sequence[Entry]) -> None:
        li = self.raft_log.last_index()
        # Fresh entries: the proposal's own may be shared with a message that is delivered again.
        fresh = [Entry(term=self.term, index=li + 1 + i, type=e.type, data=e.data) for i, e in enumerate(ents)]
        self.raft_log.append(fresh)
        # The leader's own copy counts towards the quorum only once saved (``stable_to``): it may send entries
        # to its followers before it has saved them itself.

    # --- elections -------------------------------------------------------------------------------------------
    def _hup(self, pre_election: bool, transfer: bool = False) -> None:
        if self.state is StateType.LEADER or not self.promotable():
            return
        log = self.raft_log
        if log.committed > log.applied:
            unapplied = log.slice(max(log.applied + 1, log.first_index()), log.committed + 1, None)
            if any(e.type in CONF_CHANGE_TYPES for e in unapplied):
                # The configuration to campaign in is not known until those entries are applied.
                return
        self._campaign(pre_election, transfer)

    def _campaign(self, pre_election: bool, transfer: bool = False) -> None:
        if pre_election:
            self.become_pre_candidate()
            vote_msg, term = MT.MsgPreVote, self.term + 1
        else:
            self.become_candidate()
            vote_msg, term = MT.MsgVote, self.term
        if self._poll(self.id, True) is VoteResult.WON:
            # A group whose only voter is this node wins at once (and may have learners to catch up).
            if pre_election:
                self._campaign(False)
            else:
                self.become_leader()
                self.bcast_append()
            return
        last_index, last_term = self.raft_log.last_index(), self.raft_log.last_term()
        for id_ in self.prs.voter_ids():
            if id_ == self.id:
                continue
            ctx = CAMPAIGN_TRANSFER if transfer else b""
            self._send(
                new_message(vote_msg, id_, self.id, term=term, index=last_index, log_term=last_term, context=ctx)
            )

    def _poll(self, id_: int, granted: bool) -> VoteResult:
        self.prs.record_vote(id_, granted)
        return self.prs.tally_votes()[2]

    # --- stepping --------------------------------------------------------------------------------------------
    def step(self, m: Message) -> None:
        """Handle one message: a local one (term 0) or one from a peer."""
        frm = msg_from(m)
        if m.term == 0:
            pass
        elif m.term > self.term:
            if m.type in (MT.MsgVote, MT.MsgPreVote):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = self.check_quorum and self.lead != NONE and self.election_elapsed < self.election_timeout
                if in_lease and not force:
                    # A leader is known and was heard from recently: ignore the disruptive vote request.
                    return
            if m.type == MT.MsgPreVote:
                pass  # never change our term in response to a pre-vote
            elif m.type == MT.MsgPreVoteResp and not m.reject:
                pass  # the term is bumped when the pre-vote quorum is reached
            elif m.type in (MT.MsgApp, MT.MsgHeartbeat, MT.MsgSnap):
                self.become_follower(m.term, frm)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and m.type in (MT.MsgHeartbeat, MT.MsgApp):
                # A leader cut off from the group: tell it about the newer term so that it steps down.
                self._send(new_message(MT.MsgAppResp, frm, self.id))
            elif m.type == MT.MsgPreVote:
                self._send(new_message(MT.MsgPreVoteResp, frm, self.id, term=self.term, reject=True))
            return

        if m.type == MT.MsgHup:
            self._hup(self.pre_vote)
        elif m.type in (MT.MsgVote, MT.MsgPreVote):
            can_vote = (
                self.vote == frm
                or (self.vote == NONE and self.lead == NONE)
                or (m.type == MT.MsgPreVote and m.term > self.term)
            )
            if can_vote and self.raft_log.is_up_to_date(m.index, m.log_term):
                self._send(new_message(vote_resp_type(m.type), frm, self.id, term=m.term))
                if m.type == MT.MsgVote:
                    self.election_elapsed = 0
                    self.vote = frm
            else:
                self._send(new_message(vote_resp_type(m.type), frm, self.id, term=self.term, reject=True))
        else:
            self._step(m)

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.MsgBeat:
            self.bcast_heartbeat()
            return
        if t == MT.MsgCheckQuorum:
            if not self.prs.quorum_active(self.id):
                self.become_follower(self.term, NONE)
            for id_, pr in self.prs.progress.items():
                if id_ != self.id:
                    pr.recent_active = False
            return
        if t == MT.MsgProp:
            if not m.entries:
                raise RaftInvariantError("stepped empty MsgProp")
            if self.id not in self.prs.progress:
                raise ProposalDroppedError("this node is not in the group")
            if self.lead_transferee != NONE:
                raise ProposalDroppedError("leadership is being transferred")
            if self.leaving_index > self.raft_log.applied:
                # Entries after the change that takes this leader's vote away could reach only part of the nodes:
                # those of the new configuration that lack them could then not be elected (their logs would be
                # behind), and the nodes that hold them do not campaign once the change removes them.
                raise ProposalDroppedError("this leader is leaving the configuration")
            ents = list(m.entries)
            pending_before = self.pending_conf_index
            for i, e in enumerate(ents):
                if e.type not in CONF_CHANGE_TYPES:
                    continue
                refusal, after = self._check_conf_change(e)
                if after is not None:
                    self.pending_conf_index = self.raft_log.last_index() + i + 1
                    if self.id not in after.voter_ids():
                        self.leaving_index = self.pending_conf_index
                elif msg_from(m) in (NONE, self.id):
                    # Proposed here: refuse the whole proposal, so that the caller knows.
                    self.pending_conf_index = pending_before
                    raise ConfChangeRefusedError(str(refusal))
                else:
                    # Forwarded from a follower, which cannot be told: log an empty entry instead (etcd's way).
                    ents[i] = Entry()
            self._append_entry(ents)
            self.bcast_append()
            return
        if t == MT.MsgReadIndex:
            if not self._committed_entry_in_current_term():
                # The commit index of a new leader may lag (even a lone voter's: it counts its own entries once
                # saved): answer once an entry of its term is committed.
                self.pending_read_index_msgs.append(m)
            else:
                self._start_read_index(m)  # a lone voter answers at once: its own ack is the quorum
            return

        frm = msg_from(m)
        found = self.prs.progress.get(frm)
        if found is None:
            return
        pr = found
        if t == MT.MsgAppResp:
            pr.recent_active = True
            if m.reject:
                next_probe = m.reject_hint
                if m.log_term > 0:
                    next_probe, _ = self.raft_log.find_conflict_by_term(m.reject_hint, m.log_term)
                if pr.maybe_decr_to(m.index, next_probe):
                    if pr.state is ProgressState.REPLICATE:
                        pr.become_probe()
                    self._send_append(frm)
                return
            old_paused = pr.is_paused()
            if pr.maybe_update(m.index):
                if pr.state is ProgressState.PROBE:
                    pr.become_replicate()
                elif pr.state is ProgressState.SNAPSHOT and pr.match + 1 >= self.raft_log.first_index():
                    # The follower can be caught up from the log now, whatever snapshot got it there.
                    pr.become_probe()
                    pr.become_replicate()
                elif pr.state is ProgressState.REPLICATE:
                    pr.inflights.free_le(m.index)
                if self._maybe_commit():
                    self._release_pending_read_index()
                    self.bcast_append()
                elif old_paused:
                    self._send_append(frm)
                while self._send_append(frm, send_if_empty=False):
                    pass
                if frm == self.lead_transferee and pr.match == self.raft_log.last_index():
                    self._send_timeout_now(frm)
        elif t == MT.MsgHeartbeatResp:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self.raft_log.last_index():
                self._send_append(frm)
            if m.context:
                acks = self.read_only.recv_ack(frm, m.context)
                if acks is not None and self.prs.has_quorum(acks):
                    for rs in self.read_only.advance(m.context):
                        self._respond_read_index(rs.req, rs.index)
        elif t == MT.MsgSnapStatus:
            if pr.state is not ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            # Wait for a MsgAppResp or a heartbeat response before probing again.
            pr.probe_sent = True
        elif t == MT.MsgUnreachable and pr.state is ProgressState.REPLICATE:
            pr.become_probe()
        elif t == MT.MsgTransferLeader:
            self._transfer_leader(frm, pr.is_learner)

    def _transfer_leader(self, transferee: int, is_learner: bool) -> None:
        if is_learner or transferee == self.lead_transferee:
            return
        self.lead_transferee = NONE
        if transferee == self.id:
            return
        # The transfer must finish within an election timeout, or it is aborted.
        self.election_elapsed = 0
        self.lead_transferee = transferee
        if self.prs.progress[transferee].match == self.raft_log.last_index():
            self._send_timeout_now(transferee)
        else:
            self._send_append(transferee)

    # --- read index ------------------------------------------------------------------------------------------
    def _committed_entry_in_current_term(self) -> bool:
        return self.raft_log.term(self.raft_log.committed) == self.term

    def _start_read_index(self, m: Message) -> None:
        ctx = m.entries[0].data
        self.read_only.add_request(self.raft_log.committed, m)
        acks = self.read_only.recv_ack(self.id, ctx)
        if acks is not None and self.prs.has_quorum(acks):
            # This node alone is a quorum (e.g. the joint configuration {self} && {self}): nobody else must confirm.
            for rs in self.read_only.advance(ctx):
                self._respond_read_index(rs.req, rs.index)
            return
        self.bcast_heartbeat(ctx)

    def _release_pending_read_index(self) -> None:
        if not self.pending_read_index_msgs or not self._committed_entry_in_current_term():
            return
        pending, self.pending_read_index_msgs = self.pending_read_index_msgs, []
        for m in pending:
            self._start_read_index(m)

    def _respond_read_index(self, req: Message, index: int) -> None:
        frm = msg_from(req)
        if frm in (NONE, self.id):
            self.read_states.append(ReadState(index, req.entries[0].data))
        else:
            self._send(new_message(MT.MsgReadIndexResp, frm, self.id, index=index, entries=list(req.entries)))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        frm = msg_from(m)
        my_resp = MT.MsgPreVoteResp if self.state is StateType.PRE_CANDIDATE else MT.MsgVoteResp
        if t == MT.MsgProp:
            raise ProposalDroppedError("no leader")
        if t == MT.MsgApp:
            self.become_follower(m.term, frm)
            self._handle_append_entries(m)
        elif t == MT.MsgHeartbeat:
            self.become_follower(m.term, frm)
            self._handle_heartbeat(m)
        elif t == MT.MsgSnap:
            self.become_follower(m.term, frm)
            self._handle_snapshot(m)
        elif t == my_resp:
            result = self._poll(frm, not m.reject)
            if result is VoteResult.WON:
                if self.state is StateType.PRE_CANDIDATE:
                    self._campaign(False)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif result is VoteResult.LOST:
                # A pre-vote response with a higher term has stepped us down already (in ``step``).
                self.become_follower(self.term, NONE)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.MsgProp:
            if self.lead == NONE:
                raise ProposalDroppedError("no leader")
            m.to = self.lead
            self._send(m)
        elif t == MT.MsgApp:
            self.election_elapsed = 0
            self.lead = msg_from(m)
            self._handle_append_entries(m)
        elif t == MT.MsgHeartbeat:
            self.election_elapsed = 0
            self.lead = msg_from(m)
            self._handle_heartbeat(m)
        elif t == MT.MsgSnap:
            self.election_elapsed = 0
            self.lead = msg_from(m)
            self._handle_snapshot(m)
        elif t in (MT.MsgReadIndex, MT.MsgTransferLeader):
            if self.lead == NONE:
                if t == MT.MsgReadIndex:
                    raise ProposalDroppedError("no leader to serve the read index")
                return
            m.to = self.lead
            self._send(m)
        elif t == MT.MsgReadIndexResp:
            if len(m.entries) == 1:
                self.read_states.append(ReadState(m.index, m.entries[0].data))
        elif t == MT.MsgTimeoutNow:
            # The leader hands over: campaign at once, skipping pre-vote, and past the followers' lease.
            self._hup(False, transfer=True)

    # --- follower handlers -----------------------------------------------------------------------------------
    def _handle_append_entries(self, m: Message) -> None:
        frm = msg_from(m)
        if m.index < self.raft_log.committed:
            self._send(new_message(MT.MsgAppResp, frm, self.id, index=self.raft_log.committed))
            return
        last_new = self.raft_log.maybe_append(m.index, m.log_term, m.commit, list(m.entries))
        if last_new is not None:
            self._send(new_message(MT.MsgAppResp, frm, self.id, index=last_new))
            return
        # Reject, with a hint that lets the leader skip a whole term of mismatching entries at once.
        hint_index = min(m.index, self.raft_log.last_index())
        hint_index, hint_term = self.raft_log.find_conflict_by_term(hint_index, m.log_term)
        self._send(
            new_message(
                MT.MsgAppResp, frm, self.id, index=m.index, reject=True, reject_hint=hint_index, log_term=hint_term
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.raft_log.commit_to(m.commit)
        self._send(new_message(MT.MsgHeartbeatResp, msg_from(m), self.id, context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        frm = msg_from(m)
        if self._restore(m.snapshot):
            self._send(new_message(MT.MsgAppResp, frm, self.id, index=self.raft_log.last_index()))
        else:
            self._send(new_message(MT.MsgAppResp, frm, self.id, index=self.raft_log.committed))

    def _restore(self, s: Snapshot) -> bool:
        """Install ``s`` unless it is stale (at or below our commit) or we already have its last entry."""
        meta = s.metadata
        if meta.index <= self.raft_log.committed:
            return False
        if self.state is not StateType.FOLLOWER:
            raise RaftInvariantError("a non-follower cannot restore a snapshot")
        cs = meta.conf_state
        # A snapshot from before this node joined is installed too: the entries after it hold the change that
        # adds this node, and until that is applied the node is not promotable.
        if self.raft_log.match_term(meta.index, meta.term):
            # We have the snapshot's last entry: fast-forward the commit index instead.
            self.raft_log.commit_to(meta.index)
            return False
        snap = Snapshot()
        snap.CopyFrom(s)
        self.raft_log.restore(snap)
        self.prs.set_membership(Membership.from_conf_state(cs), self.raft_log.last_index() + 1)
        self.prs.reset_progress(self.raft_log.last_index(), self.id, self.raft_log.last_index())
        return True

    # --- membership --------------------------------------------------------------------------------------------
    def _check_conf_change(self, e: Entry) -> tuple[str, None] | tuple[None, Membership]:
        """(why not, None) if the leader will not log the configuration change in ``e`` now, or (None, the
        configuration it leads to)."""
        applied, pending = self.raft_log.applied, self.pending_conf_index
        if pending > applied:
            return f"the configuration change at index {pending} is not applied yet (applied {applied})", None
        try:
            cc = decode_conf_change(e)
        except DecodeError as exc:
            return f"undecodable configuration change: {exc}", None
        wants_leave = not as_v2(cc).changes
        if self.prs.is_joint() and not wants_leave:
            return "the configuration is joint: leave it first", None
        if not self.prs.is_joint() and wants_leave:
            return "the configuration is not joint: nothing to leave", None
        try:
            return None, apply_change(self.prs.membership, cc)
        except ConfChangeError as exc:
            return str(exc), None

    def _unapplied_self_removal(self) -> int:
        """The index of the last unapplied configuration change in the log if, once the unapplied changes are
        applied, this node is no longer a voter; else 0."""
        log = self.raft_log
        m, last_change = self.prs.membership, 0
        for e in log.slice(log.applied + 1, log.last_index() + 1, None):
            if e.type in CONF_CHANGE_TYPES:
                with contextlib.suppress(ConfChangeError, DecodeError):
                    m = apply_change(m, decode_conf_change(e))
                last_change = e.index
        return last_change if last_change and self.id not in m.voter_ids() else 0

    def apply_conf_change(self, cc: ConfChange | ConfChangeV2) -> ConfState:
        """Apply a committed configuration change and return the configuration now in force. Raises ConfChangeError
        (and changes nothing) if it does not fit the current configuration, which a change the leader accepted
        always does; every node would refuse it alike."""
        m = apply_change(self.prs.membership, cc)
        self.prs.set_membership(m, max(self.raft_log.last_index(), 1))
        if self.state is StateType.LEADER:
            pr = self.prs.progress.get(self.id)
            if pr is None or pr.is_learner:
                # Removed or demoted: stop leading. The remaining voters elect a leader among themselves, which
                # commits this change if they have not learnt of its commit yet.
                self.become_follower(self.term, NONE)
            else:
                if self._maybe_commit():
                    self.bcast_append()
                else:
                    for id_ in self.prs.progress:
                        if id_ != self.id:
                            self._send_append(id_, send_if_empty=False)
                if self.lead_transferee != NONE and self.lead_transferee not in m.voter_ids():
                    self.lead_transferee = NONE
        return self.conf_state()

    def applied_to(self, index: int) -> None:
        """The application has applied the entries up to ``index``."""
        self.raft_log.applied_to(index)
        self._maybe_auto_leave()

    def _maybe_auto_leave(self, broadcast: bool = True) -> None:
        """A leader whose joint configuration is to be left automatically proposes the leave (an empty
        ConfChangeV2) once the change that entered it is applied."""
        if (
            self.state is StateType.LEADER
            and self.prs.membership.auto_leave
            and self.raft_log.applied >= self.pending_conf_index
            and self.lead_transferee == NONE
        ):
            self.pending_conf_index = self.raft_log.last_index() + 1
            if self.id not in self.prs.membership.voters:
                self.leaving_index = self.pending_conf_index
            self._append_entry([Entry(type=EntryType.EntryConfChangeV2)])
            if broadcast:
                self.bcast_append()
