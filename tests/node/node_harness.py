"""What the node tests share: the example cluster's helpers (processes, ports, HTTP) and waiting for a single
leader in process."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path

from aiowal.node import RaftNode

CLUSTER = str(Path(__file__).resolve().parents[2] / "examples" / "cluster")
if CLUSTER not in sys.path:
    sys.path.insert(0, CLUSTER)
from cluster import Cluster, free_ports, http  # noqa: E402

__all__ = ["Cluster", "free_ports", "http", "leader_of"]


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
