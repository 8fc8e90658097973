"""What the commands have in common: exit statuses, the one-line error, the key file and the read-only open."""

from __future__ import annotations

import os

from aiowal.errors import EncryptionKeyError
from aiowal.storage import DiskStorage

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_ERROR = 2


class CliError(Exception):
    """An error reported as one line on stderr, with exit status 2."""


def read_key(path: str) -> bytes:
    """The raw 16-, 24- or 32-byte key held in the file at ``path`` (as Dgraph's key file)."""
    try:
        with open(path, "rb") as fh:
            key = fh.read(1 << 10)
    except OSError as exc:
        raise CliError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    if len(key) not in (16, 24, 32):
        hint = " (a trailing newline counts)" if key.endswith(b"\n") else ""
        raise CliError(f"key file {path} holds {len(key)} bytes; a key is 16, 24 or 32 raw bytes{hint}")
    return key


def open_read_only(path: str, key: bytes | None) -> DiskStorage:
    """``DiskStorage.open(path, read_only=True)``, with errors that say what to do."""
    if not os.path.exists(path):
        raise CliError(f"{path}: no such directory")
    if not os.path.isdir(path):
        raise CliError(f"{path}: not a directory")
    try:
        return DiskStorage.open(path, key=key, read_only=True)
    except EncryptionKeyError as exc:
        if key is None:
            raise CliError(f"{path}: the log is encrypted; pass --key-file PATH ({exc})") from exc
        raise


def human_size(n: int) -> str:
    """``n`` bytes in B, KiB, MiB, GiB or TiB with one decimal."""
    if n < 1024:
        return f"{n} B"
    v = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        v /= 1024
        if v < 1024:
            return f"{v:.1f} {unit}"
    return f"{v / 1024:.1f} TiB"
