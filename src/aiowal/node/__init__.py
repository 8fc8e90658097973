"""An asyncio Raft node on aiowal: the sans-IO core of ``aiowal.raft`` driven over ``AsyncDiskStorage`` and TCP,
with membership changes at runtime and snapshots streamed as files."""

from aiowal.node.members import ChangeContext, Member
from aiowal.node.node import AppliedChange, NodeConfig, NotLeaderError, RaftNode, StateMachine
from aiowal.node.snapshots import SnapshotFileError, SnapshotRef
from aiowal.node.snapstream import SnapshotStreamError
from aiowal.node.status import FollowerProgress, NodeCounters, NodeStatus
from aiowal.node.transport import Transport
from aiowal.raft import ConfChangeRefusedError

__all__ = [
    "AppliedChange",
    "ChangeContext",
    "ConfChangeRefusedError",
    "FollowerProgress",
    "Member",
    "NodeConfig",
    "NodeCounters",
    "NodeStatus",
    "NotLeaderError",
    "RaftNode",
    "SnapshotFileError",
    "SnapshotRef",
    "SnapshotStreamError",
    "StateMachine",
    "Transport",
]
