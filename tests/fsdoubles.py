"""Test doubles for aiowal's fs seam (``aiowal.fs.FS``).

- ``RecordingFS`` performs every call for real and records each mutating one (creations, writes with their bytes,
  truncations, syncs, renames, unlinks, directory syncs) in order, with the path and a stable inode number for every
  file descriptor. The power-loss simulator replays these records to build the states a disk may hold after a crash.
  It records an fdatasync through the ``FS.synced`` seam, not by replacing ``fdatasync``: ``direct_fdatasync`` stays
  true, so ``AsyncDiskStorage`` runs its syncs on the C ``SyncWorker`` as in production, and they are recorded too.
- ``FaultFS`` wraps another ``FS`` and fails the Nth call of a chosen kind with an errno (``ENOSPC``, ``EIO``, ...)
  or with a short write (part of the data written, then ``ENOSPC``), once or from then on.
"""

from __future__ import annotations

import errno as errno_mod
import mmap
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiowal.errors import StorageIOError
from aiowal.fs import FS

Buffer = bytes | bytearray | memoryview


@dataclass
class Call:
    """One recorded call.

    kind is one of ``create`` (a new file: path, ino), ``write`` (ino, offset, data), ``truncate`` (ino, size),
    ``sync`` (ino; fdatasync or fsync, see ``how``; ``thread``: the name of the thread it was recorded on),
    ``dirsync`` (path), ``rename`` (path -> dst), ``unlink`` (path), ``mkdir`` (path), or ``mark`` (a label put in
    by the test: ``label`` and ``info``).
    """

    kind: str
    path: str = ""
    ino: int = -1
    offset: int = 0
    data: bytes = b""
    size: int = 0
    dst: str = ""
    how: str = ""
    label: str = ""
    info: Any = None
    thread: str = ""


