"""Workloads for the crash tests, a plain model of what they store, and the invariants a recovered directory must
satisfy with respect to the last acknowledged state (A) and the state the operation in flight was heading to (B).

The invariants of a directory recovered from a crash:

- the directory opens (``CorruptionError`` never happens for states our own protocol produces) and reads;
- every acknowledged entry is present with its exact data, unless the operation in flight removes it legitimately
  (an overwrite from its first index, a snapshot at or past it);
- every readable entry has exactly the data written for it in A or in B: nothing is garbage;
- the log is contiguous, and from the overwrite point on it holds a prefix of the old entries or a prefix of the new
  ones, never old entries mixed with new ones; after a snapshot that came through ``save`` nothing of the old log;
- the snapshot is A's or B's, its index/term fields agree with the stored proto, and ``term(snapshot index)`` is its
  term;
- the HardState is one that may be on disk (commit-only changes are not synced by themselves), its commit does not
  exceed the last index, and recovery never had to clamp it;
- the u64 fields are A's or B's; the only repair recovery reports is cutting a torn tail.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiowal import DiskStorage, MetaInfo
from aiowal.fs import FS
from aiowal.logfile import LogFile
from aiowal.raftpb import ConfState, Entry, HardState, Snapshot, SnapshotMetadata

HS = tuple[int, int, int]
UINTS = (MetaInfo.RAFT_ID, MetaInfo.GROUP_ID, MetaInfo.CHECKPOINT_INDEX)


@dataclass(frozen=True)
class Ent:
    term: int
    type: int
    data: bytes

    def short(self) -> str:
        return f"(t{self.term} y{self.type} {len(self.data)}B {self.data[:6].hex()})"


@dataclass(frozen=True)
class Snap:
    index: int = 0
    term: int = 0
    data: bytes = b""
    voters: tuple[int, ...] = ()


@dataclass(frozen=True)
class Op:
    kind: str  # open | save | create_snapshot | truncate | set_uint | sync | reopen | close
    entries: tuple[tuple[int, Ent], ...] = ()
    hs: HS | None = None
    snap: Snap | None = None
    index: int = 0
    info: int = 0
    value: int = 0

    def describe(self) -> str:
        parts = [self.kind]
        if self.entries:
            parts.append(f"entries {self.entries[0][0]}..{self.entries[-1][0]} t{self.entries[0][1].term}")
        if self.snap is not None:
            parts.append(f"snapshot {self.snap.index}/t{self.snap.term}")
        if self.hs is not None:
            parts.append(f"hs {self.hs}")
        if self.kind in ("create_snapshot", "truncate"):
            parts.append(f"at {self.index}")
        if self.kind == "set_uint":
            parts.append(f"{MetaInfo(self.info).name}={self.value}")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        if self.entries:
            d["entries"] = [[i, e.term, e.type, e.data.hex()] for i, e in self.entries]
        if self.hs is not None:
            d["hs"] = list(self.hs)
        if self.snap is not None:
            d["snap"] = [self.snap.index, self.snap.term, self.snap.data.hex(), list(self.snap.voters)]
        if self.kind in ("create_snapshot", "truncate"):
            d["index"] = self.index
        if self.kind == "set_uint":
            d["info"], d["value"] = self.info, self.value
        if self.kind == "create_snapshot" and self.snap is not None:
            d["snap"] = [self.snap.index, self.snap.term, self.snap.data.hex(), list(self.snap.voters)]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Op:
        ents = tuple((i, Ent(t, y, bytes.fromhex(h))) for i, t, y, h in d.get("entries", ()))
        hs = tuple(d["hs"]) if "hs" in d else None
        snap = None
        if "snap" in d:
            i, t, h, v = d["snap"]
            snap = Snap(i, t, bytes.fromhex(h), tuple(v))
        return cls(
            d["kind"],
            ents,
            hs,  # type: ignore[arg-type]
            snap,
            d.get("index", 0),
            d.get("info", 0),
            d.get("value", 0),
        )


@dataclass(frozen=True)
class Model:
    """What the storage holds after a sequence of acknowledged operations."""

    log: dict[int, Ent] = field(default_factory=dict)
    snap: Snap = Snap()
    hs: HS = (0, 0, 0)
    hs_allowed: tuple[HS, ...] = ((0, 0, 0),)  # HardStates a crash may show (the last synced one and later ones)
    uints: tuple[int, int, int] = (0, 0, 0)
    term: int = 1  # the Raft term new entries get (for generating operations)

    def first_index(self) -> int:
        if self.snap.index:
            return self.snap.index + 1
        return min(self.log) if self.log else 1

    def last_index(self) -> int:
        return max(self.log) if self.log else self.snap.index

    def last_term(self) -> int:
        return self.log[max(self.log)].term if self.log else self.snap.term

    def apply(self, op: Op) -> Model:
        log = dict(self.log)
        snap = self.snap
        hs = self.hs
        allowed = list(self.hs_allowed)
        uints = list(self.uints)
        term = self.term
        if op.kind == "save":
            if op.snap is not None:
                snap = op.snap
                log = {}
                allowed = [hs]  # the rewritten wal.meta holds the current HardState, synced
                term = max(term, snap.term)
            ents = [(i, e) for i, e in op.entries if i > snap.index]
            if ents:
                x = ents[0][0]
                for k in [k for k in log if k >= x]:
                    del log[k]
                log.update(ents)
                term = max(term, ents[-1][1].term)
            if op.hs is not None and any(op.hs) and op.hs != hs:
                allowed = [op.hs] if op.hs[:2] != hs[:2] else [*allowed, op.hs]
                hs = op.hs
                term = max(term, hs[0])
        elif op.kind == "create_snapshot":
            assert op.snap is not None
            snap = op.snap
            log = {k: v for k, v in log.items() if k > snap.index}
            allowed = [hs]
        elif op.kind == "truncate":
            log = {k: (Ent(v.term, 0, b"") if k < op.index and v.type == 0 else v) for k, v in log.items()}
        elif op.kind == "set_uint":
            uints[UINTS.index(MetaInfo(op.info))] = op.value
            allowed = [hs]
        elif op.kind in ("reopen", "close", "open", "sync"):
            allowed = [hs]
        else:
            raise AssertionError(op.kind)
        return Model(log, snap, hs, tuple(allowed), (uints[0], uints[1], uints[2]), term)

    def overwrite_point(self, op: Op) -> int | None:
        """The index from which ``op`` may replace this model's log (0: all of it), or None."""
        if op.kind != "save":
            return None
        if op.snap is not None:
            return 0
        floor = self.snap.index
        ents = [i for i, _ in op.entries if i > floor]
        if ents and ents[0] <= self.last_index():
            return ents[0]
        return None


