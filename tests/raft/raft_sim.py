"""A deterministic simulation of a Raft cluster: RawNodes on MemoryStorage or DiskStorage, a fake clock, and a
network that drops, duplicates, delays, reorders and partitions messages, with nodes crashing and restarting from
their storage and the membership changing (learners added and promoted, members removed, joint changes of several
members). Every random choice comes from one seed; ``Sim.check_*`` verify the Raft safety properties."""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import random
from pathlib import Path

from raft_cluster import ADD, AUTO, EXPLICIT, IMPLICIT, LEARNER, LEAVE, REMOVE, v2

from aiowal import DiskStorage
from aiowal.errors import CompactedError, UnavailableError
from aiowal.raft import (
    ConfChangeRefusedError,
    Config,
    Membership,
    MemoryStorage,
    ProposalDroppedError,
    Raft,
    RawNode,
    Ready,
    StateType,
    decode_conf_change,
)
from aiowal.raft.messages import MT, msg_from
from aiowal.raftpb import (
    ConfChange,
    ConfChangeType,
    ConfChangeV2,
    ConfState,
    Entry,
    EntryConfChange,
    EntryConfChangeV2,
    EntryNormal,
    HardState,
    Message,
)

UNITS_PER_TICK = 10
DELIVER, PROPOSE, CRASH, READ, TRANSFER, MEMBERSHIP, SAVE = 0, 1, 2, 3, 4, 5, 6
SEEDS_PASSED: dict[str, int] = {}


class SafetyViolation(AssertionError):
    pass


ConfKey = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], bool]


def conf_key(cs: ConfState) -> ConfKey:
    """A ConfState as plain sorted tuples (a stored ConfState may carry ``auto_leave`` set to false explicitly)."""
    return (
        tuple(sorted(cs.voters)),
        tuple(sorted(cs.voters_outgoing)),
        tuple(sorted(cs.learners)),
        tuple(sorted(cs.learners_next)),
        cs.auto_leave,
    )


def members_of(cs: ConfState) -> set[int]:
    return {*cs.voters, *cs.voters_outgoing, *cs.learners, *cs.learners_next}


def reference_conf(cs: ConfState, cc: ConfChange | ConfChangeV2) -> ConfState:
    """The configuration ``cc`` leads to from ``cs``, worked out here on plain sets (without the validity checks,
    which the leader applies when the change is proposed), to check the core's own bookkeeping against."""
    if isinstance(cc, ConfChange):
        changes, transition = [(cc.type, cc.node_id)], AUTO
    else:
        changes, transition = [(c.type, c.node_id) for c in cc.changes], cc.transition
    voters, outgoing = set(cs.voters), set(cs.voters_outgoing)
    learners, learners_next = set(cs.learners), set(cs.learners_next)
    auto_leave = cs.auto_leave
    if not changes and transition == AUTO:
        return ConfState(voters=sorted(voters), learners=sorted(learners | learners_next))
    if transition != AUTO or len(changes) > 1:
        outgoing, auto_leave = set(voters), transition != EXPLICIT
    for t, nid in changes:
        if nid == 0:
            continue
        if t == ADD:
            learners.discard(nid)
            learners_next.discard(nid)
            voters.add(nid)
        elif t == LEARNER and nid not in learners:
            voters.discard(nid)
            learners_next.discard(nid)
            (learners_next if nid in outgoing else learners).add(nid)
        elif t == REMOVE:
            voters -= {nid}
            learners -= {nid}
            learners_next -= {nid}
    out = ConfState(
        voters=sorted(voters),
        voters_outgoing=sorted(outgoing),
        learners=sorted(learners),
        learners_next=sorted(learners_next),
    )
    out.auto_leave = auto_leave and bool(outgoing)
    return out