class RecordingFS(FS):
    """Performs each call (as ``FS`` does) and appends a ``Call`` for every mutating one to ``calls``."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.names: dict[str, int] = {}  # path -> inode number, for every file this FS knows
        self.fds: dict[int, int] = {}  # fd -> inode
        self.paths: dict[int, str] = {}  # inode -> its current path
        self._next_ino = 1
        self._nested = 0

    # --- bookkeeping -------------------------------------------------------------------------------------------
    def mark(self, label: str, info: Any = None) -> None:
        self.calls.append(Call("mark", label=label, info=info))

    def adopt(self, directory: str) -> dict[str, int]:
        """Give the files already in ``directory`` inode numbers (for recording a recovery of a given state)."""
        out = {}
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if os.path.isfile(path) and path not in self.names:
                ino = self._new_ino(path)
                out[name] = ino
        return out

    def _new_ino(self, path: str) -> int:
        ino = self._next_ino
        self._next_ino += 1
        self.names[path] = ino
        self.paths[ino] = path
        return ino

    def path_of_fd(self, fd: int) -> str:
        return self.paths.get(self.fds.get(fd, -1), f"<fd {fd}>")

    def _ino_of(self, fd: int) -> int:
        ino = self.fds.get(fd)
        if ino is None:
            raise AssertionError(f"fd {fd} was not opened through the recording FS")
        return ino

    # --- files -------------------------------------------------------------------------------------------------
    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        existed = os.path.exists(path)
        fd = super().open(path, flags, mode)
        ino = self.names.get(path)
        if ino is None or not existed:
            ino = self._new_ino(path)
            # A file that was there before this FS saw it (not made by the recorded run) is adopted silently.
            if not existed:
                self.calls.append(Call("create", path=path, ino=ino))
        if existed and flags & os.O_TRUNC:
            self.calls.append(Call("truncate", path=path, ino=ino, size=0))
        self.fds[fd] = ino
        return fd

    def close(self, fd: int) -> None:
        self.fds.pop(fd, None)
        super().close(fd)

    def pwrite(self, fd: int, data: Buffer, offset: int) -> None:
        super().pwrite(fd, data, offset)
        if not self._nested:
            self.calls.append(
                Call("write", path=self.path_of_fd(fd), ino=self._ino_of(fd), offset=offset, data=bytes(data))
            )

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> None:
        self._nested += 1
        try:
            super().pwritev(fd, buffers, offset)
        finally:
            self._nested -= 1
        data = b"".join(bytes(b) for b in buffers)
        self.calls.append(Call("write", path=self.path_of_fd(fd), ino=self._ino_of(fd), offset=offset, data=data))

    def ftruncate(self, fd: int, size: int) -> None:
        super().ftruncate(fd, size)
        self.calls.append(Call("truncate", path=self.path_of_fd(fd), ino=self._ino_of(fd), size=size))

    def synced(self, fd: int) -> None:
        """A completed fdatasync: ``FS.fdatasync``'s own, or one the ``SyncWorker`` ran (reported on the loop
        thread)."""
        self._record_sync(fd, "fdatasync")

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        self._record_sync(fd, "fsync")

    def _record_sync(self, fd: int, how: str) -> None:
        thread = threading.current_thread().name
        self.calls.append(Call("sync", path=self.path_of_fd(fd), ino=self._ino_of(fd), how=how, thread=thread))

    # --- directory ---------------------------------------------------------------------------------------------
    def makedirs(self, path: str) -> None:
        missing = []
        p = os.path.abspath(path)
        while not os.path.isdir(p) and os.path.dirname(p) != p:
            missing.append(p)
            p = os.path.dirname(p)
        # Recorded first: FS.makedirs then syncs the parents, and those syncs are recorded as they happen.
        for d in reversed(missing):
            self.calls.append(Call("mkdir", path=d))
        super().makedirs(path)

    def unlink(self, path: str) -> None:
        super().unlink(path)
        ino = self.names.pop(path, -1)
        self.paths.pop(ino, None)
        self.calls.append(Call("unlink", path=path, ino=ino))

    def rename(self, src: str, dst: str) -> None:
        super().rename(src, dst)
        ino = self.names.pop(src, -1)
        replaced = self.names.pop(dst, -1)
        self.paths.pop(replaced, None)
        if ino >= 0:
            self.names[dst] = ino
            self.paths[ino] = dst
        self.calls.append(Call("rename", path=src, dst=dst, ino=ino))

    def fsync_dir(self, path: str) -> None:
        super().fsync_dir(path)
        self.calls.append(Call("dirsync", path=path))

    # --- views -------------------------------------------------------------------------------------------------
    def mutating(self) -> list[Call]:
        return [c for c in self.calls if c.kind != "mark"]

    def kinds(self) -> list[str]:
        return [c.kind for c in self.calls if c.kind != "mark"]


SHORT = "short"
"""``FaultFS`` error that writes part of the data and then fails with ``ENOSPC``: as in Linux, where a write copies
page by page and stops at the page it cannot get, the part written ends at a 4 KiB file boundary (and is empty when
the write lies within one page)."""

PAGE = 4096


def _short_part(data: bytes, offset: int) -> bytes:
    """The prefix of ``data`` a short write leaves: up to the last page boundary before its middle."""
    cut = (offset + len(data) // 2) // PAGE * PAGE - offset
    return data[: max(cut, 0)]


KINDS = ("open", "pwrite", "ftruncate", "fdatasync", "fsync", "fsync_dir", "rename", "unlink")


@dataclass
class Fault:
    kind: str  # one of KINDS ("pwrite" also counts pwritev calls)
    nth: int  # 1-based, counted from when the fault was armed
    error: int | str = errno_mod.EIO  # an errno, or SHORT
    sticky: bool = False  # fail every matching call from the nth on
    seen: int = 0
    fired: int = 0
    fired_at: list[str] = field(default_factory=list)


class FaultFS(FS):
    """Delegates to ``inner`` and fails the calls chosen by ``arm``."""

    def __init__(self, inner: FS | None = None) -> None:
        self.inner = inner or FS()
        self.fault: Fault | None = None
        self.counts: dict[str, int] = dict.fromkeys(KINDS, 0)

    def arm(self, kind: str, nth: int = 1, error: int | str = errno_mod.EIO, sticky: bool = False) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"unknown call kind {kind!r}")
        if error == SHORT and kind != "pwrite":
            raise ValueError("a short write is only for pwrite")
        self.fault = Fault(kind, nth, error, sticky)
        return self.fault

    def disarm(self) -> None:
        self.fault = None

    @property
    def fired(self) -> bool:
        return self.fault is not None and self.fault.fired > 0

    def _check(self, kind: str, what: str) -> int | str | None:
        """Count a call; the error to inject, or None to let it through."""
        self.counts[kind] += 1
        f = self.fault
        if f is None or f.kind != kind:
            return None
        f.seen += 1
        if f.seen == f.nth or (f.sticky and f.seen > f.nth):
            f.fired += 1
            f.fired_at.append(what)
            return f.error
        return None

    @staticmethod
    def _raise(err: int, what: str) -> None:
        raise StorageIOError(err, f"{what}: {os.strerror(err)} (injected)")

    # --- faulty calls ------------------------------------------------------------------------------------------
    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        err = self._check("open", path)
        if isinstance(err, int):
            self._raise(err, f"open {path}")
        return self.inner.open(path, flags, mode)

    def pwrite(self, fd: int, data: Buffer, offset: int) -> None:
        err = self._check("pwrite", f"pwrite fd {fd} @{offset}")
        if err == SHORT:
            part = _short_part(bytes(data), offset)
            if part:
                self.inner.pwrite(fd, part, offset)
            self._raise(errno_mod.ENOSPC, "pwrite (short write)")
        elif isinstance(err, int):
            self._raise(err, "pwrite")
        self.inner.pwrite(fd, data, offset)

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> None:
        err = self._check("pwrite", f"pwritev fd {fd} @{offset}")
        if err == SHORT:
            part = _short_part(b"".join(bytes(b) for b in buffers), offset)
            if part:
                self.inner.pwrite(fd, part, offset)
            self._raise(errno_mod.ENOSPC, "pwritev (short write)")
        elif isinstance(err, int):
            self._raise(err, "pwritev")
        self.inner.pwritev(fd, buffers, offset)

    def ftruncate(self, fd: int, size: int) -> None:
        err = self._check("ftruncate", f"ftruncate fd {fd} to {size}")
        if isinstance(err, int):
            self._raise(err, "ftruncate")
        self.inner.ftruncate(fd, size)

    def fdatasync(self, fd: int) -> None:
        err = self._check("fdatasync", f"fdatasync fd {fd}")
        if isinstance(err, int):
            self._raise(err, "fdatasync")
        self.inner.fdatasync(fd)

    def fsync(self, fd: int) -> None:
        err = self._check("fsync", f"fsync fd {fd}")
        if isinstance(err, int):
            self._raise(err, "fsync")
        self.inner.fsync(fd)

    def fsync_dir(self, path: str) -> None:
        err = self._check("fsync_dir", path)
        if isinstance(err, int):
            self._raise(err, f"fsync directory {path}")
        self.inner.fsync_dir(path)

    def rename(self, src: str, dst: str) -> None:
        err = self._check("rename", src)
        if isinstance(err, int):
            self._raise(err, f"rename {src}")
        self.inner.rename(src, dst)

    def unlink(self, path: str) -> None:
        err = self._check("unlink", path)
        if isinstance(err, int):
            self._raise(err, f"unlink {path}")
        self.inner.unlink(path)

    # --- pass-through ------------------------------------------------------------------------------------------
    def close(self, fd: int) -> None:
        self.inner.close(fd)

    def synced(self, fd: int) -> None:
        self.inner.synced(fd)

    def size(self, fd: int) -> int:
        return self.inner.size(fd)

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        return self.inner.pread(fd, n, offset)

    def listdir(self, path: str) -> list[str]:
        return self.inner.listdir(path)

    def exists(self, path: str) -> bool:
        return self.inner.exists(path)

    def makedirs(self, path: str) -> None:
        self.inner.makedirs(path)

    def lock_dir(self, path: str) -> int:
        return self.inner.lock_dir(path)

    def unlock_dir(self, fd: int) -> None:
        self.inner.unlock_dir(fd)

    def map(self, fd: int, size: int) -> mmap.mmap:
        return self.inner.map(fd, size)

    def mark(self, label: str, info: Any = None) -> None:
        """Forward a mark to a recording inner FS (so a FaultFS over a RecordingFS drives the same workloads)."""
        if isinstance(self.inner, RecordingFS):
            self.inner.mark(label, info)


class CountingFS(FS):
    """Counts the calls that make data durable: fdatasync, fsync and directory fsyncs."""

    def __init__(self) -> None:
        self.syncs = 0

    def fdatasync(self, fd: int) -> None:
        self.syncs += 1
        super().fdatasync(fd)

    def fsync(self, fd: int) -> None:
        self.syncs += 1
        super().fsync(fd)

    def fsync_dir(self, path: str) -> None:
        self.syncs += 1
        super().fsync_dir(path)
