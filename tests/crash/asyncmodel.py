"""Concurrent callers of ``AsyncDiskStorage`` for the crash tests: the operations they issue, the trace of what was
called and acknowledged, and the check of a recovered directory against it.

Each caller computes its operation at call time from everything called before it (as a Raft node computes its
``Ready`` from its in-memory state, ahead of durability), so the operations in call order are one deterministic
sequence drawn from a seed, whichever task calls which. The writer applies them in that order. Op ``k`` is
acknowledged when its caller's ``await`` returns; every op before an acknowledged one is durable too (the writer
commits in call order). A crash with ops ``P+1..Q`` called but not acknowledged may leave any state the storage
passes through while applying them: the check asks for one model ``models[j]``, ``P <= j <= Q``, of which the
recovered log is a prefix, with every acknowledged entry that ``models[j]`` keeps present, except those that op
``j+1`` overwrites (its cut of the old log may be part done, newest files first). Nothing readable may be bytes
that no such state holds; the HardState and u64 fields must be ones those states allow.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import uvloop
from crashmodel import Model, Observed, Op, compare_exact, gen_op, observe, reported_hs, to_entries, to_snapshot

from aiowal import AsyncDiskStorage, MetaInfo
from aiowal.raftpb import ConfState, HardState

LOOPS = ("asyncio", "uvloop")


def run_loop(loop_kind: str, main: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``main()`` on a fresh event loop of the given kind."""
    factory = uvloop.new_event_loop if loop_kind == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


class OpSource:
    """The operations of the concurrent callers, in call order: ``models[k]`` is the state once ops ``0..k`` are
    applied (``ops[0]`` is the open the sequence starts from). No reopen while callers run, and no
    truncate_entries_until unless ``truncates`` (its partial effect is not a prefix of one model: only the check
    without ``hard_sync`` allows for it); ``sync`` is drawn in their place."""

    def __init__(self, seed: int, start: Model, big: bool = False, truncates: bool = False) -> None:
        self.rng = random.Random(seed)
        self.big = big
        self.truncates = truncates
        self.ops: list[Op] = [Op("open")]
        self.models: list[Model] = [start.apply(Op("open"))]

    @property
    def model(self) -> Model:
        return self.models[-1]

    def draw(self) -> int:
        """Draw the next operation from the state of all called so far; returns its number."""
        op = gen_op(self.model, self.rng, self.big)
        if op.kind == "reopen" or (op.kind == "truncate" and not self.truncates):
            op = Op("sync")
        return self.add(op)

    def add(self, op: Op) -> int:
        self.ops.append(op)
        self.models.append(self.model.apply(op))
        return len(self.ops) - 1


async def call(st: AsyncDiskStorage, op: Op) -> None:
    """Issue ``op``; it is queued before the first suspension (so call order is queue order)."""
    if op.kind == "save":
        hs = HardState(term=op.hs[0], vote=op.hs[1], commit=op.hs[2]) if op.hs is not None else None
        snap = to_snapshot(op.snap) if op.snap is not None else None
        await st.save(hs, to_entries(op), snap)
    elif op.kind == "create_snapshot":
        assert op.snap is not None
        await st.create_snapshot(op.index, ConfState(voters=list(op.snap.voters)), op.snap.data)
    elif op.kind == "set_uint":
        await st.set_uint(MetaInfo(op.info), op.value)
    elif op.kind == "truncate":
        await st.truncate_entries_until(op.index)
    elif op.kind == "sync":
        await st.sync()
    else:
        raise AssertionError(op.kind)


class Trace:
    """Where the calls and acknowledgements go: a recording fs's marks, or lines on a pipe."""

    def called(self, k: int) -> None:
        raise NotImplementedError

    def acked(self, k: int) -> None:
        raise NotImplementedError