@dataclasses.dataclass
class SimConfig:
    seed: int
    nodes: int = 3
    ticks: int = 300
    settle_ticks: int = 600
    disk_dir: Path | None = None
    drop: float = 0.05
    duplicate: float = 0.03
    max_delay: int = 30
    partition_rate: float = 0.004
    crash_rate: float = 0.002
    restart_after: tuple[int, int] = (50, 400)
    propose_rate: float = 0.08
    read_rate: float = 0.03
    transfer_rate: float = 0.0005
    membership_rate: float = 0.0
    joint_share: float = 0.4  # of the membership changes, those that change several members through a joint config
    leader_sends_first: bool = False
    crash_before_save: float = 0.0
    save_delay: int = 10
    compact_every: int = 30
    keep: int = 5
    pre_vote: bool = True
    check_quorum: bool = True
    election_tick: int = 10
    heartbeat_tick: int = 2

    @classmethod
    def random(cls, seed: int, disk_dir: Path | None = None) -> SimConfig:
        """A cluster shape and fault mix chosen by ``seed``."""
        rng = random.Random(seed * 7919 + 1)
        pv = rng.random() < 0.75
        return cls(
            seed=seed,
            nodes=rng.choice([3, 3, 4, 5, 5]),
            disk_dir=disk_dir,
            drop=rng.choice([0.0, 0.02, 0.1, 0.25]),
            duplicate=rng.choice([0.0, 0.05, 0.2]),
            max_delay=rng.choice([1, 10, 30, 80]),
            partition_rate=rng.choice([0.0, 0.002, 0.006]),
            crash_rate=rng.choice([0.0, 0.002, 0.006]),
            restart_after=rng.choice([(5, 100), (50, 400)]),
            propose_rate=rng.choice([0.02, 0.05, 0.15]),
            heartbeat_tick=rng.choice([1, 2, 3]),
            read_rate=rng.choice([0.0, 0.01, 0.05]),
            transfer_rate=rng.choice([0.0, 0.0005, 0.002]),
            membership_rate=rng.choice([0.0, 0.001, 0.003, 0.006]),
            joint_share=rng.choice([0.0, 0.4, 0.8]),
            leader_sends_first=rng.random() < 0.5,
            crash_before_save=rng.choice([0.0, 0.01, 0.05]),
            save_delay=rng.choice([2, 10, 30]),
            compact_every=rng.choice([8, 30, 1000]),
            keep=rng.choice([0, 3, 20]),
            pre_vote=pv,
            check_quorum=rng.random() < 0.75,
        )