# --- generating operations ------------------------------------------------------------------------------------
def gen_data(rng: random.Random, big: bool = False) -> bytes:
    r = rng.random()
    if r < 0.08:
        return b""
    if r < 0.12:
        return bytes(rng.randint(1, 700))
    if r < 0.55:
        return rng.randbytes(rng.randint(1, 120))
    if r < 0.88:
        return rng.randbytes(rng.randint(120, 1500))
    return rng.randbytes(rng.randint(1500, 60_000 if big else 9000))


def _entries(rng: random.Random, start: int, k: int, term: int, big: bool) -> tuple[tuple[int, Ent], ...]:
    return tuple((start + j, Ent(term, 1 if rng.random() < 0.08 else 0, gen_data(rng, big))) for j in range(k))


def gen_op(m: Model, rng: random.Random, big: bool = False, syncs: bool = False) -> Op:
    """A random operation that a Raft node could issue in state ``m`` (with ``syncs``, some are ``sync()`` calls,
    as a node that runs without ``hard_sync`` makes its writes durable now and then)."""
    if syncs and rng.random() < 0.06:
        return Op("sync")
    last, si = m.last_index(), m.snap.index
    term, vote, commit = m.hs
    term = max(term, m.term, 1)
    first = m.first_index()
    r = rng.random()
    if r < 0.16 and last > max(commit, si):  # overwrite an uncommitted tail with a new term
        x = rng.randint(max(commit, si) + 1, last)
        ents = _entries(rng, x, rng.randint(1, 10), term + 1, big)
        hs = (term + 1, rng.choice((0, 1, 2, 3)), commit) if rng.random() < 0.7 else None
        return Op("save", ents, hs)
    if r < 0.23:  # a snapshot from the leader, through save, maybe with entries after it
        idx = rng.randint(max(commit, si) + 1, last + 6)
        sterm = max(term, m.last_term()) + rng.choice((0, 0, 1))
        snap = Snap(idx, sterm, rng.randbytes(rng.randint(1, 2000)), tuple(sorted(rng.sample((1, 2, 3, 4), 3))))
        k = rng.choice((0, 0, 1, 3, 10))
        ents = _entries(rng, idx + 1, k, sterm, big)
        hs = (sterm, vote, idx + rng.randint(0, k)) if rng.random() < 0.9 else None
        return Op("save", ents, hs, snap)
    if r < 0.31 and commit >= first and commit > si:  # compact up to an applied index
        i = rng.randint(max(first, si + 1), commit)
        data = rng.randbytes(rng.randint(1, 3000))
        return Op("create_snapshot", snap=Snap(i, m.log[i].term, data, (1, 2, 3)), index=i)
    if r < 0.38:
        info = rng.choice((0, 1, 2))
        value = rng.getrandbits(64) if info != 2 else rng.randint(0, max(commit, 1))
        return Op("set_uint", info=int(UINTS[info]), value=value)
    if r < 0.46:  # HardState only: a new term (synced) or a commit advance (not synced by itself)
        if rng.random() < 0.45:
            return Op("save", hs=(term + 1, rng.choice((0, 1, 2, 3)), commit))
        return Op("save", hs=(term, vote, rng.randint(commit, max(commit, last))))
    if r < 0.50 and commit >= first:
        return Op("truncate", index=rng.randint(first, commit + 1))
    if r < 0.55:
        return Op("reopen")
    k = rng.choice((1, 1, 2, 3, 4, 6, 9, 14, 25)) if r < 0.95 else rng.randint(20, 40)
    ents = _entries(rng, last + 1, k, max(term, m.last_term()), big)
    hs = (max(term, m.last_term()), vote, rng.randint(commit, last + k)) if rng.random() < 0.75 else None
    return Op("save", ents, hs)


