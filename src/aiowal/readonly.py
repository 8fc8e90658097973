"""A consistent read-only open of a directory that a writer in another process may be changing: the open is
retried while the directory changes under it, so that a view never reports damage that is not there."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from aiowal.errors import CorruptionError, StorageIOError
from aiowal.format import META_NAME


class _View(Protocol):
    def close(self) -> None: ...


T = TypeVar("T", bound=_View)

ATTEMPTS = 50


def open_consistent(path: str, open_once: Callable[[], T]) -> T:
    """``open_once()``, retried while the directory changes: a view that does not hold together is reported only
    once the directory stands still, and a view taken while a snapshot switched wal.meta or files came or went is
    taken again (the one taken before is closed)."""
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(min(0.001 * 2**attempt, 0.05))
        before = dir_identity(path)
        try:
            view = open_once()
        except (CorruptionError, StorageIOError):
            if attempt + 1 == ATTEMPTS or dir_identity(path) == before:
                raise
            continue
        if dir_identity(path)[:2] == before[:2] or attempt + 1 == ATTEMPTS:
            return view
        view.close()
    raise AssertionError("unreachable")  # pragma: no cover


def dir_identity(path: str) -> tuple[object, ...]:
    """What a writer changes under a reader: wal.meta's inode (a snapshot switch renames a new one in), the log
    files' names, inodes and sizes (rotation cuts a file to its data), then wal.meta's size and modification time
    (any write to it). A file that cannot be stat'ed counts as absent (None), so that a directory that stands still
    keeps one identity."""
    try:
        names = sorted(n for n in os.listdir(path) if n.endswith(".wal"))
    except OSError:
        return ("changing", time.monotonic())
    st = stat_or_none(os.path.join(path, META_NAME))
    logs = tuple(
        (n, s.st_ino, s.st_size) if s is not None else (n, None, None)
        for n in names
        for s in [stat_or_none(os.path.join(path, n))]
    )
    if st is None:
        return None, logs, None, None
    return st.st_ino, logs, st.st_size, st.st_mtime_ns


def stat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None
