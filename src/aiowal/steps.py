"""The unit a write is split into: file changes through the page cache, then a blocking ``SyncStep``.

The synchronous API runs each step at once; ``AsyncDiskStorage`` runs them in its sync thread so that no
``fdatasync`` or unlink ever blocks the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiowal.fs import FS

SyncStep = Callable[[], None]
"""A blocking durability call (fdatasync/fsync of files written before it), safe to run in another thread."""

Steps = Generator[SyncStep, None, None]


class FdSync:
    """A step that is nothing but ``fdatasync`` of descriptors, in order. ``AsyncDiskStorage`` may hand it to a
    thread that runs without the GIL (see ``_speedups.SyncWorker``) when ``fs`` is the real file system."""

    __slots__ = ("fds", "fs")

    def __init__(self, fs: FS, fds: Sequence[int]) -> None:
        self.fs = fs
        self.fds = tuple(fds)

    def __call__(self) -> None:
        for fd in self.fds:
            self.fs.fdatasync(fd)
