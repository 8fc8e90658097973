"""aiowal: an asyncio-native Raft write-ahead log, byte-compatible with Dgraph's raftwal."""

from aiowal import raftpb
from aiowal.aio import AsyncDiskStorage
from aiowal.errors import (
    CompactedError,
    CorruptionError,
    EncryptionKeyError,
    SnapOutOfDateError,
    SnapshotTemporarilyUnavailableError,
    StorageClosedError,
    StorageError,
    StorageFailedError,
    StorageIOError,
    StorageLockedError,
    UnavailableError,
    WrongEventLoopError,
)
from aiowal.meta import MetaInfo
from aiowal.storage import DiskStorage

__version__ = "0.1.0"

__all__ = [
    "AsyncDiskStorage",
    "CompactedError",
    "CorruptionError",
    "DiskStorage",
    "EncryptionKeyError",
    "MetaInfo",
    "SnapOutOfDateError",
    "SnapshotTemporarilyUnavailableError",
    "StorageClosedError",
    "StorageError",
    "StorageFailedError",
    "StorageIOError",
    "StorageLockedError",
    "UnavailableError",
    "WrongEventLoopError",
    "__version__",
    "raftpb",
]