# --- running operations ---------------------------------------------------------------------------------------
def to_entries(op: Op) -> list[Entry]:
    out = []
    for i, e in op.entries:
        ent = Entry(term=e.term, index=i, type=e.type)
        if e.data:
            ent.data = e.data
        out.append(ent)
    return out


def to_snapshot(s: Snap) -> Snapshot:
    return Snapshot(
        data=s.data, metadata=SnapshotMetadata(conf_state=ConfState(voters=list(s.voters)), index=s.index, term=s.term)
    )


def execute(
    st: DiskStorage, op: Op, directory: str, key: bytes | None, fs: FS | None, hard_sync: bool = True
) -> DiskStorage:
    """Run ``op`` on ``st``; returns the storage to use afterwards (a new one after a reopen)."""
    if op.kind == "save":
        hs = HardState(term=op.hs[0], vote=op.hs[1], commit=op.hs[2]) if op.hs is not None else None
        snap = to_snapshot(op.snap) if op.snap is not None else None
        st.save(hard_state=hs, entries=to_entries(op), snapshot=snap)
    elif op.kind == "create_snapshot":
        assert op.snap is not None
        st.create_snapshot(op.index, ConfState(voters=list(op.snap.voters)), op.snap.data)
    elif op.kind == "truncate":
        st.truncate_entries_until(op.index)
    elif op.kind == "set_uint":
        st.set_uint(MetaInfo(op.info), op.value)
    elif op.kind == "sync":
        st.sync()
    elif op.kind == "reopen":
        st.close()
        st = DiskStorage.open(directory, key=key, hard_sync=hard_sync, fs=fs)
    elif op.kind == "close":
        st.close()
    else:
        raise AssertionError(op.kind)
    return st


@contextlib.contextmanager
def small_files(max_entries: int) -> Iterator[None]:
    """Rotate log files every ``max_entries`` entries (instead of 30,000)."""
    old = LogFile.max_entries
    LogFile.max_entries = max_entries
    try:
        yield
    finally:
        LogFile.max_entries = old


@dataclass
class Run:
    ops: list[Op]
    models: list[Model]  # models[i]: before ops[i]; models[i + 1]: after it


