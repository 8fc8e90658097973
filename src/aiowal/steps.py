"""The unit a write is split into: file changes through the page cache, then a blocking ``SyncStep``.

A write is a generator of steps: the code between two ``yield``s changes files through the page cache (fast, on the
caller's thread), and each yielded step is a blocking call (fdatasync, fsync of the directory, unlink) that the
driver runs before resuming the generator: at once in ``DiskStorage``, off the event loop in ``AsyncDiskStorage``.
A generator resumed after its step ran knows the step succeeded; a failed step ends the write.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from aiowal.fs import FS

T = TypeVar("T")

SyncStep = Callable[[], None]
"""A blocking call (fdatasync/fsync of files written before it, unlink), safe to run in another thread."""

Steps = Generator[SyncStep, None, None]


class FdSync:
    """``fdatasync`` of descriptors in order, then ``fsync`` of a directory if one is given. Without a directory
    it is nothing but fdatasync calls, which ``AsyncDiskStorage`` may hand to a thread that runs without the GIL
    (see ``_speedups.SyncWorker``)."""

    __slots__ = ("directory", "fds", "fs")

    def __init__(self, fs: FS, fds: Sequence[int], directory: str | None = None) -> None:
        self.fs = fs
        self.fds = tuple(fds)
        self.directory = directory

    def __call__(self) -> None:
        for fd in self.fds:
            self.fs.fdatasync(fd)
        if self.directory is not None:
            self.fs.fsync_dir(self.directory)


class Unlink:
    """Delete files, in the given order (slow for big files, so it runs where syncs run)."""

    __slots__ = ("fs", "paths")

    def __init__(self, fs: FS, paths: Sequence[str]) -> None:
        self.fs = fs
        self.paths = tuple(paths)

    def __call__(self) -> None:
        for path in self.paths:
            self.fs.unlink(path)


class Call(Generic[T]):
    """A blocking call whose result the write takes once the step ran (``result``)."""

    __slots__ = ("_result", "fn")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self._result: list[T] = []

    def __call__(self) -> None:
        self._result.append(self.fn())

    @property
    def result(self) -> T:
        return self._result[0]
