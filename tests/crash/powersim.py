"""A model of what a disk holds after a power cut, driven by the calls a ``RecordingFS`` recorded.

Each file (inode) has durable content and a list of pending data operations (writes and size changes) made since
its last ``fdatasync``/``fsync``; a sync of the file makes them durable. The directory has durable entries and a
list of pending operations (create, rename, unlink) made since the last fsync of the directory; that fsync makes
them durable. A file's sync does not make its directory entry durable (POSIX does not promise it).

A crash state is: all durable content, plus

- a prefix of the pending directory operations (journaling file systems commit metadata in order), and
- for every file, any subset of its pending data operations, applied in order, where an applied write may also
  be torn: only some of its 512-byte sectors reach the disk.

Content is kept as 4 KiB pages (absent or all-zero pages are holes), so a state costs only the pages written.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass

from fsdoubles import Call

PAGE = 4096
SECTOR = 512
ZERO_PAGE = bytes(PAGE)


class Content:
    """The bytes of one file: its size and its non-hole pages."""

    __slots__ = ("pages", "size")

    def __init__(self, size: int = 0, pages: dict[int, bytes] | None = None) -> None:
        self.size = size
        self.pages: dict[int, bytes] = pages if pages is not None else {}

    def copy(self) -> Content:
        return Content(self.size, dict(self.pages))

    def write(self, off: int, data: bytes) -> None:
        pos = 0
        n_total = len(data)
        while pos < n_total:
            p, po = divmod(off + pos, PAGE)
            n = min(PAGE - po, n_total - pos)
            page = self.pages.get(p, ZERO_PAGE)
            page = data[pos : pos + n] if n == PAGE else page[:po] + data[pos : pos + n] + page[po + n :]
            self.pages[p] = page
            pos += n
        self.size = max(self.size, off + n_total)

    def truncate(self, size: int) -> None:
        if size < self.size:
            last_page, keep = divmod(size, PAGE)
            for p in [p for p in self.pages if p > last_page or (p == last_page and keep == 0)]:
                del self.pages[p]
            if keep and last_page in self.pages:
                self.pages[last_page] = self.pages[last_page][:keep] + bytes(PAGE - keep)
        self.size = size

    def read(self, off: int, n: int) -> bytes:
        out = bytearray()
        end = min(off + n, self.size)
        pos = off
        while pos < end:
            p, po = divmod(pos, PAGE)
            k = min(PAGE - po, end - pos)
            out += self.pages.get(p, ZERO_PAGE)[po : po + k]
            pos += k
        return bytes(out)

    def digest(self, h: hashlib._Hash) -> None:
        h.update(self.size.to_bytes(8, "big"))
        for p in sorted(self.pages):
            page = self.pages[p]
            if page != ZERO_PAGE:
                h.update(p.to_bytes(8, "big"))
                h.update(page)

    def materialize(self, path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, self.size)
            for p, page in self.pages.items():
                if page != ZERO_PAGE:
                    os.pwrite(fd, page[: max(0, min(PAGE, self.size - p * PAGE))], p * PAGE)
        finally:
            os.close(fd)

    @classmethod
    def from_file(cls, path: str) -> Content:
        c = cls()
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            pos = 0
            while pos < size:
                try:
                    pos = os.lseek(fh.fileno(), pos, os.SEEK_DATA)
                except OSError:
                    break
                hole = os.lseek(fh.fileno(), pos, os.SEEK_HOLE)
                start = pos - pos % PAGE
                data = os.pread(fh.fileno(), hole - start, start)
                for k in range(0, len(data), PAGE):
                    page = data[k : k + PAGE]
                    if page.strip(b"\0"):
                        c.pages[(start + k) // PAGE] = page.ljust(PAGE, b"\0")
                pos = hole
        c.size = size
        return c


@dataclass
class CrashState:
    """The files of the directory after a simulated power cut (``present`` False: the directory itself is gone)."""

    files: dict[str, Content]
    present: bool = True
    pending_applied: int = 0  # how many pending operations were applied (0: only durable data)
    torn: int = 0  # how many writes were torn

    def digest(self) -> bytes:
        h = hashlib.sha256(b"present" if self.present else b"absent")
        for name in sorted(self.files):
            h.update(name.encode() + b"\0")
            self.files[name].digest(h)
        return h.digest()

    def materialize(self, directory: str) -> None:
        """Write the state to ``directory`` (which must not exist)."""
        if not self.present:
            return
        os.makedirs(directory)
        for name, content in self.files.items():
            content.materialize(os.path.join(directory, name))


class Disk:
    """Durable and pending state of one WAL directory, advanced call by call."""

    def __init__(self, directory: str) -> None:
        self.dir = os.path.abspath(directory)
        self.parent = os.path.dirname(self.dir)
        self.dir_durable = False
        self.dir_pending = False
        self.names: dict[str, int] = {}  # durable directory entries
        self.dir_ops: list[tuple[str, str, str, int]] = []  # (kind, name, dst, ino), pending
        self.durable: dict[int, Content] = {}
        self.pending: dict[int, list[tuple[str, int, bytes]]] = {}  # ("w", off, data) | ("t", size, b"")

    @classmethod
    def from_files(cls, directory: str, files: dict[str, Content], inodes: dict[str, int]) -> Disk:
        """A disk whose directory already holds ``files`` durably (``inodes``: their numbers in the recorder)."""
        disk = cls(directory)
        disk.dir_durable = True
        for name, content in files.items():
            ino = inodes[name]
            disk.names[name] = ino
            disk.durable[ino] = content.copy()
            disk.pending[ino] = []
        return disk

    def _name(self, path: str) -> str:
        d, name = os.path.split(os.path.abspath(path))
        if d != self.dir:
            raise AssertionError(f"{path} is outside {self.dir}")
        return name

    def apply(self, call: Call) -> None:
        kind = call.kind
        if kind == "mark":
            return
        if kind == "mkdir":
            if os.path.abspath(call.path) == self.dir:
                self.dir_pending = True
            return
        if kind == "dirsync":
            path = os.path.abspath(call.path)
            if path == self.parent and self.dir_pending:
                self.dir_durable = True
            elif path == self.dir:
                self._apply_dir_ops(self.names, self.dir_ops)
                self.dir_ops = []
            return
        if kind == "create":
            self.durable[call.ino] = Content()
            self.pending[call.ino] = []
            self.dir_ops.append(("create", self._name(call.path), "", call.ino))
        elif kind == "write":
            self.pending[call.ino].append(("w", call.offset, call.data))
        elif kind == "truncate":
            self.pending[call.ino].append(("t", call.size, b""))
        elif kind == "sync":
            content = self.durable[call.ino]
            for op in self.pending[call.ino]:
                _apply_data(content, op)
            self.pending[call.ino] = []
        elif kind == "rename":
            self.dir_ops.append(("rename", self._name(call.path), self._name(call.dst), call.ino))
        elif kind == "unlink":
            self.dir_ops.append(("unlink", self._name(call.path), "", call.ino))
        else:
            raise AssertionError(f"unknown call {kind}")

    @staticmethod
    def _apply_dir_ops(names: dict[str, int], ops: Iterable[tuple[str, str, str, int]]) -> None:
        for kind, name, dst, ino in ops:
            if kind == "create":
                names[name] = ino
            elif kind == "unlink":
                names.pop(name, None)
            elif kind == "rename" and name in names:
                names[dst] = names.pop(name)

    def n_pending(self) -> int:
        return len(self.dir_ops) + sum(len(v) for v in self.pending.values())

    def state(self, rng: random.Random | None, mode: str) -> CrashState:
        """A crash state. ``mode``: ``durable`` (nothing pending survives), ``all`` (everything pending does: what a
        process crash leaves), ``subset`` (a random prefix of directory operations, a random subset of writes) or
        ``torn`` (like subset, and applied writes may lose some of their sectors)."""
        if mode in ("durable", "all"):
            keep_dir = 0 if mode == "durable" else len(self.dir_ops)
        else:
            assert rng is not None
            keep_dir = rng.randint(0, len(self.dir_ops))
        names = dict(self.names)
        self._apply_dir_ops(names, self.dir_ops[:keep_dir])
        applied = keep_dir
        torn = 0
        files: dict[str, Content] = {}
        for name, ino in names.items():
            content = self.durable[ino].copy()
            p_keep = rng.choice((0.25, 0.5, 0.75, 0.9)) if rng is not None else 0.0
            for op in self.pending.get(ino, []):
                if mode == "durable":
                    break
                if mode == "all":
                    _apply_data(content, op)
                    applied += 1
                    continue
                assert rng is not None
                if rng.random() >= p_keep:
                    continue
                applied += 1
                if mode == "torn" and op[0] == "w" and rng.random() < 0.8 and _sectors(op[1], len(op[2])) > 1:
                    torn += 1
                    _apply_torn(content, op[1], op[2], rng)
                else:
                    _apply_data(content, op)
            files[name] = content
        if self.dir_durable:
            present = True
        elif not self.dir_pending or mode == "durable":
            present = False
        else:
            present = mode == "all" or (rng is not None and rng.random() < 0.5)
        return CrashState(files if present else {}, present, applied, torn)


def _apply_data(content: Content, op: tuple[str, int, bytes]) -> None:
    if op[0] == "w":
        content.write(op[1], op[2])
    else:
        content.truncate(op[1])


def _sectors(off: int, n: int) -> int:
    return (off + n + SECTOR - 1) // SECTOR - off // SECTOR


def _apply_torn(content: Content, off: int, data: bytes, rng: random.Random) -> None:
    """Apply only some of the 512-byte sectors ``data`` covers (at least one kept, at least one lost)."""
    pieces = []
    pos = off
    end = off + len(data)
    while pos < end:
        nxt = min(end, (pos // SECTOR + 1) * SECTOR)
        pieces.append((pos, nxt))
        pos = nxt
    keep = [rng.random() < 0.5 for _ in pieces]
    if all(keep):
        keep[rng.randrange(len(keep))] = False
    if not any(keep):
        keep[rng.randrange(len(keep))] = True
    for (a, b), k in zip(pieces, keep, strict=True):
        if k:
            content.write(a, data[a - off : b - off])
