"""The read side of etcd's Storage interface, which is all the Raft core needs from a log store."""

from __future__ import annotations

from typing import Protocol

from aiowal.raftpb import ConfState, Entry, HardState, Snapshot


class Storage(Protocol):
    """What ``RaftLog`` reads: ``DiskStorage``, ``AsyncDiskStorage`` and ``MemoryStorage`` all provide it."""

    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]: ...

    def term(self, i: int) -> int: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...
