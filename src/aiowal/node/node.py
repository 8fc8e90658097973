"""An asyncio Raft node: ``RawNode`` + ``AsyncDiskStorage`` + ``Transport`` + the user's state machine.

The loop: step the queued proposals (all of them as one MsgProp); take a ``Ready``; a leader sends its messages at
once (it may send before its own save completes), then ``await storage.save(...)`` with ``hard_sync`` and a follower
sends only after; committed entries already saved locally are applied before the save, the snapshot and the rest
after it; ``advance``. While a leader's save is in flight, new proposals and the leader's new messages go out at once
(``_pump``) rather than waiting for the save. A ticker drives elections and heartbeats. Every ``snapshot_every``
applied entries the state is serialized, and once ``keep_entries`` more are applied it becomes the stored snapshot
(``create_snapshot``), so slow followers still find the entries they need in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiowal.aio import AsyncDiskStorage
from aiowal.node.status import FollowerProgress, NodeCounters, NodeStatus
from aiowal.node.transport import Transport
from aiowal.raft import Config, ProposalDroppedError, RawNode, Ready, StateType
from aiowal.raftpb import ConfState, Entry, EntryType, Message, MessageType

log = logging.getLogger(__name__)

# Prefixed to every proposed payload: the proposer's node id, the term it led in when it took the proposal, and a
# sequence number of this run. A node proposes only as leader, a term has at most one leader, and a restarted node
# leads only in terms above the one it saved (which covers every term its earlier runs tagged an entry with), so the
# tag never repeats: an entry of an earlier run cannot answer a proposal of this one. (No clock, no randomness.)
_TAG = struct.Struct(">QQQ")


class StateMachine(Protocol):
    """What a node applies committed entries to."""

    def apply(self, index: int, data: bytes) -> object:
        """Apply one committed command; the value is handed back to the proposer."""
        ...

    def snapshot(self) -> bytes:
        """The whole state, serialized."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the state with a serialized one (from ``snapshot``)."""
        ...


