"""Helpers for the Raft unit tests: build nodes on MemoryStorage and wire them through a synchronous network
(etcd raft's ``newNetwork``): a message sent is delivered before ``send`` returns, unless dropped."""

from __future__ import annotations

import random
from collections.abc import Iterable

from aiowal.raft import NONE, Config, MemoryStorage, Raft
from aiowal.raft.messages import MT, msg_from, new_message
from aiowal.raftpb import Entry, HardState, Message, MessageType


def ent(index: int, term: int, data: bytes = b"") -> Entry:
    return Entry(index=index, term=term, data=data)


def storage_with(ents: Iterable[tuple[int, int]] = (), hs: HardState | None = None) -> MemoryStorage:
    """A MemoryStorage holding entries given as (index, term), and optionally a hard state."""
    st = MemoryStorage()
    st.save(hs, [ent(i, t) for i, t in ents])
    return st


def new_raft(
    id_: int,
    peers: Iterable[int],
    election: int = 10,
    heartbeat: int = 1,
    storage: MemoryStorage | None = None,
    *,
    pre_vote: bool = False,
    check_quorum: bool = False,
    seed: int | None = None,
    max_inflight: int = 256,
    max_size_per_msg: int | None = 1 << 20,
) -> Raft:
    st = storage if storage is not None else MemoryStorage()
    _, cs = st.initial_state()
    voters = () if list(cs.voters) else tuple(peers)
    return Raft(
        Config(
            id=id_,
            storage=st,
            rng=random.Random(id_ if seed is None else seed),
            voters=voters,
            election_tick=election,
            heartbeat_tick=heartbeat,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_inflight_msgs=max_inflight,
            max_size_per_msg=max_size_per_msg,
        )
    )


def persist(r: Raft) -> None:
    """Save r's unstable snapshot and entries to its MemoryStorage, as the Ready loop would, and tell r."""
    log = r.raft_log
    st = log.storage
    assert isinstance(st, MemoryStorage)
    snap, ents = log.unstable.snapshot, log.unstable_entries()
    st.save(None, ents, snap)
    if snap is not None:
        log.stable_snap_to(snap.metadata.index)
    if ents:
        r.stable_to(ents[-1].index, ents[-1].term)


def read_messages(r: Raft) -> list[Message]:
    msgs = r.msgs
    r.msgs = []
    return msgs


def msg(t: MessageType.ValueType, frm: int, to: int, term: int = 0, **fields: object) -> Message:
    return new_message(t, to, frm, term, **fields)


def hup(r: Raft) -> None:
    r.step(msg(MT.MsgHup, r.id, r.id))


def log_ents(r: Raft) -> list[tuple[int, int, bytes]]:
    """(index, term, data) of every entry in r's log past its snapshot."""
    log = r.raft_log
    return [(e.index, e.term, e.data) for e in log.slice(log.first_index(), log.last_index() + 1, None)]


class Network:
    """A synchronous network of Rafts; ``None`` members are black holes (etcd's ``nopStepper``)."""

    def __init__(self, *nodes: Raft | None, pre_vote: bool = False, check_quorum: bool = False) -> None:
        n = len(nodes)
        ids = list(range(1, n + 1))
        self.peers: dict[int, Raft | None] = {}
        for i, node in enumerate(nodes, start=1):
            if node is None:
                self.peers[i] = None
            else:
                self.peers[i] = node
        self.ids = ids
        self.drops: dict[tuple[int, int], float] = {}
        self.ignored: set[int] = set()
        self.rng = random.Random(0)

    @classmethod
    def of_size(cls, n: int, *, pre_vote: bool = False, check_quorum: bool = False, election: int = 10) -> Network:
        ids = list(range(1, n + 1))
        return cls(
            *(new_raft(i, ids, election, 1, pre_vote=pre_vote, check_quorum=check_quorum) for i in ids),
        )

    def raft(self, id_: int) -> Raft:
        r = self.peers[id_]
        assert r is not None
        return r

    def send(self, *msgs: Message) -> None:
        queue = list(msgs)
        while queue:
            m = queue.pop(0)
            p = self.peers.get(m.to)
            if p is None:
                continue
            p.step(m)
            persist(p)
            queue.extend(self._filter(read_messages(p)))

    def _filter(self, msgs: list[Message]) -> list[Message]:
        out = []
        for m in msgs:
            if m.type in self.ignored:
                continue
            if m.type == MT.MsgHup:
                raise AssertionError("MsgHup is never sent")
            p = self.drops.get((msg_from(m), m.to), 0.0)
            if p and self.rng.random() < p:
                continue
            out.append(m)
        return out

    def campaign(self, id_: int) -> None:
        self.send(msg(MT.MsgHup, id_, id_))

    def propose(self, id_: int, data: bytes = b"somedata") -> None:
        self.send(msg(MT.MsgProp, id_, id_, entries=[Entry(data=data)]))

    def drop(self, frm: int, to: int, p: float) -> None:
        self.drops[(frm, to)] = p

    def cut(self, a: int, b: int) -> None:
        self.drop(a, b, 2.0)
        self.drop(b, a, 2.0)

    def isolate(self, id_: int) -> None:
        for other in self.ids:
            if other != id_:
                self.cut(id_, other)

    def ignore(self, t: MessageType.ValueType) -> None:
        self.ignored.add(t)

    def recover(self) -> None:
        self.drops = {}
        self.ignored = set()


__all__ = ["NONE", "Network", "ent", "hup", "log_ents", "msg", "new_raft", "persist", "read_messages", "storage_with"]