def run_workload(
    directory: str, fs: Any, key: bytes | None, seed: int, n_ops: int, big: bool = False, hard_sync: bool = True
) -> Run:
    """Open a fresh storage through ``fs`` (marking each operation's begin and end in its trace) and run ``n_ops``
    random operations (with ``hard_sync`` by default; without it, ``sync()`` calls among them); the live storage is
    checked against the model after each."""
    rng = random.Random(seed)
    m = Model()
    ops = [Op("open")]
    models = [m, m]
    fs.mark("begin", 0)
    st = DiskStorage.open(directory, key=key, hard_sync=hard_sync, fs=fs)
    fs.mark("end", 0)
    try:
        for _ in range(n_ops):
            op = gen_op(m, rng, big, syncs=not hard_sync)
            fs.mark("begin", len(ops))
            st = execute(st, op, directory, key, fs, hard_sync)
            fs.mark("end", len(ops))
            m = m.apply(op)
            ops.append(op)
            models.append(m)
            problems = compare_exact(observe(st), m)
            assert not problems, f"live storage disagrees with the model after {op.describe()}: {problems}"
        fs.mark("begin", len(ops))
        st.close()
        fs.mark("end", len(ops))
        ops.append(Op("close"))
        models.append(m.apply(Op("close")))
    finally:
        st.close()
    return Run(ops, models)


# --- observing and checking -----------------------------------------------------------------------------------
@dataclass
class Observed:
    first: int
    last: int
    log: dict[int, Ent]
    snap: Snap
    snap_fields: tuple[int, int]
    hs: HS
    uints: tuple[int, int, int]
    repairs: list[str]
    problems: list[str]


def observe(st: DiskStorage) -> Observed:
    """Read everything a Raft node would read after a restart (structural problems go to ``problems``)."""
    problems: list[str] = []
    first, last = st.first_index(), st.last_index()
    log: dict[int, Ent] = {}
    if last >= first:
        ents = st.entries(first, last + 1)
        idx = [e.index for e in ents]
        if idx != list(range(first, last + 1)):
            problems.append(f"entries({first}, {last + 1}) returned indexes {idx[:5]}...{idx[-5:]}: not contiguous")
        for e in ents:
            log[e.index] = Ent(e.term, e.type, e.data)
        for i in range(first, last + 1):
            if i in log and st.term(i) != log[i].term:
                problems.append(f"term({i}) = {st.term(i)} but entries says {log[i].term}")
    elif last + 1 != first:
        problems.append(f"first_index {first} > last_index {last} + 1")
    s = st.snapshot()
    snap = Snap(s.metadata.index, s.metadata.term, s.data, tuple(s.metadata.conf_state.voters))
    if snap.index:
        if first != snap.index + 1:
            problems.append(f"first_index {first} != snapshot index {snap.index} + 1")
        if st.term(snap.index) != snap.term:
            problems.append(f"term(snapshot index {snap.index}) = {st.term(snap.index)}, snapshot term {snap.term}")
    fields = (st.uint(MetaInfo.SNAPSHOT_INDEX), st.uint(MetaInfo.SNAPSHOT_TERM))
    h = st.hard_state()
    uints = (st.uint(UINTS[0]), st.uint(UINTS[1]), st.uint(UINTS[2]))
    return Observed(first, last, log, snap, fields, (h.term, h.vote, h.commit), uints, list(st.repairs), problems)


def reported_hs(hs: HS, snapshot_index: int) -> HS:
    """What ``hard_state()`` reports for a stored HardState: a non-empty one's commit is at least the snapshot
    index (a crash between a save's snapshot switch and its HardState can leave it below)."""
    term, vote, commit = hs
    return (term, vote, max(commit, snapshot_index)) if hs != (0, 0, 0) else hs


def compare_exact(o: Observed, m: Model) -> list[str]:
    """Differences between what a storage holds and the model (for states with nothing in flight)."""
    out = list(o.problems)
    if o.log != m.log:
        diff = sorted(set(o.log) ^ set(m.log)) or [i for i in o.log if o.log[i] != m.log[i]]
        out.append(f"log differs at {diff[:8]}")
    if o.snap != m.snap:
        out.append(f"snapshot {o.snap.index}/{o.snap.term} != model {m.snap.index}/{m.snap.term}")
    if o.hs != reported_hs(m.hs, m.snap.index):
        out.append(f"hard state {o.hs} != model {reported_hs(m.hs, m.snap.index)}")
    if o.uints != m.uints:
        out.append(f"uints {o.uints} != model {m.uints}")
    if (o.first, o.last) != (m.first_index(), m.last_index()):
        out.append(f"first/last {o.first}/{o.last} != model {m.first_index()}/{m.last_index()}")
    return out


