"""The promise without ``hard_sync``: what a directory recovered after a power cut may hold, given the last completed
sync and the operations written since it.

A run is a list of operations with ``states[k]``, the model once ``ops[k]`` is applied. ``p`` is the last operation
after which a sync completed (``open``, ``sync``, ``close``, ``reopen``): everything up to it is durable. ``s >= p``
is the last completed one that makes a snapshot durable (those, ``create_snapshot`` and a ``save`` with a snapshot).
Ops ``p+1..q`` were written (the last maybe in part). A recovered directory must open, and:

- its log is a prefix of the log of one state ``j`` in ``p..q``, reading every entry present at its index in that
  state (never garbage, never old entries beside new ones), with every entry of ``states[p]`` that state ``j``
  still holds present (none once a save with a snapshot discarded them), except those the op after ``j``
  overwrites (its cut may be part done);
- the log a state holds counts the entries a ``create_snapshot`` compacted since ``p``: they stay until their file
  goes, and are only hidden once the snapshot switch is on disk;
- an entry below a ``truncate_entries_until`` of ``p+1..q`` on the same log (no save with a snapshot between them)
  may have its data or none (the zeroed lengths are not synced), each entry on its own;
- the snapshot is the one of a state in ``s..q`` that discarded the same log (no save with a snapshot between it and
  state ``j``);
- the HardState is one written in ``p..q`` (its commit set to the last index when it is past it), each u64 field
  one of the values it had in ``p..q``; the only repairs are a cut torn tail and such a commit.
"""

from __future__ import annotations

from collections.abc import Sequence

from crashmodel import Ent, Model, Observed, Op, reported_hs

SYNC_POINTS = ("open", "sync", "close", "reopen")


def is_snapshot(op: Op) -> bool:
    return op.kind == "create_snapshot" or (op.kind == "save" and op.snap is not None)


def synced_points(ops: Sequence[Op], done: int) -> tuple[int, int]:
    """``(p, s)`` once ops ``0..done`` completed: the last sync point, and the last sync point or snapshot (0 before
    the open completed: state 0 is the empty directory)."""
    p = max((k for k in range(done + 1) if ops[k].kind in SYNC_POINTS), default=0)
    s = max((k for k in range(done + 1) if ops[k].kind in SYNC_POINTS or is_snapshot(ops[k])), default=0)
    return p, s


def full_logs(states: Sequence[Model], ops: Sequence[Op], p: int, q: int) -> list[dict[int, Ent]]:
    """For each state in ``p..q``, its log with the entries compacted by a ``create_snapshot`` since ``p`` (a save
    with a snapshot discards them all; ``truncate_entries_until`` drops their data too)."""
    logs = [states[p].log]
    for j in range(p + 1, q + 1):
        op, m = ops[j], states[j]
        if op.kind == "save" and op.snap is not None:
            logs.append(m.log)
            continue
        kept = {i: e for i, e in logs[-1].items() if i <= m.snap.index}
        if op.kind == "truncate":
            kept = {i: Ent(e.term, 0, b"") if i < op.index and e.type == 0 else e for i, e in kept.items()}
        logs.append({**kept, **m.log})
    return logs


def _epochs(ops: Sequence[Op], p: int, q: int) -> list[int]:
    """For each state in ``p..q``: how many saves with a snapshot (each discards the log) came after ``p``."""
    out = [0]
    for j in range(p + 1, q + 1):
        out.append(out[-1] + (ops[j].kind == "save" and ops[j].snap is not None))
    return out


def check_nondurable(o: Observed, states: Sequence[Model], ops: Sequence[Op], p: int, s: int, q: int) -> list[str]:
    """The promise without ``hard_sync`` for a directory recovered from a power cut with ops ``p+1..q`` written
    since the last completed sync (``s``: the last completed sync or snapshot)."""
    out = list(o.problems)
    logs = full_logs(states, ops, p, q)
    epochs = _epochs(ops, p, q)
    # Entries below a truncate_entries_until since p may have their data or none (one of the same log: no save with
    # a snapshot between them).
    drop_below = {
        e: max(
            (ops[t].index for t in range(p + 1, q + 1) if ops[t].kind == "truncate" and epochs[t - p] == e), default=0
        )
        for e in set(epochs)
    }

    def same(got: Ent, want: Ent, i: int, j: int) -> bool:
        if got == want:
            return True
        if i >= drop_below[epochs[j - p]] or got.term != want.term or got.type != 0 or want.type != 0:
            return False
        earlier = (logs[k - p] for k in range(p, j + 1) if epochs[k - p] == epochs[j - p])
        return not got.data or (not want.data and any(log.get(i) == got for log in earlier))

    snap_epochs = {epochs[k - p] for k in range(s, q + 1) if states[k].snap == o.snap}
    if not snap_epochs:
        out.append(f"snapshot {o.snap.index}/{o.snap.term} is none of those since the last completed sync or snapshot")
    if o.snap_fields != (o.snap.index, o.snap.term):
        out.append(f"wal.meta snapshot fields {o.snap_fields} disagree with the snapshot {o.snap.index}/{o.snap.term}")
    if o.first != o.snap.index + 1:
        out.append(f"first index {o.first} does not follow the snapshot at {o.snap.index}")

    def misfit(j: int) -> str | None:
        if snap_epochs and epochs[j - p] not in snap_epochs:
            return "a save with a snapshot lies between this log and the snapshot found"
        log = logs[j - p]
        for i in range(o.first, o.last + 1):
            want, got = log.get(i), o.log.get(i)
            if got is None or want is None or not same(got, want, i, j):
                return f"entry {i} is {got.short() if got else 'absent'}, not {want.short() if want else 'absent'}"
        cut = states[j].overwrite_point(ops[j + 1]) if j < q and ops[j + 1].snap is None else None
        lost = [  # (a save with a snapshot since p discarded them all)
            i
            for i, e in sorted(states[p].log.items())
            if i > max(o.last, o.snap.index)
            and epochs[j - p] == 0
            and i in log
            and same(log[i], e, i, j)
            and (cut is None or i < cut)
        ]
        if lost:
            return f"synced entries {lost[:8]} missing (log ends at {o.last})"
        return None

    misfits = {j: misfit(j) for j in range(p, q + 1)}
    if all(misfits.values()):
        near = [j for j in misfits if not snap_epochs or epochs[j - p] in snap_epochs]  # with the snapshot found
        why = "; ".join(f"state {j}: {misfits[j]}" for j in (near[:1] + near[-1:] if near else [p, q]))
        out.append(f"no state of ops {p}..{q} explains the log ({why})")
    written = {states[j].hs for j in range(p, q + 1)}
    allowed = {reported_hs((t, v, min(c, o.last)), o.snap.index) for t, v, c in written}
    if o.hs not in allowed:
        out.append(f"hard state {o.hs} is none of those written since the last sync: {sorted(allowed)[:6]}")
    if o.hs[2] > o.last:
        out.append(f"commit {o.hs[2]} is past the last index {o.last}")
    for k in range(3):
        if o.uints[k] not in {states[j].uints[k] for j in range(p, q + 1)}:
            out.append(f"u64 field {k} = {o.uints[k]} is none of the values it had since the last sync")
    odd = [r for r in o.repairs if "torn tail" not in r and "HardState commit" not in r]
    if odd:
        out.append(f"unexpected repairs: {odd}")
    return out