def _expire(fut: asyncio.Future[object]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class NotLeaderError(Exception):
    """This node cannot take the request; ``leader`` is the known leader (0 if none)."""

    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader; leader is {leader or 'unknown'}")
        self.leader = leader


@dataclass
class NodeConfig:
    """How a node runs: ids and addresses of all voters, timing, compaction."""

    node_id: int
    peers: dict[int, tuple[str, int]]
    tick_interval: float = 0.01
    election_tick: int = 20
    heartbeat_tick: int = 2
    snapshot_every: int = 1000
    keep_entries: int = 200
    seed: int | None = None


class RaftNode:
    """One member of a Raft group, persisting through ``AsyncDiskStorage``."""

    def __init__(self, config: NodeConfig, storage: AsyncDiskStorage, sm: StateMachine) -> None:
        if not storage.hard_sync:
            raise ValueError("a Raft node needs hard_sync=True storage: it must not ack what it may lose")
        self.config = config
        self.storage = storage
        self.sm = sm
        hs, cs = storage.initial_state()
        voters = sorted(config.peers)
        snap = storage.snapshot()
        self.applied = snap.metadata.index
        self._snap_index = snap.metadata.index
        if snap.metadata.index:
            sm.restore(snap.data)
        self.rn = RawNode(
            Config(
                id=config.node_id,
                storage=storage,
                rng=random.Random(config.seed),
                voters=() if list(cs.voters) else voters,
                election_tick=config.election_tick,
                heartbeat_tick=config.heartbeat_tick,
                applied=self.applied,
                check_quorum=True,
                pre_vote=True,
            )
        )
        self.conf_state = ConfState(voters=list(cs.voters) or voters)
        self.transport = Transport(config.node_id, config.peers, self._on_message, on_unreachable=self._on_unreachable)
        self._seq = itertools.count(1)
        self._waiters: dict[tuple[int, int], asyncio.Future[object]] = {}  # by (term, seq) of the tag
        self._wake = asyncio.Event()
        # Proposals not yet stepped: ``propose`` queues them and the loop steps them together (one MsgProp, so one
        # MsgApp per follower for all of them).
        self._proposals: list[bytes] = []
        self._proposal_keys: list[tuple[int, int]] = []
        # While a leader's save is in flight: the term it leads in, so that new proposals and messages go out at
        # once (``_pump``) instead of after the save.
        self._pump_term: int | None = None
        self._pump_scheduled = False
        self._pending_snapshot: tuple[int, bytes] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self.on_leader_change: Callable[[int, int], Awaitable[None] | None] | None = None
        self._last_lead = 0
        self.counters = NodeCounters()
        self._commit_seen = hs.commit

    # --- lifecycle --------------------------------------------------------------------------------------------
    async def start(self) -> None:
        host, port = self.config.peers[self.config.node_id]
        await self.transport.start(host, port)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._ticker()), loop.create_task(self._run())]

    async def stop(self) -> None:
        self._stopped = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.transport.stop()
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(NotLeaderError(0))
        await self.storage.close()

    # --- requests ---------------------------------------------------------------------------------------------
    @property
    def leader(self) -> int:
        return self.rn.raft.lead

    @property
    def is_leader(self) -> bool:
        return self.rn.raft.state is StateType.LEADER

    def status(self) -> NodeStatus:
        """Role, term, leader, indexes, members and, on the leader, every other member's progress."""
        st = self.rn.status()
        cs = st.conf_state
        return NodeStatus(
            id=st.id,
            role=st.state.value,
            term=st.term,
            leader=st.lead,
            commit=st.commit,
            applied=self.applied,
            last_index=st.last_index,
            snapshot_index=self._snap_index,
            voters=sorted(cs.voters),
            learners=sorted(cs.learners),
            voters_outgoing=sorted(cs.voters_outgoing),
            progress={
                id_: FollowerProgress(pr.match, pr.next, pr.state.value, pr.is_learner)
                for id_, pr in sorted(st.progress.items())
                if id_ != st.id
            },
        )

    async def propose(self, data: bytes, timeout: float = 5.0) -> object:
        """Replicate ``data``; returns what the state machine's ``apply`` returned, once applied here."""
        if not self.is_leader:
            raise NotLeaderError(self.leader)
        key = (self.rn.raft.term, next(self._seq))
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[object] = loop.create_future()
        self._waiters[key] = fut
        self._proposals.append(_TAG.pack(self.config.node_id, *key) + data)
        self._proposal_keys.append(key)
        self._poke()
        self.counters.proposals += 1
        # A timer on the future itself: asyncio.wait_for costs a second future, callbacks and a timer per call,
        # a good part of a proposal's cost when many are in flight.
        timer = loop.call_later(timeout, _expire, fut)
        try:
            return await fut
        except BaseException:
            self.counters.proposals_failed += 1
            raise
        finally:
            timer.cancel()
            self._waiters.pop(key, None)

    async def read_barrier(self, timeout: float = 5.0) -> None:
        """Linearizable read point: once this returns, the state machine reflects every write acknowledged
        before the call (a no-op entry goes through the log and is applied here)."""
        await self.propose(b"", timeout)

    # --- the loop ---------------------------------------------------------------------------------------------
    def _on_message(self, m: Message) -> None:
        if self._stopped:
            return
        with contextlib.suppress(ValueError):
            self.rn.step(m)
        self._poke()

    def _poke(self) -> None:
        """Something changed: wake the loop, and while a leader's save is in flight, pump once this turn's input
        is in."""
        self._wake.set()
        if self._pump_term is not None and not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        """While the leader saves a Ready: step the queued proposals and send the leader's new messages (MsgApps of
        those proposals, commit index updates, heartbeats) now; etcd raft allows a leader to send before its own
        save completes, so the followers' saves overlap the leader's."""
        self._pump_scheduled = False
        r = self.rn.raft
        if self._pump_term is None or r.state is not StateType.LEADER or r.term != self._pump_term:
            return
        self._flush_proposals()
        self._send(self.rn.take_leader_messages())

    def _flush_proposals(self) -> None:
        """Step every queued proposal as one MsgProp; fail them all if this node cannot take them."""
        if not self._proposals:
            return
        data, keys = self._proposals, self._proposal_keys
        self._proposals, self._proposal_keys = [], []
        if self.is_leader:
            try:
                self.rn.propose_many(data)
                return
            except ProposalDroppedError:
                pass
        lead = self.leader
        for key in keys:
            fut = self._waiters.get(key)
            if fut is not None and not fut.done():
                fut.set_exception(NotLeaderError(lead))

    def _on_unreachable(self, peer: int) -> None:
        self.rn.report_unreachable(peer)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_interval)
            self.rn.tick()
            self._poke()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._flush_proposals()
            while self.rn.has_ready():
                await self._handle(self.rn.ready())
                self._flush_proposals()

    async def _handle(self, rd: Ready) -> None:
        leader = self.is_leader
        if rd.hard_state is not None and rd.hard_state.commit > self._commit_seen:
            # Counted as the Ready brings it: entries already saved are applied before this Ready's save.
            self.counters.committed += rd.hard_state.commit - self._commit_seen
            self._commit_seen = rd.hard_state.commit
        if leader:
            self._send(rd.messages)
        committed = rd.committed_entries
        if rd.snapshot is None and committed:
            # Committed entries this node has already saved (those before the Ready's own entries) are applied at
            # once, not after this Ready's save: their proposers need not wait for another sync.
            first_unsaved = rd.entries[0].index if rd.entries else committed[-1].index + 1
            n = 0
            while n < len(committed) and committed[n].index < first_unsaved:
                self._apply(committed[n])
                n += 1
            committed = committed[n:]
        if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
            if leader:
                self._pump_term = self.rn.raft.term
                try:
                    await self.storage.save(rd.hard_state, rd.entries, rd.snapshot)
                finally:
                    self._pump_term = None
            else:
                await self.storage.save(rd.hard_state, rd.entries, rd.snapshot)
        if not leader:
            self._send(rd.messages)
        if rd.snapshot is not None and rd.snapshot.metadata.index > self.applied:
            self.sm.restore(rd.snapshot.data)
            self.applied = rd.snapshot.metadata.index
            self._snap_index = self.applied
            self.conf_state.CopyFrom(rd.snapshot.metadata.conf_state)
            self.counters.snapshots_received += 1
        for e in committed:
            self._apply(e)
        self.rn.advance(rd)
        lead = self.leader
        if lead != self._last_lead:
            self._last_lead = lead
            if lead:
                self.counters.leader_changes += 1
            if self.on_leader_change is not None:
                res = self.on_leader_change(self.rn.raft.term, lead)
                if res is not None:
                    await res
        await self._compact()

    def _send(self, msgs: list[Message]) -> None:
        for m in msgs:
            sent = self.transport.send(m)
            if m.type == MessageType.MsgSnap:
                if sent:
                    self.counters.snapshots_sent += 1
                # Raft pauses replication to a follower while its snapshot is in flight: say how it went.
                self.rn.report_snapshot(m.to, failed=not sent)

    def _apply(self, e: Entry) -> None:
        if e.index <= self.applied:
            return
        self.applied = e.index
        self.counters.applied += 1
        if e.type != EntryType.EntryNormal or len(e.data) < _TAG.size:
            return  # the leader's empty entry of a new term, or a configuration change
        node, term, seq = _TAG.unpack_from(e.data)
        data = e.data[_TAG.size :]
        result = self.sm.apply(e.index, data) if data else None
        if node == self.config.node_id:
            fut = self._waiters.get((term, seq))
            if fut is not None and not fut.done():
                fut.set_result(result)

    async def _compact(self) -> None:
        cfg = self.config
        if self._pending_snapshot is None:
            if self.applied - self._snap_index >= cfg.snapshot_every + cfg.keep_entries:
                self._pending_snapshot = (self.applied, self.sm.snapshot())
        elif self.applied >= self._pending_snapshot[0] + cfg.keep_entries:
            index, data = self._pending_snapshot
            self._pending_snapshot = None
            if self._snap_index < index <= self.storage.last_index():
                await self.storage.create_snapshot(index, self.conf_state, data)
                self._snap_index = index
