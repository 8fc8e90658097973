"""RawNode: the thread-unsafe, I/O-free handle on a Raft node, in the shape of etcd raft's RawNode."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from aiowal.raft.messages import MT, NONE, is_local_msg, new_message
from aiowal.raft.raft import Config, ProposalDroppedError, Raft, StateType
from aiowal.raft.readonly import ReadState
from aiowal.raft.status import Status
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


@dataclasses.dataclass(frozen=True)
class SoftState:
    """Volatile state that need not be saved: the known leader and this node's role."""

    lead: int
    raft_state: StateType


@dataclasses.dataclass
class Ready:
    """Everything to handle, in this order: save ``hard_state``, ``entries`` and ``snapshot`` (with a sync when
    ``must_sync``), send ``messages``, apply ``snapshot`` then ``committed_entries``; then call ``advance``.
    ``read_states`` are reads confirmed linearizable, to serve once their index is applied. A leader may send
    ``messages`` before its save completes (followers must save first); the node may keep stepping messages
    meanwhile, but not call ``ready`` again before ``advance``. After sending a MsgSnap, report the outcome with
    ``report_snapshot``: replication to that follower is paused until then."""

    hard_state: HardState | None
    entries: list[Entry]
    snapshot: Snapshot | None
    messages: list[Message]
    committed_entries: list[Entry]
    must_sync: bool
    soft_state: SoftState | None = None
    read_states: list[ReadState] = dataclasses.field(default_factory=list)

    def applied_cursor(self) -> int:
        if self.committed_entries:
            return self.committed_entries[-1].index
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return 0


