"""The exceptions aiowal raises: one base class, etcd's Storage errors, and storage-engine failures."""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error aiowal raises on purpose."""


class CompactedError(StorageError):
    """etcd ErrCompacted: the requested index is below the first available index."""

    def __init__(self, message: str = "requested index is unavailable due to compaction") -> None:
        super().__init__(message)


class UnavailableError(StorageError):
    """etcd ErrUnavailable: the requested index is beyond the last entry."""

    def __init__(self, message: str = "requested entry at index is unavailable") -> None:
        super().__init__(message)


class SnapOutOfDateError(StorageError):
    """etcd ErrSnapOutOfDate: a snapshot at or below the current one."""

    def __init__(self, message: str = "requested index is older than the existing snapshot") -> None:
        super().__init__(message)


class SnapshotTemporarilyUnavailableError(StorageError):
    """etcd ErrSnapshotTemporarilyUnavailable (never raised by DiskStorage, kept for Storage implementers)."""

    def __init__(self, message: str = "snapshot is temporarily unavailable") -> None:
        super().__init__(message)


class CorruptionError(StorageError):
    """A file's structure is invalid; the message names the file and the offset."""


class EncryptionKeyError(StorageError):
    """The encryption key is missing, wrong, or of a bad length."""


class StorageLockedError(StorageError):
    """Another process or another open instance holds the directory."""


class StorageIOError(StorageError):
    """An I/O call failed; ``errno`` tells why (ENOSPC, EIO, ...). Everything acknowledged before is intact."""

    def __init__(self, errno: int | None, message: str) -> None:
        super().__init__(message)
        self.errno = errno


class StorageFailedError(StorageError):
    """A sync failed earlier: the page cache can no longer be trusted, so writes are refused until reopen."""


class StorageClosedError(StorageError):
    """The storage was used after close()."""


class WrongEventLoopError(StorageError, RuntimeError):
    """An ``AsyncDiskStorage`` was called from an event loop (or thread) other than the one that opened it."""
