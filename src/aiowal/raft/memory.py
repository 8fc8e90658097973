"""An in-memory Storage (etcd's MemoryStorage) with the same write methods as ``DiskStorage``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from aiowal.errors import CompactedError, SnapOutOfDateError, UnavailableError
from aiowal.raft.log import limit_size
from aiowal.raftpb import ConfState, Entry, HardState, Snapshot, SnapshotMetadata


class MemoryStorage:
    """Entries, hard state and snapshot held in memory; ``_ents[0]`` is a dummy entry at the snapshot index."""

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        self._ents: list[Entry] = [Entry()]

    # --- reads -----------------------------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        hs = HardState()
        hs.CopyFrom(self._hard_state)
        cs = ConfState()
        cs.CopyFrom(self._snapshot.metadata.conf_state)
        return hs, cs

    def hard_state(self) -> HardState:
        hs = HardState()
        hs.CopyFrom(self._hard_state)
        return hs

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, i: int) -> int:
        offset = self._ents[0].index
        if i < offset:
            raise CompactedError()
        if i - offset >= len(self._ents):
            raise UnavailableError()
        return self._ents[i - offset].term

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        if lo > hi:
            raise ValueError(f"invalid range: lo {lo} > hi {hi}")
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError()
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi - 1} requested, last index is {self.last_index()}")
        return limit_size(self._ents[lo - offset : hi - offset], max_size)

    def snapshot(self) -> Snapshot:
        snap = Snapshot()
        snap.CopyFrom(self._snapshot)
        return snap

    # --- writes ----------------------------------------------------------------------------------------------
    def save(
        self,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        """Persist one Ready: snapshot, then entries (overwriting from the first one's index), then hard state."""
        for a, b in itertools.pairwise(entries):
            if b.index != a.index + 1:
                raise ValueError("entries are not contiguous")
        if snapshot is not None and snapshot.metadata.index:
            self._apply_snapshot(snapshot)
        if entries:
            self._append(entries)
        if hard_state is not None and (hard_state.term or hard_state.vote or hard_state.commit):
            self._hard_state = HardState()
            self._hard_state.CopyFrom(hard_state)

    def _apply_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.metadata.index <= self._snapshot.metadata.index:
            raise SnapOutOfDateError()
        self._snapshot = Snapshot()
        self._snapshot.CopyFrom(snapshot)
        self._ents = [Entry(term=snapshot.metadata.term, index=snapshot.metadata.index)]

    def _append(self, entries: Sequence[Entry]) -> None:
        first = self.first_index()
        ents = [e for e in entries if e.index >= first]
        if not ents:
            return
        if ents[0].index > self.last_index() + 1:
            raise ValueError(f"missing log entries: last index {self.last_index()}, appending at {ents[0].index}")
        offset = self._ents[0].index
        del self._ents[ents[0].index - offset :]
        self._ents.extend(ents)

    def create_snapshot(self, i: int, conf_state: ConfState | None, data: bytes | None) -> None:
        """Store a snapshot at ``i`` and drop the entries at or below it (``first_index()`` becomes ``i + 1``)."""
        offset = self._ents[0].index
        if i <= self._snapshot.metadata.index or i < offset:
            raise SnapOutOfDateError()
        if i > self.last_index():
            raise UnavailableError(f"snapshot index {i} is past the last index {self.last_index()}")
        term = self._ents[i - offset].term
        meta = SnapshotMetadata(index=i, term=term, conf_state=conf_state or ConfState())
        self._snapshot = Snapshot(data=bytes(data) if data is not None else b"", metadata=meta)
        self._ents = [Entry(term=term, index=i), *self._ents[i - offset + 1 :]]
