"""Linearizability checking of key-value histories: Wing & Gong's search with Lowe's memoization, one key at a time.

The model is one register per key (PUT sets it, DELETE empties it, GET returns its value or "absent"), so a history
is linearizable exactly when each key's sub-history is (P-compositionality), and keys are checked separately.

An operation's outcome is ``ok`` (it happened, within its call and return), ``fail`` (it definitely did not happen)
or ``unknown`` (a timeout or a lost connection: it may have happened at any time after its call, or never). A failed
operation is left out; an unknown one gets a return at +infinity and an unconstrained result, and may be left out of
the linearization (placed after everything observed, which is the same).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Literal

Kind = Literal["put", "delete", "get"]
Outcome = Literal["ok", "fail", "unknown"]
State = str | None
"""A register's value; None is "absent"."""


@dataclass(frozen=True)
class Op:
    """One client operation as observed: what was asked, when (seconds, one clock), and what came back."""

    id: int
    process: int
    kind: Kind
    key: str
    value: str | None
    """PUT: the value written. GET with outcome ok: the value read, None for absent. Otherwise None."""
    call: float
    ret: float
    """math.inf when the operation never returned (outcome unknown)."""
    outcome: Outcome
    node: int | None = None
    """The node that answered (or was last asked, when there was no answer): for reading a history, not checked."""

    def describe(self) -> str:
        what = {"put": f"PUT {self.key}={self.value!r}", "delete": f"DELETE {self.key}", "get": f"GET {self.key}"}
        text = what[self.kind]
        if self.kind == "get" and self.outcome == "ok":
            text += f" -> {'absent' if self.value is None else repr(self.value)}"
        ret = "never returned" if math.isinf(self.ret) else f"{self.ret:.6f}"
        at = f" on node {self.node}" if self.node is not None else ""
        return f"#{self.id} p{self.process} {text} [{self.outcome}{at}] call {self.call:.6f}, return {ret}"


def step(state: State, op: Op) -> tuple[bool, State]:
    """The register model: whether ``op`` may take effect on ``state``, and the state after it."""
    if op.kind == "put":
        return True, op.value
    if op.kind == "delete":
        return True, None
    if op.outcome != "ok":
        return True, state  # a GET whose answer was lost constrains nothing
    return op.value == state, state


