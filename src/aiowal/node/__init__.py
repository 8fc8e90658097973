"""An asyncio Raft node on aiowal: the sans-IO core of ``aiowal.raft`` driven over ``AsyncDiskStorage`` and TCP."""

from aiowal.node.node import NodeConfig, NotLeaderError, RaftNode, StateMachine
from aiowal.node.status import FollowerProgress, NodeCounters, NodeStatus
from aiowal.node.transport import Transport

__all__ = [
    "FollowerProgress",
    "NodeConfig",
    "NodeCounters",
    "NodeStatus",
    "NotLeaderError",
    "RaftNode",
    "StateMachine",
    "Transport",
]
