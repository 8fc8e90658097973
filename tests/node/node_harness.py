"""What the node tests share: the example cluster's helpers (processes, ports, HTTP), waiting for a single leader
in process, and the file halves of small test state machines."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Mapping
from pathlib import Path

from aiowal.node import RaftNode

CLUSTER = str(Path(__file__).resolve().parents[2] / "examples" / "cluster")
if CLUSTER not in sys.path:
    sys.path.insert(0, CLUSTER)
from cluster import Cluster, free_ports, http  # noqa: E402

__all__ = ["KV", "Cluster", "free_ports", "http", "leader_of", "read_file", "write_later"]


def write_later(path: str, data: bytes) -> Awaitable[None]:
    """A state machine's ``snapshot_to``: ``data`` is taken now, written to ``path`` in a thread."""

    def write() -> None:
        Path(path).write_bytes(data)

    return asyncio.to_thread(write)


async def read_file(path: str) -> bytes:
    return await asyncio.to_thread(Path(path).read_bytes)


async def leader_of(nodes: Mapping[int, RaftNode], timeout: float = 10.0) -> RaftNode:
    """The one node that leads, once exactly one does."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        leaders = [n for n in nodes.values() if n.is_leader]
        if len(leaders) == 1:
            return leaders[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no single leader elected")


class KV:
    """A state machine for the node tests: JSON ``[key, value]`` commands into a dict; ``apply`` answers the
    entry's index."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def apply(self, index: int, data: bytes) -> object:
        k, v = json.loads(data)
        self.data[k] = v
        return index

    def snapshot_to(self, path: str) -> Awaitable[None]:
        return write_later(path, json.dumps(self.data, sort_keys=True).encode())

    async def restore_from(self, path: str) -> None:
        self.data = json.loads(await read_file(path))