class SimNode:
    """One server: durable storage that survives crashes, and a RawNode plus state machine that do not."""

    def __init__(self, sim: Sim, id_: int, *, joiner: bool = False) -> None:
        self.sim = sim
        self.id = id_
        # The bootstrap members start with the changes that add them in their log; a node added later starts empty
        # and learns from the leader. Either way a node's configuration comes from the changes it applies.
        self.initial_voters = () if joiner else tuple(sim.initial_ids)
        self.confs: list[tuple[int, ConfState]] = []  # (index, configuration from that index on)
        self.ref_conf = ConfState()  # the configuration the applied changes lead to, by ``reference_conf``
        self.ref_membership = Membership()  # the same, in the form the core keeps it (quick to compare)
        self.incarnation = 0
        self.rn: RawNode | None = None
        self.mem = MemoryStorage()
        self.disk: DiskStorage | None = None
        self.sm: list[tuple[int, bytes]] = []  # (index, data) of the applied normal entries with data
        self.applied = 0
        self.restart_at: int | None = None
        self.applying = False
        self.pending: Ready | None = None
        self.start()

    @property
    def storage(self) -> MemoryStorage | DiskStorage:
        return self.disk if self.disk is not None else self.mem

    def start(self) -> None:
        sim = self.sim
        if sim.cfg.disk_dir is not None:
            sim.cfg.disk_dir.mkdir(parents=True, exist_ok=True)
            self.disk = DiskStorage.open(str(sim.cfg.disk_dir / f"node{self.id}"))
        st = self.storage
        if self.incarnation == 0 and self.initial_voters:
            # Bootstrap as etcd does: the initial members are configuration changes 1..n, committed in term 1,
            # so that a node added later learns them from the log.
            ents = [
                Entry(
                    term=1,
                    index=i,
                    type=EntryConfChange,
                    data=ConfChange(type=ConfChangeType.ConfChangeAddNode, node_id=nid).SerializeToString(),
                )
                for i, nid in enumerate(self.initial_voters, start=1)
            ]
            st.save(HardState(term=1, commit=len(ents)), ents, None)
        snap = st.snapshot()
        self.incarnation += 1
        self.rn = RawNode(
            Config(
                id=self.id,
                storage=st,
                rng=random.Random(f"{sim.cfg.seed}/{self.id}/{self.incarnation}"),
                election_tick=sim.cfg.election_tick,
                heartbeat_tick=sim.cfg.heartbeat_tick,
                applied=snap.metadata.index,
                max_size_per_msg=sim.rng.choice([None, 64, 4096]),
                max_inflight_msgs=sim.rng.choice([1, 4, 256]),
                pre_vote=sim.cfg.pre_vote,
                check_quorum=sim.cfg.check_quorum,
            )
        )
        self.instrument(self.rn.raft)
        self.restore_sm(snap.data, snap.metadata.index)
        self.confs = [(snap.metadata.index, snap.metadata.conf_state)]
        self.set_ref_conf(snap.metadata.conf_state)
        self.restart_at = None

    def set_ref_conf(self, cs: ConfState) -> None:
        self.ref_conf = cs
        self.ref_membership = Membership.from_conf_state(cs)

    def instrument(self, r: Raft) -> None:
        """Check every election this node wins and every commit index it reaches as leader, as they happen."""
        sim = self.sim
        become_leader, maybe_commit = r.become_leader, r._maybe_commit

        def checked_become_leader() -> None:
            sim.check_election(r)
            become_leader()

        def checked_maybe_commit() -> bool:
            moved = maybe_commit()
            if moved:
                sim.check_commit(r)
            return moved

        r.become_leader = checked_become_leader
        r._maybe_commit = checked_maybe_commit

    def crash(self) -> None:
        self.rn = None
        self.pending = None  # a save in progress is lost
        if self.disk is not None:
            self.disk.close()
            self.disk = None

    def restore_sm(self, data: bytes, index: int) -> None:
        sm = []
        for line in data.split(b"\n") if data else []:
            i, _, d = line.partition(b" ")
            sm.append((int(i), d))
        self.sm = sm
        self.applied = index
        self.sim.check_sm_prefix(self)

    def snapshot_data(self, upto: int) -> bytes:
        return b"\n".join(b"%d %s" % (i, d) for i, d in self.sm if i <= upto)

    # --- the Ready loop --------------------------------------------------------------------------------------
    def handle_ready(self) -> None:
        rn = self.rn
        assert rn is not None
        sim = self.sim
        while self.pending is None and rn.has_ready():
            rd = rn.ready()
            for rs in rd.read_states:
                sim.check_read(self.id, rs.index, rs.request_ctx)
            if rd.hard_state is not None:
                sim.record_vote(self.id, rd.hard_state.term, rd.hard_state.vote)
            if sim.cfg.leader_sends_first and rn.raft.state is StateType.LEADER and rd.entries:
                # A leader may send before its save completes: the save finishes later, and the node keeps
                # stepping messages meanwhile (without a new Ready until this one is advanced).
                for m in rd.messages:
                    sim.send(m)
                self.pending = rd
                sim.schedule(sim.now + sim.rng.randint(1, sim.cfg.save_delay), SAVE, self.incarnation, self.id)
                break
            self.storage.save(rd.hard_state, rd.entries, rd.snapshot)
            for m in rd.messages:
                sim.send(m)
            self.finish(rd)
        if self.id in sim.retired:
            self.crash()  # it applied its own removal: the operator shuts it down
            return
        sim.observe(self)

    def save_completed(self) -> None:
        """The save of the pending Ready of a leader that sent first completes (or the node crashes before)."""
        rd, self.pending = self.pending, None
        assert rd is not None and self.rn is not None
        sim = self.sim
        if sim.faults and sim.rng.random() < sim.cfg.crash_before_save:
            sim.stats["crashes_before_save"] += 1
            self.crash()
            self.restart_at = sim.now + sim.rng.randint(*sim.cfg.restart_after)
            return
        self.storage.save(rd.hard_state, rd.entries, rd.snapshot)
        self.finish(rd)
        self.handle_ready()

    def finish(self, rd: Ready) -> None:
        assert self.rn is not None
        self.apply(rd)
        self.rn.advance(rd)
        self.maybe_compact()

    def apply(self, rd: Ready) -> None:
        self.applying = True
        try:
            self._apply(rd)
        finally:
            self.applying = False

    def _apply(self, rd: Ready) -> None:
        sim = self.sim
        if rd.snapshot is not None:
            self.restore_sm(rd.snapshot.data, rd.snapshot.metadata.index)
            self.confs = [(rd.snapshot.metadata.index, rd.snapshot.metadata.conf_state)]
            self.set_ref_conf(rd.snapshot.metadata.conf_state)
        for e in rd.committed_entries:
            if e.index != self.applied + 1:
                raise SafetyViolation(f"node {self.id} applied {e.index} after {self.applied}")
            sim.record_applied(self.id, e.index, e.term, e.data)
            self.applied = e.index
            if e.type in (EntryConfChange, EntryConfChangeV2):
                cc = decode_conf_change(e)
                assert self.rn is not None
                was_leader = self.rn.raft.state is StateType.LEADER
                cs = self.rn.apply_conf_change(cc)
                if was_leader and self.rn.raft.state is not StateType.LEADER:
                    sim.stats["leaders_removed"] += 1  # it stepped down: the change took its vote away
                self.set_ref_conf(reference_conf(self.ref_conf, cc))
                if conf_key(cs) != conf_key(self.ref_conf):
                    raise SafetyViolation(f"node {self.id} applied {cc} at {e.index}: {cs} instead of {self.ref_conf}")
                self.confs.append((e.index, cs))
                sim.on_conf_change(e.index, cs)
            elif e.type == EntryNormal and e.data:
                self.sm.append((e.index, e.data))
                if sim.proposer.get(e.data) == self.id:
                    sim.acked.add(e.data)

    def maybe_compact(self) -> None:
        st = self.storage
        cfg = self.sim.cfg
        target = self.applied - cfg.keep
        if target - st.first_index() + 1 < cfg.compact_every or target <= st.snapshot().metadata.index:
            return
        conf = [cs for i, cs in self.confs if i <= target][-1]
        st.create_snapshot(target, conf, self.snapshot_data(target))