class RawNode:
    """Drive with ``tick``/``step``/``propose``/``campaign``; then: if ``has_ready()``, handle ``ready()`` and
    ``advance`` it."""

    def __init__(self, config: Config) -> None:
        self.raft = Raft(config)
        self._prev_soft = self.soft_state()
        self._prev_hard = self.raft.hard_state()

    # --- input -----------------------------------------------------------------------------------------------
    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (a pre-vote first when pre-vote is on)."""
        self.raft.step(new_message(MT.MsgHup, NONE, self.raft.id))

    def propose(self, data: bytes) -> None:
        """Propose ``data`` for the log; raises ProposalDroppedError when it cannot be, at least for now."""
        m = new_message(MT.MsgProp, NONE, self.raft.id, entries=[Entry(data=data)])
        self.raft.step(m)

    def propose_many(self, data: Sequence[bytes]) -> None:
        """Propose several payloads at once, in order: one MsgProp, so a leader sends them to each follower in one
        MsgApp rather than one message per proposal. Raises ProposalDroppedError like ``propose`` (for all)."""
        if not data:
            return
        m = new_message(MT.MsgProp, NONE, self.raft.id, entries=[Entry(data=d) for d in data])
        self.raft.step(m)

    def propose_conf_change(self, cc: ConfChange | ConfChangeV2) -> None:
        """Propose a membership change: a single-server ``ConfChange`` (an EntryConfChange entry) or a
        ``ConfChangeV2`` (an EntryConfChangeV2 entry: several changes through a joint configuration, or the empty
        change that leaves one). Once its entry is committed, call ``apply_conf_change``. On the leader a change
        that cannot be taken now raises ConfChangeRefusedError; a follower forwards it to the leader, which logs
        an empty entry in its place."""
        t = EntryType.EntryConfChangeV2 if isinstance(cc, ConfChangeV2) else EntryType.EntryConfChange
        m = new_message(MT.MsgProp, NONE, self.raft.id, entries=[Entry(type=t, data=cc.SerializeToString())])
        self.raft.step(m)

    def apply_conf_change(self, cc: ConfChange | ConfChangeV2) -> ConfState:
        """Apply a committed configuration change (in log order, as part of applying committed entries) and return
        the configuration now in force, to keep with the state machine for its snapshots."""
        return self.raft.apply_conf_change(cc)

    def conf_state(self) -> ConfState:
        """The configuration in force (voters, learners and, while joint, voters_outgoing and learners_next)."""
        return self.raft.conf_state()

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read: a ``ReadState`` with ``ctx`` comes back in a later Ready; serve the read
        once the state machine has applied its index. Raises ProposalDroppedError when no leader is known."""
        m = new_message(MT.MsgReadIndex, NONE, self.raft.id, entries=[Entry(data=ctx)])
        self.raft.step(m)

    def transfer_leader(self, transferee: int) -> None:
        """Ask the leader (call this on the leader) to hand leadership over to ``transferee``."""
        self.raft.step(new_message(MT.MsgTransferLeader, NONE, transferee))

    def step(self, m: Message) -> None:
        """Handle a message from a peer. Local message types and messages from unknown peers are refused."""
        if is_local_msg(m.type):
            raise ValueError(f"cannot step a local message {MessageType.Name(m.type)}")
        frm: int = getattr(m, "from")
        if frm not in self.raft.prs.progress and m.type in (MT.MsgAppResp, MT.MsgHeartbeatResp):
            return
        self.raft.step(m)

    def report_unreachable(self, id_: int) -> None:
        """The transport failed to reach ``id_``: stop streaming to it optimistically."""
        self.raft.step(new_message(MT.MsgUnreachable, NONE, id_))

    def report_snapshot(self, id_: int, *, failed: bool) -> None:
        """The transport finished (or failed) sending a MsgSnap to ``id_``."""
        self.raft.step(new_message(MT.MsgSnapStatus, NONE, id_, reject=failed))

    # --- output ----------------------------------------------------------------------------------------------
    def take_leader_messages(self) -> list[Message]:
        """A leader's pending messages, to send now rather than with the next Ready (empty unless this node is the
        leader). A leader may send before it has saved what it sends (its own copy counts towards a quorum only
        once ``advance`` reports it saved), so it need not wait for the save of the Ready in hand: call this while
        that save is in flight to start the followers' appends (and their syncs) right away. The messages of any
        other role must wait for the save, as they may acknowledge state not yet durable."""
        r = self.raft
        if r.state is not StateType.LEADER or not r.msgs:
            return []
        msgs, r.msgs = r.msgs, []
        return msgs

    def soft_state(self) -> SoftState:
        return SoftState(self.raft.lead, self.raft.state)

    def has_ready(self) -> bool:
        r = self.raft
        log = r.raft_log
        if r.msgs or r.read_states or log.unstable.entries or log.unstable.snapshot is not None or log.has_next_ents():
            return True
        prev_soft, prev_hard = self._prev_soft, self._prev_hard
        if r.lead != prev_soft.lead or r.state is not prev_soft.raft_state:
            return True
        return r.term != prev_hard.term or r.vote != prev_hard.vote or log.committed != prev_hard.commit

    def ready(self) -> Ready:
        """What to save, send and apply now. Call ``advance(rd)`` once it is handled, before the next ``ready``."""
        r = self.raft
        log = r.raft_log
        soft = self.soft_state()
        hs = r.hard_state()
        hard_state = hs if hs != self._prev_hard else None
        entries = log.unstable_entries()
        must_sync = bool(entries) or (hs.term != self._prev_hard.term or hs.vote != self._prev_hard.vote)
        rd = Ready(
            hard_state=hard_state,
            entries=entries,
            snapshot=log.unstable.snapshot,
            messages=r.msgs,
            committed_entries=log.next_ents(),
            must_sync=must_sync,
            soft_state=soft if soft != self._prev_soft else None,
            read_states=r.read_states,
        )
        if rd.snapshot is not None:
            rd.must_sync = True
        r.msgs = []
        r.read_states = []
        self._prev_soft = soft
        return rd

    def advance(self, rd: Ready) -> None:
        """Tell the node that ``rd`` was saved and applied."""
        r = self.raft
        log = r.raft_log
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        applied = rd.applied_cursor()
        if applied:
            r.applied_to(applied)
        if rd.entries:
            e = rd.entries[-1]
            r.stable_to(e.index, e.term)
        if rd.snapshot is not None:
            log.stable_snap_to(rd.snapshot.metadata.index)

    # --- introspection ---------------------------------------------------------------------------------------
    @property
    def id(self) -> int:
        return self.raft.id

    def status(self) -> Status:
        """Role, term, indexes, configuration and, on the leader, every member's progress (match, next, state)."""
        return Status.of(self.raft)


__all__ = ["ProposalDroppedError", "RawNode", "Ready", "SoftState"]
