"""The only place aiowal touches the disk: every write, sync, truncate, rename, unlink, lock and mapping.

Keeping all of it behind one small class lets tests record the calls (to build power-loss crash states) or make a
chosen call fail (ENOSPC, EIO, a short write). Every ``OSError`` leaves here as ``StorageIOError``.
"""

from __future__ import annotations

import errno as errno_mod
import fcntl
import mmap
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from aiowal.errors import StorageIOError, StorageLockedError


def io_error(what: str, exc: OSError, path: str | None = None) -> StorageIOError:
    """The StorageIOError the fs raises for ``exc`` during ``what``."""
    where = f" {path}" if path else ""
    return StorageIOError(exc.errno, f"{what}{where}: {exc.strerror or exc}")


@contextmanager
def _io(what: str, path: str | None = None) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise io_error(what, exc, path) from exc


class FS:
    """Thin wrappers over ``os`` calls; subclass to observe or fail them."""

    @property
    def direct_fdatasync(self) -> bool:
        """Whether ``fdatasync`` is the system call itself (not overridden): then ``AsyncDiskStorage`` may run it on
        the GIL-free ``SyncWorker``, which reports each completed call through ``synced`` as this class does."""
        return type(self).fdatasync is FS.fdatasync

    # --- files -------------------------------------------------------------------------------------------------
    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        with _io("open", path):
            return os.open(path, flags | os.O_CLOEXEC, mode)

    def close(self, fd: int) -> None:
        with _io("close"):
            os.close(fd)

    def size(self, fd: int) -> int:
        with _io("fstat"):
            return os.fstat(fd).st_size

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        with _io("pread"):
            return os.pread(fd, n, offset)

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
        """Write all of ``data`` at ``offset``; a write that cannot complete raises (ENOSPC for a full disk)."""
        try:
            n = os.pwrite(fd, data, offset)
            while n < len(data):  # rare: finish a short write, or learn why it stopped
                if n <= 0:
                    raise OSError(errno_mod.ENOSPC, "short write")
                data = memoryview(data)[n:]
                offset += n
                n = os.pwrite(fd, data, offset)
        except OSError as exc:
            raise io_error("pwrite", exc) from exc

    def pwritev(self, fd: int, buffers: Sequence[bytes | bytearray | memoryview], offset: int) -> None:
        """Write ``buffers`` back to back at ``offset`` in one ``pwritev``; a short write is finished by ``pwrite``."""
        try:
            written = os.pwritev(fd, buffers, offset)
        except OSError as exc:
            raise io_error("pwritev", exc) from exc
        total = sum(map(len, buffers))
        if written < total:
            self.pwrite(fd, b"".join(buffers)[written:], offset + written)

    def ftruncate(self, fd: int, size: int) -> None:
        with _io("ftruncate"):
            os.ftruncate(fd, size)

    def fdatasync(self, fd: int) -> None:
        try:
            os.fdatasync(fd)
        except OSError as exc:
            raise io_error("fdatasync", exc) from exc
        self.synced(fd)

    def synced(self, fd: int) -> None:
        """Called after each completed ``fdatasync`` of ``fd``, whichever thread ran it: the seam through which a
        recording double sees the syncs of the GIL-free ``SyncWorker``. Does nothing here."""

    def fsync(self, fd: int) -> None:
        with _io("fsync"):
            os.fsync(fd)

    # --- directory ---------------------------------------------------------------------------------------------
    def listdir(self, path: str) -> list[str]:
        with _io("listdir", path):
            return os.listdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def makedirs(self, path: str) -> None:
        """Create ``path`` and its missing parents; each new directory's entry is made durable (its parent is
        fsynced), so a WAL created and written with ``hard_sync`` cannot vanish with a power cut."""
        missing = []
        p = os.path.abspath(path)
        while not os.path.isdir(p) and os.path.dirname(p) != p:
            missing.append(p)
            p = os.path.dirname(p)
        with _io("mkdir", path):
            os.makedirs(path, exist_ok=True)
        for d in reversed(missing):
            self.fsync_dir(os.path.dirname(d))

    def unlink(self, path: str) -> None:
        with _io("unlink", path):
            os.unlink(path)

    def rename(self, src: str, dst: str) -> None:
        with _io("rename", src):
            os.rename(src, dst)

    def fsync_dir(self, path: str) -> None:
        """Make creations, renames and deletions in ``path`` durable."""
        with _io("fsync directory", path):
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def lock_dir(self, path: str) -> int:
        """Take an exclusive ``flock`` on the directory; ``StorageLockedError`` if someone else holds it."""
        with _io("open directory", path):
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise StorageLockedError(f"{path} is open in another process or storage instance") from exc
        except OSError as exc:
            os.close(fd)
            raise StorageIOError(exc.errno, f"flock {path}: {exc.strerror}") from exc
        return fd

    def dir_in_use(self, path: str) -> bool:
        """Whether another opener holds the directory's lock (a writer is live); takes no lock itself."""
        with _io("open directory", path):
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError as exc:
            raise StorageIOError(exc.errno, f"flock {path}: {exc.strerror}") from exc
        finally:
            os.close(fd)  # closing drops the shared lock, if it was taken
        return False

    def unlock_dir(self, fd: int) -> None:
        with _io("unlock directory"):
            os.close(fd)

    # --- reads -------------------------------------------------------------------------------------------------
    def map(self, fd: int, size: int) -> mmap.mmap:
        """A read-only shared mapping of the first ``size`` bytes (reads see pwrite at once: same page cache)."""
        with _io("mmap"):
            try:
                return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
            except ValueError as exc:  # the file shrank since its size was read (another process writes it)
                raise OSError(errno_mod.ESTALE, f"the file changed size while it was mapped ({exc})") from exc


DEFAULT_FS = FS()
