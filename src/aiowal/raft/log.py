"""The Raft log: the stable part read through a Storage, plus the unstable tail not yet handed out for saving."""

from __future__ import annotations

from collections.abc import Sequence

from aiowal.errors import CompactedError, UnavailableError
from aiowal.raft.storage import Storage
from aiowal.raftpb import Entry, Snapshot


class RaftInvariantError(AssertionError):
    """The log was asked to do something Raft never does (a bug in the caller or a corrupted storage)."""


def limit_size(ents: list[Entry], max_size: int | None) -> list[Entry]:
    """The longest prefix of ``ents`` within ``max_size`` bytes, but at least one entry."""
    if max_size is None or not ents:
        return ents
    total = ents[0].ByteSize()
    n = 1
    while n < len(ents):
        total += ents[n].ByteSize()
        if total > max_size:
            break
        n += 1
    return ents[:n]


class Unstable:
    """Entries (and possibly a snapshot) received but not yet saved: ``entries[i]`` has index ``offset + i``."""

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == i:
                return self.snapshot.metadata.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, i: int, t: int) -> None:
        gt = self.maybe_term(i)
        if gt is None:
            return
        if gt == t and i >= self.offset:
            del self.entries[: i + 1 - self.offset]
            self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == i:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: Sequence[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            self.offset = after
            self.entries = list(ents)
        else:
            self.entries = self.entries[: after - self.offset] + list(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    """etcd's raftLog: ``committed`` and ``applied`` cursors over storage + unstable."""

    def __init__(self, storage: Storage, max_next_ents_size: int | None = None) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applied = first - 1
        self.max_next_ents_size = max_next_ents_size

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, len(unstable)={len(self.unstable.entries)})"
        )

    # --- indexes and terms -----------------------------------------------------------------------------------
    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, i: int) -> int | None:
        """The term of entry ``i``, or None when ``i`` is compacted away or past the end of the log."""
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        if i < self.first_index() - 1 or i > self.last_index():
            return None
        try:
            return self.storage.term(i)
        except (CompactedError, UnavailableError):
            return None

    def last_term(self) -> int:
        t = self.term(self.last_index())
        if t is None:
            raise RaftInvariantError(f"no term for the last index {self.last_index()}")
        return t

    def match_term(self, i: int, term: int) -> bool:
        t = self.term(i)
        return t is not None and t == term

    def is_up_to_date(self, lasti: int, term: int) -> bool:
        last_term = self.last_term()
        return term > last_term or (term == last_term and lasti >= self.last_index())

    # --- appending -------------------------------------------------------------------------------------------
    def maybe_append(self, index: int, log_term: int, committed: int, ents: Sequence[Entry]) -> int | None:
        """Append ``ents`` after ``index`` if our entry there has ``log_term``; the new last index, else None."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise RaftInvariantError(f"entry {ci} conflicts with committed entry (committed {self.committed})")
            self.append(ents[ci - index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, ents: Sequence[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise RaftInvariantError(f"after {after} is out of range [committed {self.committed}]")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: Sequence[Entry]) -> int:
        """The index of the first entry whose term differs from ours (or that we lack), or 0."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term`` (or unknown), with its term (0 if unknown)."""
        if index > self.last_index():
            return index, 0
        while True:
            t = self.term(index)
            if t is None:
                return index, 0
            if t <= term:
                return index, t
            index -= 1

    # --- reading ---------------------------------------------------------------------------------------------
    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def next_ents(self) -> list[Entry]:
        """Committed entries not yet applied."""
        off = max(self.applied + 1, self.first_index())
        if self.committed + 1 > off:
            return self.slice(off, self.committed + 1, self.max_next_ents_size)
        return []

    def has_next_ents(self) -> bool:
        return self.committed + 1 > max(self.applied + 1, self.first_index())

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def entries(self, i: int, max_size: int | None) -> list[Entry]:
        """Entries from ``i`` to the end; raises CompactedError when ``i`` is compacted away."""
        if i > self.last_index():
            return []
        return self.slice(i, self.last_index() + 1, max_size)

    def slice(self, lo: int, hi: int, max_size: int | None) -> list[Entry]:
        if lo > hi:
            raise RaftInvariantError(f"invalid slice {lo} > {hi}")
        if lo < self.first_index():
            raise CompactedError()
        if hi > self.last_index() + 1:
            raise RaftInvariantError(f"slice [{lo},{hi}) out of bound [{self.first_index()},{self.last_index()}]")
        if lo == hi:
            return []
        ents: list[Entry] = []
        offset = self.unstable.offset
        if lo < offset:
            stored_hi = min(hi, offset)
            try:
                ents = self.storage.entries(lo, stored_hi, max_size)
            except UnavailableError as exc:
                raise RaftInvariantError(f"entries [{lo}, {stored_hi}) unavailable from storage") from exc
            if len(ents) < stored_hi - lo:
                return ents
        if hi > offset:
            ents = ents + self.unstable.slice(max(lo, offset), hi)
        return limit_size(ents, max_size)

    # --- cursors ---------------------------------------------------------------------------------------------
    def commit_to(self, to_commit: int) -> None:
        if self.committed < to_commit:
            if self.last_index() < to_commit:
                raise RaftInvariantError(f"commit {to_commit} is past the last index {self.last_index()}")
            self.committed = to_commit

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Commit up to ``max_index`` if the entry there is of ``term`` (Raft only counts current-term replicas)."""
        if max_index > self.committed and self.term(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        if self.committed < i or i < self.applied:
            raise RaftInvariantError(f"applied {i} is out of range [prev applied {self.applied}, {self.committed}]")
        self.applied = i

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.metadata.index
        self.unstable.restore(snap)
