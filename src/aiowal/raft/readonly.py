"""Linearizable reads (etcd's ReadOnlySafe): a read index is released once a quorum confirms the leadership."""

from __future__ import annotations

import dataclasses

from aiowal.raftpb import Message


@dataclasses.dataclass(frozen=True)
class ReadState:
    """A read at ``request_ctx`` may be served once the state machine has applied ``index``."""

    index: int
    request_ctx: bytes


@dataclasses.dataclass
class ReadIndexStatus:
    req: Message
    index: int
    acks: set[int] = dataclasses.field(default_factory=set)


class ReadOnly:
    """Pending read-index requests of a leader, in arrival order, keyed by their context."""

    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, m: Message) -> None:
        ctx = m.entries[0].data
        if ctx in self.pending:
            return
        self.pending[ctx] = ReadIndexStatus(m, index)
        self.queue.append(ctx)

    def recv_ack(self, id_: int, ctx: bytes) -> set[int] | None:
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks.add(id_)
        return rs.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Release the request with ``ctx`` and every one queued before it (a later quorum confirms them too)."""
        if ctx not in self.pending:
            return []
        i = self.queue.index(ctx)
        released = [self.pending.pop(c) for c in self.queue[: i + 1]]
        del self.queue[: i + 1]
        return released

    def last_pending_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""
