"""A synchronous cluster of RawNodes on MemoryStorage for membership tests: every Ready is saved, sent, applied
(configuration changes through ``apply_conf_change``, as an application does) and advanced; nodes can be cut off,
restarted from their storage, and snapshotted with the configuration of the index they snapshot."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from aiowal.raft import Config, MemoryStorage, RawNode, StateType, decode_conf_change
from aiowal.raft.messages import msg_from
from aiowal.raftpb import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfChangeV2,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
)

ADD, REMOVE, LEARNER, UPDATE = (
    ConfChangeType.ConfChangeAddNode,
    ConfChangeType.ConfChangeRemoveNode,
    ConfChangeType.ConfChangeAddLearnerNode,
    ConfChangeType.ConfChangeUpdateNode,
)
AUTO, IMPLICIT, EXPLICIT = (
    ConfChangeTransition.ConfChangeTransitionAuto,
    ConfChangeTransition.ConfChangeTransitionJointImplicit,
    ConfChangeTransition.ConfChangeTransitionJointExplicit,
)
LEAVE = ConfChangeV2()
"""The empty ConfChangeV2: leave the joint configuration."""


def v2(
    *changes: tuple[ConfChangeType.ValueType, int], transition: ConfChangeTransition.ValueType = AUTO
) -> ConfChangeV2:
    """A ConfChangeV2 of (type, node id) changes."""
    return ConfChangeV2(transition=transition, changes=[ConfChangeSingle(type=t, node_id=n) for t, n in changes])


class Cluster:
    def __init__(
        self,
        voters: Iterable[int],
        learners: Iterable[int] = (),
        *,
        pre_vote: bool = False,
        check_quorum: bool = False,
        election_tick: int = 10,
    ) -> None:
        self.voters, self.learners = tuple(voters), tuple(learners)
        self.pre_vote, self.check_quorum, self.election_tick = pre_vote, check_quorum, election_tick
        self.stores: dict[int, MemoryStorage] = {}
        self.nodes: dict[int, RawNode] = {}
        # Per node: (index, configuration in force from that index on), from its applied changes and snapshots.
        self.confs: dict[int, list[tuple[int, ConfState]]] = {}
        self.applied: dict[int, list[Entry]] = {}
        self.isolated: set[int] = set()
        self.cut_links: set[tuple[int, int]] = set()
        self.dropped: list[Message] = []
        self.drop_if: Callable[[Message], bool] | None = None
        for i in (*self.voters, *self.learners):
            self.start(i, bootstrap=True)
        self.pump()  # apply the bootstrap entries: a node campaigns only once its configuration is applied

    # --- nodes -----------------------------------------------------------------------------------------------
    def start(self, id_: int, *, bootstrap: bool = False) -> RawNode:
        """Start ``id_`` from its storage (a fresh one if it has none): a bootstrap member knows the initial
        configuration, any other node learns it from the leader."""
        st = self.stores.get(id_)
        if st is None:
            st = self.stores[id_] = MemoryStorage()
            if bootstrap:
                # As etcd bootstraps: the initial members are changes 1..n committed in term 1, so that a node added
                # later learns them from the log.
                ents = [
                    Entry(term=1, index=i, type=EntryType.EntryConfChange, data=cc.SerializeToString())
                    for i, cc in enumerate(self.bootstrap_changes(), start=1)
                ]
                st.save(HardState(term=1, commit=len(ents)), ents)
        _, cs = st.initial_state()
        has_conf = bool(cs.voters or cs.learners)
        snap = st.snapshot()
        rn = RawNode(
            Config(
                id=id_,
                storage=st,
                rng=random.Random(id_),
                voters=self.voters if bootstrap and not has_conf else (),
                learners=self.learners if bootstrap and not has_conf else (),
                election_tick=self.election_tick,
                applied=snap.metadata.index,
                pre_vote=self.pre_vote,
                check_quorum=self.check_quorum,
            )
        )
        self.nodes[id_] = rn
        self.confs[id_] = [(snap.metadata.index, rn.conf_state())]
        self.applied[id_] = []
        return rn

    def bootstrap_changes(self) -> list[ConfChange]:
        return [ConfChange(type=ADD, node_id=i) for i in self.voters] + [
            ConfChange(type=LEARNER, node_id=i) for i in self.learners
        ]

    def restart(self, id_: int) -> RawNode:
        """Crash and restart ``id_``: its storage survives, everything else is rebuilt from it."""
        return self.start(id_)

    def snapshot(self, id_: int, index: int) -> None:
        """Compact ``id_``'s log up to ``index`` (applied there) with the configuration in force at ``index``."""
        conf = [cs for i, cs in self.confs[id_] if i <= index][-1]
        self.stores[id_].create_snapshot(index, conf, b"")

    # --- network ---------------------------------------------------------------------------------------------
    def isolate(self, id_: int) -> None:
        self.isolated.add(id_)

    def cut(self, a: int, b: int) -> None:
        self.cut_links |= {(a, b), (b, a)}

    def heal(self) -> None:
        self.isolated.clear()
        self.cut_links.clear()

    def deliver(self, m: Message) -> None:
        frm = msg_from(m)
        if (
            m.to not in self.nodes
            or frm in self.isolated
            or m.to in self.isolated
            or (frm, m.to) in self.cut_links
            or (self.drop_if is not None and self.drop_if(m))
        ):
            self.dropped.append(m)
            return
        self.nodes[m.to].step(m)

    def pump(self, limit: int = 10_000) -> None:
        """Handle Readies and deliver messages until every node is quiet."""
        for _ in range(limit):
            busy = False
            for id_, rn in list(self.nodes.items()):
                if not rn.has_ready():
                    continue
                busy = True
                rd = rn.ready()
                self.stores[id_].save(rd.hard_state, rd.entries, rd.snapshot)
                if rd.snapshot is not None:
                    self.confs[id_].append((rd.snapshot.metadata.index, rd.snapshot.metadata.conf_state))
                for e in rd.committed_entries:
                    self.applied[id_].append(e)
                    if e.type in (EntryType.EntryConfChange, EntryType.EntryConfChangeV2):
                        self.confs[id_].append((e.index, rn.apply_conf_change(decode_conf_change(e))))
                rn.advance(rd)
                for m in rd.messages:
                    self.deliver(m)
            if not busy:
                return
        raise AssertionError("the cluster did not quiesce")

    def tick(self, n: int = 1, ids: Iterable[int] | None = None) -> None:
        for _ in range(n):
            for id_ in list(ids) if ids is not None else list(self.nodes):
                self.nodes[id_].tick()
            self.pump()

    # --- driving ---------------------------------------------------------------------------------------------
    def elect(self, id_: int) -> None:
        self.nodes[id_].campaign()
        self.pump()
        assert self.nodes[id_].raft.state is StateType.LEADER

    def leader(self) -> int | None:
        leads = [i for i, rn in self.nodes.items() if rn.raft.state is StateType.LEADER and i not in self.isolated]
        return max(leads, key=lambda i: self.nodes[i].raft.term) if leads else None

    def propose(self, id_: int, data: bytes) -> None:
        self.nodes[id_].propose(data)
        self.pump()

    def change(self, id_: int, cc: ConfChange | ConfChangeV2) -> None:
        self.nodes[id_].propose_conf_change(cc)
        self.pump()

    def conf(self, id_: int) -> ConfState:
        return self.nodes[id_].conf_state()

    def applied_data(self, id_: int) -> list[bytes]:
        return [e.data for e in self.applied[id_] if e.type == EntryType.EntryNormal and e.data]