class Verdict(Enum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNDECIDED = "undecided"
    """The search gave up after its budget of explored states."""


@dataclass
class Stuck:
    """Where the deepest attempt at linearizing a key's history got stuck."""

    key: str
    linearized: int
    total: int
    state: State
    last_linearized: list[Op]
    candidates: list[Op]
    """Operations that could have taken effect next at that point, none of which led to a linearization."""
    blocking: Op
    """The earliest-returning operation not yet linearized: one of the candidates had to take effect before it."""

    def __str__(self) -> str:
        state = "absent" if self.state is None else repr(self.state)
        lines = [
            f"  the deepest attempt placed {self.linearized} of {self.total} operations, leaving the register {state}",
            "  last placed:",
            *(f"    {op.describe()}" for op in self.last_linearized),
            "  none of these could go next:",
            *(f"    {op.describe()}" for op in self.candidates),
            f"  and one of them had to, before #{self.blocking.id} returned",
        ]
        return "\n".join(lines)


@dataclass
class KeyResult:
    key: str
    verdict: Verdict
    ops: int
    """Operations the search had to place or could place (after failed ones and redundant unknown ones are left
    out)."""
    explored: int
    stuck: Stuck | None = None


@dataclass
class Result:
    verdict: Verdict
    keys: list[KeyResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.LINEARIZABLE

    def explanation(self) -> str:
        """For each key that is not linearizable (or undecided): the verdict and where the search got stuck."""
        parts = []
        for k in self.keys:
            if k.verdict is Verdict.LINEARIZABLE:
                continue
            parts.append(f"key {k.key!r}: {k.verdict.value} ({k.ops} operations, {k.explored} states explored)")
            if k.stuck is not None:
                parts.append(str(k.stuck))
        return "\n".join(parts)


def relevant(ops: Iterable[Op]) -> list[Op]:
    """The operations of one key that matter to its linearizability.

    Failed operations did not happen and unknown GETs say nothing. An unknown PUT whose value no GET returned is
    left out too: in any linearization, no read comes between such a write and the next write (it would have read
    that value), so removing the write keeps every read valid, and a linearization without it stands as it is.
    """
    ops = [op for op in ops if op.outcome != "fail" and not (op.kind == "get" and op.outcome == "unknown")]
    read = {op.value for op in ops if op.kind == "get" and op.value is not None}
    return [op for op in ops if not (op.kind == "put" and op.outcome == "unknown" and op.value not in read)]


def check_key(key: str, ops: Sequence[Op], *, max_states: int | None = None) -> KeyResult:
    """Search for a linearization of one key's operations (all of the same key)."""
    ops = relevant(ops)
    n = len(ops)
    must = sum(1 for op in ops if op.outcome == "ok")
    if must == 0:
        return KeyResult(key, Verdict.LINEARIZABLE, n, 0)

    # Call and return events sorted by time, calls first at equal times (touching intervals count as concurrent),
    # in a doubly linked list: entry 0 is the head, 1..2n the events.
    events = sorted(
        [(op.call, 0, i) for i, op in enumerate(ops)] + [(op.ret, 1, i) for i, op in enumerate(ops)],
        key=lambda e: (e[0], e[1]),
    )
    end = len(events) + 1  # the tail sentinel
    nxt = list(range(1, end + 2))
    prv = list(range(-1, end))
    is_call = [False] * (end + 1)
    op_of = [0] * (end + 1)
    match = [0] * (end + 1)  # a call entry's return entry
    call_entry = [0] * n
    for pos, (_, kind, i) in enumerate(events, start=1):
        op_of[pos] = i
        if kind == 0:
            is_call[pos] = True
            call_entry[i] = pos
        else:
            match[call_entry[i]] = pos

    def lift(c: int) -> None:
        r = match[c]
        nxt[prv[c]] = nxt[c]
        prv[nxt[c]] = prv[c]
        nxt[prv[r]] = nxt[r]
        prv[nxt[r]] = prv[r]

    def unlift(c: int) -> None:
        r = match[c]
        prv[nxt[r]] = r
        nxt[prv[r]] = r
        prv[nxt[c]] = c
        nxt[prv[c]] = c

    # Unknown writes with the same effect (DELETEs, PUTs of one value) are interchangeable once called: they never
    # return, so nothing has to follow them. Of several available at once only the last called is tried (it can
    # stand wherever an earlier-called one could), and the memo records how many of each group are placed rather
    # than which: the k-th placed member of a group is marked with the bit of the group's k-th member.
    group_of: list[int | None] = [None] * n
    members: dict[tuple[str, str | None], list[int]] = {}
    for i, op in sorted(enumerate(ops), key=lambda t: t[1].call):
        if op.outcome == "unknown" and op.kind != "get":
            members.setdefault((op.kind, op.value), []).append(i)
    groups = list(members.values())
    for g, idx in enumerate(groups):
        for i in idx:
            group_of[i] = g
    placed = [0] * len(groups)

    def shadowed(c: int) -> bool:
        g = group_of[op_of[c]]
        e = nxt[c]
        while e != end and is_call[e]:
            if group_of[op_of[e]] == g:
                return True
            e = nxt[e]
        return False

    state: State = None
    linearized = 0  # the memo's mark of what is placed
    stack: list[tuple[int, State, int]] = []  # call entry placed, state before it, its bit in ``linearized``
    cache: set[tuple[int, State]] = set()
    remaining = must
    deepest = -1
    stuck: Stuck | None = None
    entry = nxt[0]
    while True:
        if remaining == 0:
            return KeyResult(key, Verdict.LINEARIZABLE, n, len(cache))
        if max_states is not None and len(cache) >= max_states:
            return KeyResult(key, Verdict.UNDECIDED, n, len(cache), stuck)
        if is_call[entry]:
            i = op_of[entry]
            g = group_of[i]
            ok, after = step(state, ops[i])
            if ok and not (g is not None and shadowed(entry)):
                bit = 1 << (i if g is None else groups[g][placed[g]])
                marked = linearized | bit
                if (marked, after) not in cache:
                    cache.add((marked, after))
                    stack.append((entry, state, bit))
                    state, linearized = after, marked
                    lift(entry)
                    if g is None:
                        if ops[i].outcome == "ok":
                            remaining -= 1
                    else:
                        placed[g] += 1
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
            continue
        # A return: its operation must be placed before anything later, and none of the candidates worked.
        if len(stack) > deepest:
            deepest = len(stack)
            stuck = _stuck_at(key, ops, [c for c, _, _ in stack], op_of, nxt, is_call, entry, state, n)
        if not stack:
            return KeyResult(key, Verdict.NOT_LINEARIZABLE, n, len(cache), stuck)
        top, state, bit = stack.pop()
        linearized &= ~bit
        i = op_of[top]
        g = group_of[i]
        if g is None:
            if ops[i].outcome == "ok":
                remaining += 1
        else:
            placed[g] -= 1
        unlift(top)
        entry = nxt[top]


def _stuck_at(
    key: str,
    ops: Sequence[Op],
    placed: list[int],
    op_of: list[int],
    nxt: list[int],
    is_call: list[bool],
    ret: int,
    state: State,
    n: int,
) -> Stuck:
    candidates = []
    e = nxt[0]
    while e != ret:
        if is_call[e]:
            candidates.append(ops[op_of[e]])
        e = nxt[e]
    last = [ops[op_of[c]] for c in placed[-5:]]
    return Stuck(key, len(placed), n, state, last, candidates, ops[op_of[ret]])


def check(history: Iterable[Op], *, max_states: int | None = None) -> Result:
    """Check a whole history, key by key; ``max_states`` bounds each key's search (UNDECIDED beyond it)."""
    by_key: dict[str, list[Op]] = {}
    for op in history:
        by_key.setdefault(op.key, []).append(op)
    results = [check_key(k, by_key[k], max_states=max_states) for k in sorted(by_key)]
    verdicts = {r.verdict for r in results}
    if Verdict.NOT_LINEARIZABLE in verdicts:
        verdict = Verdict.NOT_LINEARIZABLE
    elif Verdict.UNDECIDED in verdicts:
        verdict = Verdict.UNDECIDED
    else:
        verdict = Verdict.LINEARIZABLE
    return Result(verdict, results)


def to_json(ops: Iterable[Op]) -> list[dict[str, object]]:
    """JSON-ready records (a return of +infinity becomes null)."""
    return [
        {
            "id": op.id,
            "process": op.process,
            "kind": op.kind,
            "key": op.key,
            "value": op.value,
            "call": op.call,
            "ret": None if math.isinf(op.ret) else op.ret,
            "outcome": op.outcome,
            "node": op.node,
        }
        for op in ops
    ]


def from_json(records: Iterable[dict[str, object]]) -> list[Op]:
    out = []
    for r in records:
        ret = r["ret"]
        value = r["value"]
        out.append(
            Op(
                id=int(str(r["id"])),
                process=int(str(r["process"])),
                kind=str(r["kind"]),  # type: ignore[arg-type]
                key=str(r["key"]),
                value=None if value is None else str(value),
                call=float(str(r["call"])),
                ret=math.inf if ret is None else float(str(ret)),
                outcome=str(r["outcome"]),  # type: ignore[arg-type]
                node=None if r.get("node") is None else int(str(r["node"])),
            )
        )
    return out


def save(path: Path, ops: Iterable[Op], **extra: object) -> None:
    """Write a history (and anything else worth keeping with it, such as the nemesis's log) as JSON."""
    path.write_text(json.dumps({"ops": to_json(ops), **extra}, indent=1))