class Sim:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.initial_ids = list(range(1, cfg.nodes + 1))
        self.next_id = cfg.nodes + 1
        self.retired: set[int] = set()
        self.conf_changes: set[int] = set()  # indexes of the applied configuration changes
        self.conf_at: dict[int, ConfKey] = {}  # index of a change -> the configuration it led to, on every node
        self.last_conf_index = 0
        self.leaving: dict[int, int] = {}  # a removed server -> the index of the change that removed it
        self.removed: set[int] = set()  # every server ever removed
        self.current_conf = ConfState()  # the configuration of the latest change applied anywhere
        self.now = 0
        self.seq = 0
        self.queue: list[tuple[int, int, int, int, int, bytes]] = []  # (at, seq, kind, from, to, message)
        self.blocked: set[tuple[int, int]] = set()
        self.partition_until = 0
        self.faults = True
        # Observations checked against the safety properties.
        self.leaders: dict[int, int] = {}  # term -> leader
        self.votes: dict[tuple[int, int], int] = {}  # (voter, term) -> candidate
        self.committed: dict[int, tuple[int, bytes]] = {}  # index -> (term, data), from every apply anywhere
        self.proposer: dict[bytes, int] = {}
        self.acked: set[bytes] = set()
        self.proposals = 0
        self.stats = dict.fromkeys(
            (
                "sent",
                "dropped",
                "duplicated",
                "crashes",
                "partitions",
                "snapshots",
                "reads",
                "reads_served",
                "transfers",
                "conf_proposed",
                "conf_refused",
                "joint_entered",
                "joint_left",
                "auto_leaves",
                "joint_elections",
                "joint_commits",
                "learners_added",
                "learners_promoted",
                "leaders_removed",
                "crashes_before_save",
            ),
            0,
        )
        self.reads: dict[bytes, tuple[int, int]] = {}  # ctx -> (asking node, highest index applied anywhere then)
        self.nodes = {i: SimNode(self, i) for i in self.initial_ids}

    # --- network ---------------------------------------------------------------------------------------------
    def send(self, m: Message) -> None:
        frm = msg_from(m)
        self.stats["sent"] += 1
        if m.type == MT.MsgSnap:
            self.stats["snapshots"] += 1
        if self.faults and ((frm, m.to) in self.blocked or self.rng.random() < self.cfg.drop):
            self.stats["dropped"] += 1
            self.snapshot_failed(m)
            return
        data = m.SerializeToString()
        copies = 1
        if self.faults and self.rng.random() < self.cfg.duplicate:
            copies = 2
            self.stats["duplicated"] += 1
        for _ in range(copies):
            self.schedule(
                self.now + self.rng.randint(1, self.cfg.max_delay if self.faults else 5), DELIVER, frm, m.to, data
            )

    def snapshot_failed(self, m: Message) -> None:
        if m.type == MT.MsgSnap:
            sender = self.nodes[msg_from(m)].rn
            if sender is not None:
                sender.report_snapshot(m.to, failed=True)

    def deliver(self, frm: int, to: int, data: bytes) -> None:
        m = Message()
        m.ParseFromString(data)
        node = self.nodes.get(to)
        if node is None:  # a node that is not started yet
            self.snapshot_failed(m)
            return
        if node.rn is None or (self.faults and (frm, to) in self.blocked):
            self.snapshot_failed(m)
            self.after(self.nodes[frm])
            return
        with contextlib.suppress(ProposalDroppedError):
            node.rn.step(m)
        self.after(node)
        if m.type == MT.MsgSnap:
            sender = self.nodes[frm]
            if sender.rn is not None:
                sender.rn.report_snapshot(to, failed=False)
                self.after(sender)

    def after(self, node: SimNode) -> None:
        if node.rn is not None:
            node.handle_ready()

    # --- faults and load -------------------------------------------------------------------------------------
    def partition(self) -> None:
        ids = self.members()
        if len(ids) < 2:
            return
        self.rng.shuffle(ids)
        k = self.rng.randint(1, len(ids) - 1)
        a, b = set(ids[:k]), set(ids[k:])
        one_way = self.rng.random() < 0.2
        self.blocked = {(x, y) for x in a for y in b}
        if not one_way:
            self.blocked |= {(y, x) for x in a for y in b}
        self.partition_until = self.now + self.rng.randint(50, 600)
        self.stats["partitions"] += 1

    def propose(self) -> None:
        live = [n for n in self.nodes.values() if n.rn is not None]
        if not live:
            return
        node = self.rng.choice(live)
        self.proposals += 1
        data = b"p%d.%d" % (node.id, self.proposals)
        self.proposer[data] = node.id
        assert node.rn is not None
        with contextlib.suppress(ProposalDroppedError):
            node.rn.propose(data)
        node.handle_ready()

    def read(self) -> None:
        """A linearizable read: its index must cover every entry applied anywhere before it was asked for."""
        live = [n for n in self.nodes.values() if n.rn is not None]
        if not live:
            return
        node = self.rng.choice(live)
        self.stats["reads"] += 1
        ctx = b"r%d" % self.stats["reads"]
        self.reads[ctx] = (node.id, max(self.committed, default=0))
        assert node.rn is not None
        with contextlib.suppress(ProposalDroppedError):
            node.rn.read_index(ctx)
        node.handle_ready()

    def check_read(self, id_: int, index: int, ctx: bytes) -> None:
        # The network may duplicate a read request or its answer: a read can be confirmed more than once.
        asker, floor = self.reads.get(ctx, (None, 0))
        if asker != id_:
            raise SafetyViolation(f"node {id_} got read state {ctx!r} that node {asker} asked for")
        if index < floor:
            raise SafetyViolation(f"stale read {ctx!r} at node {id_}: index {index} < {floor} applied before it")
        self.stats["reads_served"] += 1

    def transfer(self) -> None:
        lead = self.leader()
        if lead is None or lead.rn is None:
            return
        targets = [i for i in lead.rn.raft.prs.voter_ids() if i != lead.id]
        if not targets:
            return
        target = self.rng.choice(targets)
        self.stats["transfers"] += 1
        lead.rn.transfer_leader(target)
        lead.handle_ready()

    def members(self) -> list[int]:
        return [i for i in self.nodes if i not in self.retired]

    def change_membership(self) -> None:
        """Propose a random membership change, usually on the leader, sometimes on a follower (which forwards it).
        Some are refused (e.g. one made while another is pending): the leader's checks are exercised too."""
        lead = self.leader()
        if lead is None or lead.rn is None:
            return
        cc = self.random_conf_change(lead.rn.conf_state())
        proposer = lead
        if self.rng.random() < 0.2:
            proposer = self.rng.choice([n for n in self.nodes.values() if n.rn is not None])
        assert proposer.rn is not None
        self.stats["conf_proposed"] += 1
        try:
            proposer.rn.propose_conf_change(cc)
        except ConfChangeRefusedError:
            self.stats["conf_refused"] += 1
        except ProposalDroppedError:
            pass
        proposer.handle_ready()

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def random_conf_change(self, cs: ConfState) -> ConfChange | ConfChangeV2:
        rng = self.rng
        if cs.voters_outgoing and (not cs.auto_leave or rng.random() < 0.2):
            return LEAVE  # an explicit leave (when the leader is about to leave by itself, it refuses this one)
        if rng.random() < 0.03:
            return LEAVE if not cs.voters_outgoing else v2((ADD, self.new_id()))  # invalid: refused
        # Like etcd's cluster membership, the operator never reuses the id of a removed server (the leader's view may
        # be stale and still list one).
        voters = [i for i in cs.voters if i not in self.removed]
        learners = [i for i in cs.learners if i not in self.removed]
        picks: list[tuple[ConfChangeType.ValueType, int]] = []
        n_changes = rng.choice([2, 2, 3]) if rng.random() < self.cfg.joint_share else 1
        for _ in range(n_changes):
            options = []
            if len(members_of(cs)) + len(picks) < 8:
                options += [(LEARNER, self.new_id), (ADD, self.new_id)]
            if learners:
                options.append((ADD, lambda: rng.choice(learners)))  # promote
            if len(voters) > 1:
                options += [(REMOVE, lambda: rng.choice(voters)), (LEARNER, lambda: rng.choice(voters))]  # demote
            if learners:
                options.append((REMOVE, lambda: rng.choice(learners)))
            t, pick = rng.choice(options)
            picks.append((t, pick()))
        if len(picks) == 1 and rng.random() < 0.5:
            return ConfChange(type=picks[0][0], node_id=picks[0][1])
        return v2(*picks, transition=rng.choice([AUTO, AUTO, IMPLICIT, EXPLICIT]))

    def on_conf_change(self, index: int, cs: ConfState) -> None:
        """A node applied the configuration change at ``index``. Every node must reach the same configuration
        there; the first to apply it starts the servers it adds and stops those no longer in the configuration."""
        key = conf_key(cs)
        seen = self.conf_at.setdefault(index, key)
        if seen != key:
            raise SafetyViolation(f"the change at {index} led to {key} on one node and {seen} on another")
        self.conf_changes.add(index)
        if index <= self.last_conf_index:
            self.retire_removed()
            return
        prev, self.current_conf, self.last_conf_index = self.current_conf, cs, index
        stats = self.stats
        if cs.voters_outgoing and not prev.voters_outgoing:
            stats["joint_entered"] += 1
        if prev.voters_outgoing and not cs.voters_outgoing:
            stats["joint_left"] += 1
            stats["auto_leaves"] += prev.auto_leave
        stats["learners_added"] += len(set(cs.learners) - members_of(prev))
        stats["learners_promoted"] += len(set(cs.voters) & set(prev.learners))
        members = members_of(cs)
        for nid in sorted(members):
            if nid not in self.nodes:
                self.nodes[nid] = SimNode(self, nid, joiner=True)
        if index > self.cfg.nodes:  # past the bootstrap changes, which add the initial members one by one
            for nid in self.nodes:
                if nid not in members and nid not in self.retired:
                    self.leaving.setdefault(nid, index)
                    self.removed.add(nid)
        self.retire_removed()

    def retire_removed(self) -> None:
        """Shut down the servers removed from the configuration once a majority of the configuration that removed
        them has applied the change: those can elect a leader without them. (Stopping a removed server as soon as
        the change commits could leave the others waiting for its vote: they still work with the old
        configuration until they learn of the commit.)"""
        for nid, index in sorted(self.leaving.items()):
            voters = self.conf_at[index][0]
            done = sum(1 for v in voters if v in self.nodes and self.nodes[v].applied >= index)
            if done * 2 > len(voters):
                del self.leaving[nid]
                self.retired.add(nid)
                node = self.nodes[nid]
                if node.rn is not None and not node.applying:
                    node.crash()

    def schedule(self, at: int, kind: int, frm: int = 0, to: int = 0, data: bytes = b"") -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, kind, frm, to, data))

    def crash(self) -> None:
        node = self.nodes[self.rng.choice(self.members())]
        if node.rn is not None:
            node.crash()
            node.restart_at = self.now + self.rng.randint(*self.cfg.restart_after)
            self.stats["crashes"] += 1

    def tick_all(self) -> None:
        """One tick of the fake clock: faults, restarts, node ticks, and the events of the coming tick."""
        rng, cfg, now = self.rng, self.cfg, self.now
        if self.leaving:
            self.retire_removed()  # servers that caught up through a snapshot do not apply the change itself
        if self.faults:
            if self.blocked and now >= self.partition_until:
                self.blocked = set()
            elif not self.blocked and rng.random() < cfg.partition_rate * UNITS_PER_TICK:
                self.partition()
            for _ in range(UNITS_PER_TICK):
                if rng.random() < cfg.crash_rate:
                    self.schedule(now + rng.randrange(UNITS_PER_TICK), CRASH)
                if rng.random() < cfg.propose_rate:
                    self.schedule(now + rng.randrange(UNITS_PER_TICK), PROPOSE)
                if rng.random() < cfg.read_rate:
                    self.schedule(now + rng.randrange(UNITS_PER_TICK), READ)
                if rng.random() < cfg.transfer_rate:
                    self.schedule(now + rng.randrange(UNITS_PER_TICK), TRANSFER)
                if rng.random() < cfg.membership_rate:
                    self.schedule(now + rng.randrange(UNITS_PER_TICK), MEMBERSHIP)
        for node in list(self.nodes.values()):
            if node.rn is None and node.id not in self.retired and (not self.faults or now >= (node.restart_at or 0)):
                node.start()
                node.handle_ready()
        for node in list(self.nodes.values()):
            # Clocks drift: a node sometimes misses a tick.
            if node.rn is not None and (not self.faults or rng.random() < 0.95):
                node.rn.tick()
                node.handle_ready()

    def run_until(self, end: int) -> None:
        """Process events in time order up to ``end``, ticking every UNITS_PER_TICK."""
        queue = self.queue
        while True:
            next_tick = (self.now // UNITS_PER_TICK + 1) * UNITS_PER_TICK
            if queue and queue[0][0] < next_tick:
                at, _, kind, frm, to, data = heapq.heappop(queue)
                self.now = max(self.now, at)
                if kind == DELIVER:
                    self.deliver(frm, to, data)
                elif kind == SAVE:
                    node = self.nodes[to]
                    if node.rn is not None and node.incarnation == frm and node.pending is not None:
                        node.save_completed()
                elif not self.faults:
                    pass  # faults and load scheduled before healing are dropped
                elif kind == PROPOSE:
                    self.propose()
                elif kind == READ:
                    self.read()
                elif kind == TRANSFER:
                    self.transfer()
                elif kind == MEMBERSHIP:
                    self.change_membership()
                else:
                    self.crash()
                continue
            if next_tick > end:
                return
            self.now = next_tick
            self.tick_all()

    # --- observations and checks -----------------------------------------------------------------------------
    def record_applied(self, id_: int, index: int, term: int, data: bytes) -> None:
        seen = self.committed.setdefault(index, (term, data))
        if seen != (term, data):
            raise SafetyViolation(f"node {id_} applied {(term, data)} at {index}, another applied {seen}")

    def record_vote(self, id_: int, term: int, vote: int) -> None:
        """A node votes at most once per term, across restarts."""
        if not vote:
            return
        prev = self.votes.setdefault((id_, term), vote)
        if prev != vote:
            raise SafetyViolation(f"node {id_} voted for {prev} and then {vote} in term {term}")

    def check_election(self, r: Raft) -> None:
        """A node about to lead its term holds the saved votes of a majority of each half of its configuration."""
        m = r.prs.membership
        granted = {v for v in m.voter_ids() if self.votes.get((v, r.term)) == r.id or (v == r.id and r.vote == r.id)}
        for half in (m.voters, m.voters_outgoing):
            if half and len(granted & half) * 2 <= len(half):
                raise SafetyViolation(f"{r.id} leads term {r.term} with the votes of {sorted(granted)} in {m}")
        self.stats["joint_elections"] += m.joint

    def check_commit(self, r: Raft) -> None:
        """A leader's commit index is saved on a majority of each half of its configuration (a node whose disk is
        closed by a crash may hold it: it counts as unknown, not as missing)."""
        index = r.raft_log.committed
        term = r.raft_log.term(index)
        m = r.prs.membership
        for half in (m.voters, m.voters_outgoing):
            held = {v for v in half if self.holds(v, index, term) is not False}
            if half and len(held) * 2 <= len(half):
                raise SafetyViolation(f"{r.id} committed {index} (term {term}) held by {sorted(held)} only in {m}")
        self.stats["joint_commits"] += m.joint

    def holds(self, id_: int, index: int, term: int | None) -> bool | None:
        node = self.nodes.get(id_)
        if node is None:
            return False
        if self.cfg.disk_dir is not None and node.disk is None:
            return None
        try:
            return node.storage.term(index) == term
        except CompactedError:
            return True  # compacted away: applied there, so committed
        except UnavailableError:
            return False

    def observe(self, node: SimNode) -> None:
        """At every step: the node's configuration is the one its applied changes (or the snapshot it is about to
        apply) lead to, and there is one leader per term; leader completeness when a node first leads a term."""
        assert node.rn is not None
        r = node.rn.raft
        if r.prs.membership != node.ref_membership:
            pending_snap = r.raft_log.unstable.snapshot
            if pending_snap is None or r.prs.membership != Membership.from_conf_state(pending_snap.metadata.conf_state):
                raise SafetyViolation(f"node {r.id} works with {r.prs.membership} but applied {node.ref_membership}")
        if r.state is not StateType.LEADER:
            return
        other = self.leaders.setdefault(r.term, r.id)
        if other != r.id:
            raise SafetyViolation(f"two leaders in term {r.term}: {other} and {r.id}")
        if getattr(r, "_sim_checked_term", None) == r.term:
            return
        r._sim_checked_term = r.term  # type: ignore[attr-defined]
        log = r.raft_log
        first = log.first_index()
        for index, (term, _) in self.committed.items():
            if index >= first - 1 and log.term(index) != term:
                raise SafetyViolation(
                    f"leader {r.id} of term {r.term} lacks committed entry {index} (term {term}): has {log.term(index)}"
                )

    def check_sm_prefix(self, node: SimNode) -> None:
        """A restored state machine is exactly the committed normal entries up to its index."""
        want = [
            (i, d)
            for i, (_, d) in sorted(self.committed.items())
            if i <= node.applied and d and i not in self.conf_changes
        ]
        if node.sm != want:
            raise SafetyViolation(f"node {node.id} restored a state machine that is not the committed prefix")

    def check_log_matching(self) -> None:
        live = [n for n in self.nodes.values() if n.rn is not None]
        logs = {}
        for n in live:
            assert n.rn is not None
            log = n.rn.raft.raft_log
            first = log.first_index()
            logs[n.id] = (first, {e.index: (e.term, e.data) for e in log.slice(first, log.last_index() + 1, None)})
        for a in live:
            for b in live:
                if a.id >= b.id:
                    continue
                _fa, la = logs[a.id]
                _fb, lb = logs[b.id]
                common = sorted(set(la) & set(lb), reverse=True)
                matched = False
                for i in common:
                    if matched:
                        if la[i] != lb[i]:
                            raise SafetyViolation(f"logs of {a.id} and {b.id} differ at {i} below a matching entry")
                    elif la[i][0] == lb[i][0]:
                        matched = True
                        if la[i] != lb[i]:
                            raise SafetyViolation(f"logs of {a.id} and {b.id} hold different entries at {i}")

    def check_state_machines(self) -> None:
        """Applied sequences are prefixes of one another and every acknowledged proposal is everywhere."""
        longest: list[tuple[int, bytes]] = []
        for n in self.nodes.values():
            if len(n.sm) > len(longest):
                longest = n.sm
        for n in self.nodes.values():
            # A compacted state machine keeps its whole history, so the sequences compare from the start.
            if n.sm != longest[: len(n.sm)]:
                raise SafetyViolation(f"state machine of node {n.id} is not a prefix of the longest one")
        everywhere = set.intersection(*(set(d for _, d in self.nodes[i].sm) for i in self.members()))
        lost = self.acked - everywhere
        if lost:
            raise SafetyViolation(f"acknowledged proposals not applied everywhere: {sorted(lost)[:5]}")
        unknown = {d for _, d in longest} - set(self.proposer)
        if unknown:
            raise SafetyViolation(f"applied entries that nobody proposed: {sorted(unknown)[:5]}")

    # --- running ---------------------------------------------------------------------------------------------
    def leader(self) -> SimNode | None:
        best = None
        for n in self.nodes.values():
            if (
                n.rn is not None
                and n.rn.raft.state is StateType.LEADER
                and (
                    best is None or n.rn.raft.term > best.rn.raft.term  # type: ignore[union-attr]
                )
            ):
                best = n
        return best

    def converged(self, marker: bytes) -> bool:
        lead = self.leader()
        if lead is None or marker not in self.acked:
            return False
        assert lead.rn is not None
        commit = lead.rn.raft.raft_log.committed
        return all(self.nodes[i].rn is not None and self.nodes[i].applied == commit for i in self.members())

    def run(self) -> None:
        cfg = self.cfg
        for t in range(0, cfg.ticks * UNITS_PER_TICK, 50 * UNITS_PER_TICK):
            self.run_until(t + 50 * UNITS_PER_TICK)
            self.check_log_matching()
        # Heal: no more faults; every node restarts; the cluster must commit a last proposal everywhere.
        self.faults = False
        self.blocked = set()
        marker, proposed_at = b"", 0
        deadline = self.now + cfg.settle_ticks * UNITS_PER_TICK
        while self.now < deadline:
            self.run_until(self.now + UNITS_PER_TICK)
            if marker and self.converged(marker):
                break
            lead = self.leader()
            if (
                lead is not None
                and lead.rn is not None
                and (not marker or self.now - proposed_at > 100 * UNITS_PER_TICK)
            ):
                # A proposal to a leader that is about to be deposed may be lost: propose again after a while.
                self.proposals += 1
                marker, proposed_at = b"final.%d" % self.proposals, self.now
                self.proposer[marker] = lead.id
                with contextlib.suppress(ProposalDroppedError):  # e.g. during a leader transfer
                    lead.rn.propose(marker)
                lead.handle_ready()
        else:
            raise SafetyViolation(f"no convergence within {cfg.settle_ticks} ticks after healing: {self.describe()}")
        self.check_log_matching()
        self.check_state_machines()

    def close(self) -> None:
        for n in self.nodes.values():
            if n.disk is not None:
                n.disk.close()
                n.disk = None

    def describe(self) -> str:
        parts = []
        for n in self.nodes.values():
            parts.append(f"{n.id}: applied={n.applied} " + (repr(n.rn.status()) if n.rn else "down"))
        return f"seed={self.cfg.seed} now={self.now} " + "; ".join(parts)


def run_seed(seed: int, disk_dir: Path | None = None, **overrides: object) -> Sim:
    cfg = dataclasses.replace(SimConfig.random(seed, disk_dir), **overrides)  # type: ignore[arg-type]
    sim = Sim(cfg)
    try:
        sim.run()
    finally:
        sim.close()
    kind = "DiskStorage" if disk_dir is not None else "MemoryStorage"
    SEEDS_PASSED[kind] = SEEDS_PASSED.get(kind, 0) + 1
    return sim