class MarkTrace(Trace):
    """``call``/``ack`` marks in a ``RecordingFS``'s trace, between the file-system calls."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def called(self, k: int) -> None:
        self.fs.mark("call", k)

    def acked(self, k: int) -> None:
        self.fs.mark("ack", k)


class LineTrace(Trace):
    """``C k`` / ``A k`` lines, flushed one by one (a killed child's parent reads them from a pipe)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def called(self, k: int) -> None:
        self.out.write(f"C {k}\n")
        self.out.flush()

    def acked(self, k: int) -> None:
        self.out.write(f"A {k}\n")
        self.out.flush()


async def caller(st: AsyncDiskStorage, source: OpSource, trace: Trace, n_ops: int, rng: random.Random) -> None:
    """One concurrent caller: ``n_ops`` operations, each drawn at call time, awaited before the next."""
    for _ in range(n_ops):
        if rng.random() < 0.3:
            await asyncio.sleep(0)  # let others call first: batches of varying make-up
        k = source.draw()
        trace.called(k)
        await call(st, source.ops[k])
        trace.acked(k)


@dataclass
class AsyncRun:
    ops: list[Op]
    models: list[Model]
    callers: list[int] = field(default_factory=list)  # concurrent callers per round
    max_batch: int = 0  # the largest batch the writer took


async def run_rounds(
    directory: str,
    fs: Any,
    key: bytes | None,
    seed: int,
    rounds: int,
    ops_per_caller: int,
    callers: tuple[int, int] = (16, 64),
    check: Callable[[AsyncDiskStorage], None] | None = None,
    hard_sync: bool = True,
) -> AsyncRun:
    """Rounds of 16-64 concurrent callers on one ``AsyncDiskStorage`` (``hard_sync`` by default; without it,
    ``truncate_entries_until`` calls too), closed and reopened between rounds, with ``call``/``ack`` marks in
    ``fs``'s trace (the open and close are ops of the sequence too). The live storage is compared with the model
    after every round; ``check`` sees the open storage at its end."""
    source = OpSource(seed, Model(), truncates=not hard_sync)
    trace = MarkTrace(fs)
    rng = random.Random(seed ^ 0x5EED)
    run = AsyncRun(source.ops, source.models)
    trace.called(0)
    for r in range(rounds):
        if r:
            k = source.add(Op("open"))
            trace.called(k)
        st = await AsyncDiskStorage.open(directory, key=key, hard_sync=hard_sync, fs=fs)
        trace.acked(len(source.ops) - 1)
        try:
            n = rng.randint(*callers)
            run.callers.append(n)
            tasks = [
                caller(st, source, trace, rng.randint(1, ops_per_caller), random.Random(rng.random())) for _ in range(n)
            ]
            await asyncio.gather(*tasks)
            problems = compare_exact(observe(st.storage), source.model)
            assert not problems, f"live storage disagrees with the model after round {r}: {problems}"
            if check is not None:
                check(st)
            run.max_batch = max(run.max_batch, int(st.stats()["batch_size"]["max"]))
        finally:
            k = source.add(Op("close"))
            trace.called(k)
            await st.close()
            trace.acked(k)
    return run


# --- checking a recovered directory ---------------------------------------------------------------------------
def _misfit(o: Observed, acked: Model, m: Model, cut_from: int | None) -> str | None:
    """Why the recovered log and snapshot are not a prefix of ``m`` keeping the acknowledged entries (None: they
    are). ``cut_from``: where the op after ``m`` overwrites the log, if it does; its cut may be part done, so the
    entries from there on may be missing."""
    if o.snap != m.snap:
        if (o.snap.index, o.snap.term) == (m.snap.index, m.snap.term):
            return f"snapshot {o.snap.index}/{o.snap.term} holds other data or voters than the one written there"
        return f"snapshot {o.snap.index}/{o.snap.term} is not {m.snap.index}/{m.snap.term}"
    if o.first != m.first_index():
        return f"first index {o.first} is not {m.first_index()}"
    for i in range(o.first, o.last + 1):
        want = m.log.get(i)
        if o.log.get(i) != want:
            got = o.log[i].short() if i in o.log else "nothing"
            return f"entry {i} is {got}, not {want.short() if want else 'absent'}"
    lost = [
        i
        for i, e in sorted(acked.log.items())
        if i > o.snap.index and i > o.last and m.log.get(i) == e and (cut_from is None or i < cut_from)
    ]
    if lost:
        return f"acknowledged entries {lost[:8]} missing (log ends at {o.last})"
    return None


def check_concurrent(o: Observed, models: Sequence[Model], ops: Sequence[Op], p: int, q: int) -> list[str]:
    """The invariants for a directory recovered from a crash after op ``p`` was acknowledged while ops ``p+1..q``
    were called and not yet acknowledged (``models[k]``: the state after ``ops[k]``)."""
    out = list(o.problems)
    acked = models[p]
    candidates = models[p : q + 1]
    cuts = [
        models[j].overwrite_point(ops[j + 1]) if j < q and ops[j + 1].snap is None else None for j in range(p, q + 1)
    ]
    misfits = [_misfit(o, acked, m, cut) for m, cut in zip(candidates, cuts, strict=True)]
    if all(misfits):
        stray = [i for i, e in sorted(o.log.items()) if all(m.log.get(i) != e for m in candidates)]
        what = (
            f"entries {stray[:8]} hold what no state of ops {p}..{q} holds there (garbage or lost); " if stray else ""
        )
        same_snap = [
            f"op {p + k}: {why}"
            for k, (m, why) in enumerate(zip(candidates, misfits, strict=True))
            if m.snap.index == o.snap.index
        ]
        closest = f"; with its snapshot: {'; '.join(same_snap[:4])}" if same_snap else ""
        out.append(
            f"{what}no state of ops {p}..{q} explains the log: {misfits[0]} (acknowledged); {misfits[-1]} (last)"
            f"{closest}"
        )
    if o.snap_fields != (o.snap.index, o.snap.term):
        out.append(f"wal.meta snapshot fields {o.snap_fields} disagree with the snapshot {o.snap.index}/{o.snap.term}")
    allowed = {reported_hs(hs, o.snap.index) for m in candidates for hs in m.hs_allowed}
    if o.hs not in allowed:
        out.append(f"hard state {o.hs} is none of {sorted(allowed)[:6]}")
    if o.hs[2] > o.last:
        out.append(f"commit {o.hs[2]} is past the last index {o.last}")
    for k in range(3):
        values = {m.uints[k] for m in candidates}
        if o.uints[k] not in values:
            out.append(f"u64 field {k} = {o.uints[k]} is none of the values called")
    odd = [r for r in o.repairs if "torn tail" not in r]
    if odd:
        out.append(f"unexpected repairs: {odd}")
    return out
