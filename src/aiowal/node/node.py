"""An asyncio Raft node: ``RawNode`` + ``AsyncDiskStorage`` + ``Transport`` + the user's state machine.

The loop: step the queued proposals (all of them as one MsgProp); take a ``Ready``; a leader sends its messages at
once (it may send before its own save completes), then ``await storage.save(...)`` with ``hard_sync`` and a follower
sends only after; committed entries already saved locally are applied before the save, the snapshot and the rest
after it; ``advance``. While a leader's save is in flight, new proposals and the leader's new messages go out at once
(``_pump``) rather than waiting for the save. A ticker drives elections and heartbeats.

Configuration changes are applied with the other committed entries, in log order (``_apply_conf_change``); the
address of a member added at runtime travels in its change's context. Every ``snapshot_every`` applied entries the
state machine writes its state to a file; once ``keep_entries`` more are applied that file becomes the stored
snapshot (``create_snapshot`` with a ``SnapshotRef``), so slow followers still find the entries they need in the
log. A follower further behind gets the file streamed over a connection of its own (``snapstream``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import struct
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from google.protobuf.message import DecodeError

from aiowal.aio import AsyncDiskStorage
from aiowal.node.members import (
    Address,
    ChangeContext,
    Member,
    bootstrap_changes,
    is_joint,
    joint,
    member_ids,
    single,
)
from aiowal.node.snapshots import SnapshotRef, SnapshotStore
from aiowal.node.snapstream import SnapshotReceiver, SnapshotSender, SnapshotStreamError
from aiowal.node.status import FollowerProgress, NodeCounters, NodeStatus
from aiowal.node.transport import Transport
from aiowal.raft import (
    ConfChangeError,
    ConfChangeRefusedError,
    Config,
    ProposalDroppedError,
    RawNode,
    Ready,
    StateType,
    decode_conf_change,
)
from aiowal.raftpb import (
    ConfChange,
    ConfChangeType,
    ConfChangeV2,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
)

log = logging.getLogger(__name__)

# Prefixed to every proposed payload: the proposer's node id, the term it led in when it took the proposal, and a
# sequence number of this run. A node proposes only as leader, a term has at most one leader, and a restarted node
# leads only in terms above the one it saved (which covers every term its earlier runs tagged an entry with), so the
# tag never repeats: an entry of an earlier run cannot answer a proposal of this one. (No clock, no randomness.)
# Configuration changes carry the same tag in their context.
_TAG = struct.Struct(">QQQ")
_CONF_TYPES = (EntryType.EntryConfChange, EntryType.EntryConfChangeV2)


class StateMachine(Protocol):
    """What a node applies committed entries to, and how its state becomes a file and back."""

    def apply(self, index: int, data: bytes) -> object:
        """Apply one committed command; the value is handed back to the proposer."""
        ...

    def snapshot_to(self, path: str) -> Awaitable[None]:
        """Write the state as of the last entry applied to a new file at ``path``. Called between two applies; the
        node awaits what it returns while it goes on applying later entries, so take what the file needs before
        returning (a copy, a read transaction) and write it in the awaitable (``asyncio.to_thread`` keeps the
        writing off the event loop). The node syncs, checksums and renames the file afterwards."""
        ...

    def restore_from(self, path: str) -> Awaitable[None]:
        """Replace the state with the one in the file at ``path`` (written by ``snapshot_to``, here or on another
        node). Nothing is applied until it completes. The file stays the node's: read it, do not keep it open."""
        ...