def check_recovered(o: Observed, a: Model, b: Model, op: Op | None) -> list[str]:
    """The invariants for a directory recovered from a crash while ``op`` (taking ``a`` to ``b``) was in flight."""
    out = list(o.problems)
    sn = o.snap
    if sn not in (a.snap, b.snap):
        out.append(f"snapshot {sn.index}/{sn.term} is neither the acknowledged nor the new one")
    if o.snap_fields != (sn.index, sn.term):
        out.append(f"wal.meta snapshot fields {o.snap_fields} disagree with the snapshot ({sn.index}, {sn.term})")
    new_snap_via_save = op is not None and op.kind == "save" and op.snap is not None and sn == b.snap != a.snap
    x = a.overwrite_point(op) if op is not None else None
    a_only: list[int] = []
    b_only: list[int] = []
    for i, e in sorted(o.log.items()):
        ea, eb = a.log.get(i), b.log.get(i)
        if e != ea and e != eb:
            want = " or ".join(v.short() for v in (ea, eb) if v is not None) or "nothing"
            out.append(f"entry {i} {e.short()} is garbage: expected {want}")
        elif e == ea and e != eb:
            a_only.append(i)
        elif e == eb and e != ea:
            b_only.append(i)
    if x is not None:
        old = [i for i in a_only if i >= x]
        new = [i for i in b_only if i >= x]
        if old and new:
            out.append(f"overwrite from {x}: old entries {old[:5]} mixed with new entries {new[:5]}")
    if new_snap_via_save and a_only:
        out.append(f"snapshot {sn.index} from save is installed but entries of the discarded log remain: {a_only[:5]}")
    missing = [
        i
        for i in sorted(a.log)
        if i > sn.index and not (x is not None and i >= x) and not new_snap_via_save and i not in o.log
    ]
    if missing:
        out.append(f"acknowledged entries missing: {missing[:8]} (log {o.first}..{o.last})")
    hs_allowed = {reported_hs(hs, sn.index) for hs in (*a.hs_allowed, *b.hs_allowed)}
    if o.hs not in hs_allowed:
        out.append(f"hard state {o.hs} is none of {sorted(hs_allowed)}")
    if o.hs[2] > o.last:
        out.append(f"commit {o.hs[2]} is past the last index {o.last}")
    for k in range(3):
        if o.uints[k] not in (a.uints[k], b.uints[k]):
            out.append(f"{UINTS[k].name} = {o.uints[k]} is neither {a.uints[k]} nor {b.uints[k]}")
    odd = [r for r in o.repairs if "torn tail" not in r]
    if odd:
        out.append(f"unexpected repairs: {odd}")
    return out


def post_recovery_write(directory: str, key: bytes | None, o: Observed) -> list[str]:
    """The recovered directory accepts a durable write, and a reopen shows it after the recovered log."""
    term = max(o.hs[0], o.log[o.last].term if o.last in o.log else o.snap.term, 1)
    e = Entry(term=term, index=o.last + 1, type=0, data=b"after the crash %d" % o.last)
    with DiskStorage.open(directory, key=key, hard_sync=True) as st:
        st.save(entries=[e])
    with DiskStorage.open(directory, key=key) as st:
        o2 = observe(st)
    out = list(o2.problems)
    want = dict(o.log)
    want[e.index] = Ent(e.term, 0, e.data)
    if o2.log != want:
        out.append(f"after a write and reopen the log differs at {sorted(set(o2.log) ^ set(want))[:5]}")
    if (o2.snap, o2.hs, o2.uints) != (o.snap, o.hs, o.uints):
        out.append("after a write and reopen the snapshot, hard state or u64 fields changed")
    return out


def model_from_observed(o: Observed) -> Model:
    """A model of what a (recovered) directory holds, to continue a workload from it."""
    last_term = o.log[o.last].term if o.last in o.log else o.snap.term
    return Model(dict(o.log), o.snap, o.hs, (o.hs,), o.uints, max(o.hs[0], last_term, 1))
