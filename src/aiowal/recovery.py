"""The rule open applies to a directory's log: where the valid log ends, and whether what lies past it may be cut.

A power cut can only damage writes that no completed sync covered: each of their sectors may hold its old or its
new bytes. So the log is valid up to its first anomaly (an invalid slot or record, files that do not continue each
other), and what follows may be cut only if no completed sync covered it: it lies past the durable mark that
``wal.meta`` keeps. An anomaly at or below the mark is damage to acknowledged entries: ``CorruptionError`` naming
the file and offset, and nothing is cut; so is a log that ends before the mark. Without a mark (a directory
written by Dgraph, which keeps none) only the newest file's tail may be cut, as Dgraph's own recovery assumes.
``DiskStorage.open`` and ``aiowal verify`` both apply this rule.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from aiowal.errors import CorruptionError
from aiowal.format import SLOT_SIZE
from aiowal.logfile import LogFile


@dataclass(frozen=True)
class Cut:
    """The valid log ends in ``files[pos]`` after its ``keep`` slots; ``index`` is the first entry dropped."""

    pos: int
    keep: int
    index: int
    reason: str


def needs_record_check(files: Sequence[LogFile], durable: int | None) -> list[bool]:
    """For each file (sorted by first index), whether every record must be checked, CRC included: the newest
    (where a crash lands; a cheap check of at most one file) and every file that may hold entries past the mark."""
    last_at_most = [nxt.peek_first_index() - 1 for nxt in files[1:]]
    return [durable is not None and bound > durable for bound in last_at_most] + ([True] if files else [])


def find_cut(files: Sequence[LogFile], snapshot_index: int) -> Cut | None:
    """The first anomaly of ``files`` (loaded, sorted by first index, none empty), or None if the log is valid."""
    prev: LogFile | None = None
    for pos, lf in enumerate(files):
        first = lf.peek_first_index()
        expected = prev.last + 1 if prev is not None else snapshot_index + 1
        where = f"{lf.path}: offset 0"
        if prev is None and first > snapshot_index + 1:
            return Cut(pos, 0, expected, f"{where}: the log starts at {first}, but the snapshot is at {snapshot_index}")
        if prev is not None:
            between = "".join(
                f"; {f.path} lies between them by id but starts at {f.peek_first_index()}"
                for f in files
                if prev.fid < f.fid < lf.fid
            )
            if first <= prev.last or (lf.count and lf.term_at(0) < prev.last_term):
                reason = f"{where}: first entry {first} does not follow {prev.path}'s last {prev.last}{between}"
                return Cut(pos, 0, expected, reason)
            if first > max(prev.last, snapshot_index) + 1:
                reason = f"{where}: first entry {first} leaves a gap after {prev.path}'s last {prev.last}{between}"
                return Cut(pos, 0, expected, reason)
        if lf.problem is not None:
            return Cut(pos, lf.count, lf.last + 1 if lf.count else expected, lf.problem)
        gap = _gap_above(lf, snapshot_index)
        if gap is not None:
            after = lf.index_at(gap - 1)
            reason = (
                f"{lf.path}: offset {gap * SLOT_SIZE}: slot {gap} (index {lf.index_at(gap)}) leaves a gap after "
                f"{after}, above the snapshot at {snapshot_index}"
            )
            return Cut(pos, gap, after + 1, reason)
        prev = lf
    return None


def _gap_above(lf: LogFile, snapshot_index: int) -> int | None:
    """The first slot of ``lf`` whose index leaves a gap above the snapshot, or None. Gaps inside a file are
    Dgraph's (entries appended after a snapshot saved with them) and lie below the snapshot; the log above it has
    none, so a gap there is a damaged index (which could pass every other check)."""
    if lf.contiguous or not lf.count:
        return None
    s = lf.slot_ge(snapshot_index + 1)
    if s >= lf.count:
        return None
    base = lf.index_at(s)
    if s and base > snapshot_index + 1:
        return s
    if lf.last - base == lf.count - 1 - s:
        return None
    # Indexes strictly increase, so index - slot never decreases: the first slot where it grows is the gap.
    return bisect.bisect_right(range(s, lf.count), base - s, key=lambda k: lf.index_at(k) - k) + s


def check_cut(
    cut: Cut | None, files: Sequence[LogFile], durable: int | None, snapshot_index: int, suspects: Sequence[str] = ()
) -> None:
    """``CorruptionError`` unless cutting the log at ``cut`` drops only entries that no completed sync covered.
    ``suspects`` describe files that hold nothing readable (``PATH: offset N: why``): named, as they may be the
    culprits."""
    hint = f"; holding no entries: {', '.join(s.split(': offset', 1)[0] for s in suspects)}" if suspects else ""
    if cut is not None:
        if durable is None and cut.pos < len(files) - 1:
            raise CorruptionError(f"{cut.reason} (not in the newest log file: damage, not a torn tail{hint})")
        if durable is not None and cut.index <= durable:
            raise CorruptionError(
                f"{cut.reason} (entries up to {durable} were made durable: damage, not a torn tail; nothing was "
                f"cut{hint})"
            )
    if durable is None or durable <= snapshot_index:
        return
    end = max(cut.index - 1 if cut is not None else max((lf.last for lf in files), default=0), snapshot_index)
    if end < durable:
        if suspects:
            where = f"{suspects[0]}, and"
        else:
            where = f"{files[-1].path}: offset {files[-1].count * SLOT_SIZE}:" if files else "no log file:"
        raise CorruptionError(
            f"{where} the log ends at {end}, but entries up to {durable} were made durable (a log file lost or cut "
            f"short{hint})"
        )