def _expire(fut: asyncio.Future[object]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class NotLeaderError(Exception):
    """This node cannot take the request; ``leader`` is the known leader (0 if none)."""

    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader; leader is {leader or 'unknown'}")
        self.leader = leader


@dataclass(frozen=True)
class AppliedChange:
    """A configuration change once applied on this node: the index of its entry (of the entry that left the joint
    configuration, for a change made through one) and the configuration from that index on."""

    index: int
    conf_state: ConfState


@dataclass
class NodeConfig:
    """How a node runs: its id, where it and its peers listen, timing, compaction."""

    node_id: int
    peers: dict[int, tuple[str, int]]
    """Raft addresses: this node's (where it listens) and its peers'. A node whose storage is empty founds a
    cluster whose voters are these ids, unless ``join`` is set. Members added later are reached at the address their
    configuration change carried, unless ``peers`` names one for them (a proxy, say)."""
    tick_interval: float = 0.01
    election_tick: int = 20
    heartbeat_tick: int = 2
    snapshot_every: int = 1000
    keep_entries: int = 200
    seed: int | None = None
    join: bool = False
    """Start empty, with no configuration, to be added to a running cluster by its leader (``add_learner``): the
    node waits for the leader's log or snapshot. Only looked at while the storage is empty."""
    snapshot_dir: str | None = None
    """Where snapshot files live; by default ``snapshots`` inside the storage's directory."""
    catch_up_lag: int = 64
    """A learner is caught up (``promote``, ``replace_member``) once its log is within this many entries of the
    leader's last index."""


class RaftNode:
    """One member of a Raft group, persisting through ``AsyncDiskStorage``."""

    def __init__(self, config: NodeConfig, storage: AsyncDiskStorage, sm: StateMachine) -> None:
        if not storage.hard_sync:
            raise ValueError("a Raft node needs hard_sync=True storage: it must not ack what it may lose")
        self.config = config
        self.id = config.node_id
        self.storage = storage
        self.sm = sm
        self.snapshots = SnapshotStore(config.snapshot_dir or os.path.join(storage.storage.path, "snapshots"))
        hs, cs = storage.initial_state()
        snap = storage.snapshot()
        self._stored: SnapshotRef | None = None
        if snap.metadata.index:
            self._stored = SnapshotRef.decode(snap.metadata, snap.data)
        self.applied = snap.metadata.index
        self._snap_index = snap.metadata.index
        self._fresh = not (snap.metadata.index or storage.last_index() or hs.term or hs.vote or hs.commit)
        self.conf_state = ConfState()
        self.conf_state.CopyFrom(cs)
        self._conf_index = snap.metadata.index
        # Members' addresses learned from configuration changes (and the snapshot's record of them).
        self._book: dict[int, Member] = dict(self._stored.members) if self._stored is not None else {}
        self.rn = self._new_rawnode()
        self.transport = Transport(
            config.node_id,
            self._addresses(),
            self._on_message,
            on_unreachable=self._on_unreachable,
            on_snapshot_stream=self._on_snapshot_stream,
        )
        self._receiver = SnapshotReceiver(self.snapshots, self._step_snapshot)
        self._sender = SnapshotSender()
        self._streams: dict[int, tuple[str, asyncio.Task[None]]] = {}
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
        # A snapshot being written (its index, the configuration and members as of it), then written and waiting
        # for ``keep_entries`` more applied entries before it replaces the stored one.
        self._writing: asyncio.Task[tuple[SnapshotRef, ConfState]] | None = None
        self._written: tuple[SnapshotRef, ConfState] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self.on_leader_change: Callable[[int, int], Awaitable[None] | None] | None = None
        self._last_lead = 0
        self.counters = NodeCounters()
        self._commit_seen = hs.commit

    def _new_rawnode(self) -> RawNode:
        # The configuration comes from the storage (the snapshot's ConfState) and the changes in the log after it,
        # re-applied as they are applied again; a new cluster's log starts with its founding voters' changes.
        return RawNode(
            Config(
                id=self.id,
                storage=self.storage,
                rng=random.Random(self.config.seed),
                election_tick=self.config.election_tick,
                heartbeat_tick=self.config.heartbeat_tick,
                applied=self.applied,
                check_quorum=True,
                pre_vote=True,
            )
        )

    def _addresses(self) -> dict[int, Address]:
        """Where to reach each peer: the configured address, else the one its configuration change carried."""
        return {**{i: m.addr for i, m in self._book.items()}, **self.config.peers}

    # --- lifecycle --------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Restore the stored snapshot into the state machine (founding a cluster first if the storage is empty and
        this node does not join one), listen, and run."""
        await asyncio.to_thread(self.snapshots.prepare)
        if self._stored is not None:
            await self.sm.restore_from(self.snapshots.require(self._stored))
        elif self._fresh and not self.config.join:
            changes = bootstrap_changes(self.config.peers)
            ents = [
                Entry(term=1, index=i, type=EntryType.EntryConfChange, data=cc.SerializeToString())
                for i, cc in enumerate(changes, 1)
            ]
            await self.storage.save(HardState(term=1, commit=len(ents)), ents, None)
            self.rn = self._new_rawnode()
        host, port = self.config.peers[self.id]
        await self.transport.start(host, port)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._ticker()), loop.create_task(self._run())]

    async def stop(self) -> None:
        self._stopped = True
        tasks: list[asyncio.Task[Any]] = [*self._tasks, *(t for _, t in self._streams.values())]
        if self._writing is not None:
            tasks.append(self._writing)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
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

    def members(self) -> dict[int, Member]:
        """Every member of the configuration this node has applied, with the address this node reaches it at (and
        the fields its configuration change carried)."""
        addrs = {**self._addresses(), self.id: self.config.peers.get(self.id, ("", 0))}
        out = {}
        for i in sorted(member_ids(self.conf_state)):
            known = self._book.get(i)
            meta = known.meta if known is not None else {}
            out[i] = Member(addrs.get(i, ("", 0)), meta)
        return out

    async def propose(self, data: bytes, timeout: float = 5.0) -> object:
        """Replicate ``data``; returns what the state machine's ``apply`` returned, once applied here."""
        if not self.is_leader:
            raise NotLeaderError(self.leader)
        key = (self.rn.raft.term, next(self._seq))
        self._proposals.append(_TAG.pack(self.id, *key) + data)
        self._proposal_keys.append(key)
        self._poke()
        return await self._wait(key, timeout)

    async def _wait(self, key: tuple[int, int], timeout: float) -> object:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[object] = loop.create_future()
        self._waiters[key] = fut
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

    # --- membership -------------------------------------------------------------------------------------------
    async def change_membership(
        self,
        build: Callable[[ChangeContext], ConfChange | ConfChangeV2],
        members: Mapping[int, Member] | None = None,
        timeout: float = 10.0,
    ) -> AppliedChange:
        """Propose the configuration change ``build`` makes from its context (which carries this proposal's tag and
        ``members``' addresses) and return once it is applied here. On the leader only (NotLeaderError); raises
        ConfChangeRefusedError when the change cannot be taken now (another is in flight, it does not fit)."""
        if not self.is_leader:
            raise NotLeaderError(self.leader)
        key = (self.rn.raft.term, next(self._seq))
        cc = build(ChangeContext((self.id, *key), dict(members or {})))
        try:
            self.rn.propose_conf_change(cc)
        except ConfChangeRefusedError:
            raise
        except ProposalDroppedError as exc:
            raise NotLeaderError(0) from exc
        self._poke()
        return cast(AppliedChange, await self._wait(key, timeout))

    async def add_learner(
        self, node_id: int, addr: Address, meta: Mapping[str, str] | None = None, timeout: float = 10.0
    ) -> AppliedChange:
        """Add ``node_id`` (listening at ``addr``) as a learner: it receives the log, or a snapshot, but does not
        vote. Start it with ``NodeConfig(join=True)``."""
        member = {node_id: Member(addr, dict(meta or {}))}
        return await self.change_membership(
            lambda ctx: single(ConfChangeType.ConfChangeAddLearnerNode, node_id, ctx), member, timeout
        )

    async def wait_caught_up(self, node_id: int, max_lag: int | None = None, timeout: float = 60.0) -> None:
        """On the leader: return once ``node_id``'s log is within ``max_lag`` entries (``catch_up_lag`` by default)
        of the leader's last index."""
        lag = self.config.catch_up_lag if max_lag is None else max_lag
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            if not self.is_leader:
                raise NotLeaderError(self.leader)
            pr = self.rn.raft.prs.progress.get(node_id)
            if pr is None:
                raise ValueError(f"node {node_id} is not a member")
            if pr.match + lag >= self.rn.raft.raft_log.last_index():
                return
            if loop.time() >= end:
                raise TimeoutError(f"node {node_id} did not catch up in {timeout} s (match {pr.match})")
            await asyncio.sleep(self.config.tick_interval * self.config.heartbeat_tick)

    async def promote(
        self, node_id: int, max_lag: int | None = None, catch_up_timeout: float = 60.0, timeout: float = 10.0
    ) -> AppliedChange:
        """Make the learner ``node_id`` a voter once it has caught up (``wait_caught_up``)."""
        await self.wait_caught_up(node_id, max_lag, catch_up_timeout)
        return await self.change_membership(
            lambda ctx: single(ConfChangeType.ConfChangeAddNode, node_id, ctx), None, timeout
        )

    async def add_voter(
        self,
        node_id: int,
        addr: Address,
        meta: Mapping[str, str] | None = None,
        catch_up_timeout: float = 60.0,
        timeout: float = 10.0,
    ) -> AppliedChange:
        """Add ``node_id`` as a learner, wait for it to catch up, then promote it."""
        if node_id not in member_ids(self.conf_state):
            await self.add_learner(node_id, addr, meta, timeout)
        return await self.promote(node_id, None, catch_up_timeout, timeout)

    async def remove_member(self, node_id: int, timeout: float = 10.0) -> AppliedChange:
        """Remove ``node_id`` (a voter or a learner, this leader included: it steps down once the change is applied,
        and the remaining voters elect a leader). Keep the removed server running until a majority of the new
        configuration's voters has applied the change (their ``status().applied`` reaches the index returned)."""
        return await self.change_membership(
            lambda ctx: single(ConfChangeType.ConfChangeRemoveNode, node_id, ctx), None, timeout
        )

    async def replace_member(
        self,
        old_id: int,
        new_id: int,
        addr: Address,
        meta: Mapping[str, str] | None = None,
        catch_up_timeout: float = 60.0,
        timeout: float = 10.0,
    ) -> AppliedChange:
        """Replace the voter ``old_id`` (dead, say) with ``new_id``: add ``new_id`` as a learner, wait for it to
        catch up, then promote it and remove ``old_id`` in one joint change, left automatically. Returns once the
        joint configuration is left (the index is the leaving entry's). The voters never lose their majority: the
        new one votes only once it has the log, and while joint every decision needs both halves."""
        if new_id not in member_ids(self.conf_state):
            await self.add_learner(new_id, addr, meta, timeout)
        await self.wait_caught_up(new_id, None, catch_up_timeout)
        changes = [(ConfChangeType.ConfChangeAddNode, new_id), (ConfChangeType.ConfChangeRemoveNode, old_id)]
        await self.change_membership(lambda ctx: joint(changes, ctx), None, timeout)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while is_joint(self.conf_state):
            if loop.time() >= end:
                raise TimeoutError("the joint configuration was not left in time")
            await asyncio.sleep(self.config.tick_interval)
        cs = ConfState()
        cs.CopyFrom(self.conf_state)
        return AppliedChange(self._conf_index, cs)

    async def transfer_leadership(self, to: int, timeout: float = 10.0) -> None:
        """Hand leadership to the voter ``to`` (call on the leader); returns once this node sees it lead."""
        if not self.is_leader:
            raise NotLeaderError(self.leader)
        self.rn.transfer_leader(to)
        self._poke()
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.leader != to:
            if loop.time() >= end:
                raise TimeoutError(f"node {to} did not take over in {timeout} s")
            await asyncio.sleep(self.config.tick_interval)

    # --- the loop ---------------------------------------------------------------------------------------------
    def _on_message(self, m: Message) -> None:
        if self._stopped:
            return
        if m.type == MessageType.MsgSnap:
            # Snapshots come with their file over a connection of their own (``_step_snapshot``).
            log.warning("node %d: a MsgSnap without its file from %d; dropped", self.id, getattr(m, "from"))
            return
        self._step(m)

    def _step(self, m: Message) -> None:
        # A forwarded proposal or read may be dropped (no leader known, or a leader on its way out of the
        # configuration): the sender times out and retries, as when the message is lost.
        with contextlib.suppress(ValueError, ProposalDroppedError):
            self.rn.step(m)
        self._poke()

    def _step_snapshot(self, m: Message) -> None:
        """A MsgSnap whose file is now durable here under its final name."""
        if not self._stopped:
            self._step(m)

    async def _on_snapshot_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        before = self._receiver.bytes_received
        try:
            await self._receiver.serve(reader, writer)
        except (SnapshotStreamError, DecodeError, ValueError) as exc:
            log.warning("node %d: snapshot transfer refused: %s", self.id, exc)
        finally:
            self.counters.snapshot_bytes_received += self._receiver.bytes_received - before

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
                pass  # a leader on its way out of the configuration, or handing over leadership
        lead = self.leader if self.leader != self.id else 0
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
            await self._restore(rd)
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

    async def _restore(self, rd: Ready) -> None:
        """Replace the state machine with the snapshot a leader sent (its file is already here, durable)."""
        assert rd.snapshot is not None
        ref = SnapshotRef.decode(rd.snapshot.metadata, rd.snapshot.data)
        await self.sm.restore_from(self.snapshots.require(ref))
        self.applied = self._snap_index = self._conf_index = ref.index
        self._stored = ref
        before = member_ids(self.conf_state)
        self.conf_state = ConfState()
        self.conf_state.CopyFrom(rd.snapshot.metadata.conf_state)
        self._book = dict(ref.members)
        self._update_transport(before)
        self.counters.snapshots_received += 1
        await self.snapshots.collect(self._stored, self._receiver.active())

    def _send(self, msgs: list[Message]) -> None:
        for m in msgs:
            if m.type == MessageType.MsgSnap:
                self._stream_snapshot(m)
            else:
                self.transport.send(m)

    def _stream_snapshot(self, m: Message) -> None:
        """Stream the snapshot file ``m`` refers to, over a connection of its own; Raft pauses replication to that
        follower until ``report_snapshot`` says how it went."""
        ref = SnapshotRef.decode(m.snapshot.metadata, m.snapshot.data)
        current = self._streams.get(m.to)
        if current is not None and not current[1].done():
            if current[0] == ref.name:
                return
            current[1].cancel()  # an older snapshot: the new transfer reports for this follower
        path = self.snapshots.path(ref)
        self.snapshots.pin(path)
        task = asyncio.get_running_loop().create_task(self._stream(m, ref, path), name=f"snapshot-to-{m.to}")
        self._streams[m.to] = (ref.name, task)

    async def _stream(self, m: Message, ref: SnapshotRef, path: str) -> None:
        ok = False
        try:
            addr = self.transport.addr_of(m.to)
            if addr is None:
                raise SnapshotStreamError(f"no address for node {m.to}")
            sent = await self._sender.send(addr, m, path, ref)
            ok = True
            self.counters.snapshots_sent += 1
            self.counters.snapshot_bytes_sent += sent
        except (OSError, TimeoutError, SnapshotStreamError) as exc:
            self.counters.snapshot_streams_failed += 1
            log.warning("node %d: snapshot %d to node %d failed: %s", self.id, ref.index, m.to, exc)
        finally:
            self.snapshots.unpin(path)
        if not self._stopped:
            self.rn.report_snapshot(m.to, failed=not ok)
            self._poke()

    def _apply(self, e: Entry) -> None:
        if e.index <= self.applied:
            return
        self.applied = e.index
        self.counters.applied += 1
        if e.type in _CONF_TYPES:
            self._apply_conf_change(e)
            return
        if e.type != EntryType.EntryNormal or len(e.data) < _TAG.size:
            return  # the leader's empty entry of a new term, or a change the leader refused
        node, term, seq = _TAG.unpack_from(e.data)
        data = e.data[_TAG.size :]
        result = self.sm.apply(e.index, data) if data else None
        if node == self.id:
            fut = self._waiters.get((term, seq))
            if fut is not None and not fut.done():
                fut.set_result(result)

    def _apply_conf_change(self, e: Entry) -> None:
        """Apply a committed configuration change: to Raft, to the address book and the transport, and to the
        proposer's waiter."""
        try:
            cc = decode_conf_change(e)
        except DecodeError:
            log.error("node %d: entry %d holds an undecodable configuration change; skipped", self.id, e.index)
            return
        ctx = ChangeContext.decode(cc.context)
        before = member_ids(self.conf_state)
        try:
            cs = self.rn.apply_conf_change(cc)
        except ConfChangeError as exc:
            log.error("node %d: configuration change at %d not applied: %s", self.id, e.index, exc)
            result: object = exc
        else:
            self.conf_state = cs
            self._conf_index = e.index
            after = member_ids(cs)
            self._book.update((i, m) for i, m in ctx.members.items() if i in after)
            self._update_transport(before)
            result = AppliedChange(e.index, cs)
        if ctx.tag is not None and ctx.tag[0] == self.id:
            fut = self._waiters.get((ctx.tag[1], ctx.tag[2]))
            if fut is not None and not fut.done():
                if isinstance(result, Exception):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    def _update_transport(self, before: set[int]) -> None:
        """Reach every member of the configuration now in force; forget the ones that just left it."""
        after = member_ids(self.conf_state)
        addrs = self._addresses()
        for i in after:
            if i in addrs:
                self.transport.set_peer(i, addrs[i])
        for i in before - after:
            self._book.pop(i, None)
            self.transport.remove_peer(i)

    async def _compact(self) -> None:
        """Write a snapshot file every ``snapshot_every`` applied entries, and make it the stored snapshot once
        ``keep_entries`` more are applied."""
        cfg = self.config
        if self._writing is None and self._written is None:
            if self.applied - self._snap_index >= cfg.snapshot_every + cfg.keep_entries:
                self._writing = asyncio.get_running_loop().create_task(self._write_snapshot())
            return
        if self._writing is not None:
            if not self._writing.done():
                return
            task, self._writing = self._writing, None
            try:
                self._written = task.result()
            except Exception as exc:
                log.error("node %d: writing a snapshot failed: %s", self.id, exc)
                return
        assert self._written is not None
        ref, cs = self._written
        if self.applied < ref.index + cfg.keep_entries and ref.index > self._snap_index:
            return
        self._written = None
        if self._snap_index < ref.index <= self.storage.last_index():
            await self.storage.create_snapshot(ref.index, cs, ref.encode())
            self._snap_index = ref.index
            self._stored = ref
        await self.snapshots.collect(self._stored, self._receiver.active())

    def _write_snapshot(self) -> Coroutine[Any, Any, tuple[SnapshotRef, ConfState]]:
        """Start the state machine's snapshot of the state as of now (the entries applied so far, the configuration
        and the members' addresses with it); the returned awaitable finishes writing and seals the file."""
        index = self.applied
        term = self.storage.term(index)
        cs = ConfState()
        cs.CopyFrom(self.conf_state)
        members = dict(self._book)
        tmp = self.snapshots.tmp_path(index)
        writing = self.sm.snapshot_to(tmp)

        async def finish() -> tuple[SnapshotRef, ConfState]:
            try:
                await writing
                return await self.snapshots.seal(tmp, index, term, members), cs
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

        return finish()
