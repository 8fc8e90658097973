"""badger's ``KEYREGISTRY`` file (the per-file data keys of an encrypted WAL) and AES-CTR as Dgraph uses it.

Layout: a 16-byte IV, the 12 bytes of ``"Hello Badger"`` encrypted with the master key and that IV (a wrong key
shows here), then records ``u32 BE length | u32 BE CRC32C(proto) | DataKey proto``. A record's ``data`` is the
data key encrypted with the master key and the record's own IV.
"""

from __future__ import annotations

import functools
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiowal.badgerpb import DataKey
from aiowal.errors import CorruptionError, EncryptionKeyError
from aiowal.format import KEY_REGISTRY_NAME, KEY_REGISTRY_REWRITE_NAME, crc32c
from aiowal.fs import FS

SANITY_TEXT = b"Hello Badger"
ROTATION_SECONDS = 10 * 24 * 3600  # badger's EncryptionKeyRotationDuration used by Dgraph's raftwal
log = logging.getLogger(__name__)
_RECORD_HEAD = struct.Struct(">II")
_HEADER_LEN = 16 + len(SANITY_TEXT)


def check_key(key: bytes | None) -> bytes | None:
    """Validate a master key's type and length (16, 24 or 32 bytes); an empty key means no encryption."""
    if key is None:
        return None
    if not isinstance(key, bytes | bytearray):
        raise TypeError(f"key must be bytes, not {type(key).__name__}")
    if len(key) == 0:
        return None
    if len(key) not in (16, 24, 32):
        raise EncryptionKeyError(f"Encryption key's length should be either 16, 24, or 32 bytes (got {len(key)} bytes)")
    return bytes(key)


def aes_ctr(key: bytes, iv: bytes, data: bytes | memoryview) -> bytes:
    """AES-CTR with a 16-byte initial counter block; the same call encrypts and decrypts."""
    return _load_aes_ctr()(key, iv, data)


@functools.cache
def _load_aes_ctr() -> Callable[[bytes, bytes, bytes | memoryview], bytes]:
    """``cryptography`` is imported on the first use only: plain directories never need it."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    def aes_ctr(key: bytes, iv: bytes, data: bytes | memoryview) -> bytes:
        return Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor().update(data)

    return aes_ctr


@dataclass(frozen=True)
class DataKeyInfo:
    """A decrypted data key from the registry."""

    key_id: int
    key: bytes
    created_at: int


class KeyRegistry:
    """The data keys of one WAL directory, opened with the master key.

    Reading never changes the file. ``latest_data_key`` creates the registry or appends a key only when asked to
    write (a new log file needs a key), so opening a directory for inspection leaves it untouched.
    """

    def __init__(self, fs: FS, directory: str, master_key: bytes) -> None:
        self._fs = fs
        self._dir = directory
        self._master = master_key
        self._path = os.path.join(directory, KEY_REGISTRY_NAME)
        self._keys: dict[int, DataKeyInfo] = {}
        self._valid_end = 0
        self._exists = fs.exists(self._path)
        if self._exists:
            self._load()

    @property
    def exists(self) -> bool:
        """Whether the registry file exists (a directory gets one with its first encrypted log file)."""
        return self._exists

    def has(self, key_id: int) -> bool:
        return key_id in self._keys

    def _load(self) -> None:
        fd = self._fs.open(self._path, os.O_RDONLY)
        try:
            size = self._fs.size(fd)
            raw = self._fs.pread(fd, size, 0)
        finally:
            self._fs.close(fd)
        if len(raw) < _HEADER_LEN:
            raise CorruptionError(f"{self._path}: offset 0: key registry shorter than its {_HEADER_LEN}-byte header")
        iv = raw[:16]
        if aes_ctr(self._master, iv, raw[16:_HEADER_LEN]) != SANITY_TEXT:
            raise EncryptionKeyError("Encryption key mismatch")
        pos = _HEADER_LEN
        while pos < len(raw):
            end = pos + _RECORD_HEAD.size
            length, crc = _RECORD_HEAD.unpack_from(raw, pos) if end <= len(raw) else (0, 0)
            body = raw[end : end + length]
            last = end + length >= len(raw)
            zeros = not raw[pos:].strip(b"\0")  # the file grew but the record never reached the disk
            if end > len(raw) or len(body) != length or (last and crc32c(body) != crc) or zeros:
                # A record torn by a crash while it was appended: its key was never used (keys are synced
                # before any log file names them), so the registry ends before it.
                log.warning("%s: offset %d: ignoring a torn key record at the end", self._path, pos)
                break
            if crc32c(body) != crc:
                raise CorruptionError(f"{self._path}: offset {pos}: checksum mismatch")
            dk = DataKey()
            try:
                dk.ParseFromString(body)
            except Exception as exc:  # protobuf raises its own DecodeError
                raise CorruptionError(f"{self._path}: offset {pos}: bad key record: {exc}") from exc
            if len(dk.iv) != 16:
                raise CorruptionError(f"{self._path}: offset {pos}: key record IV of {len(dk.iv)} bytes")
            plain = aes_ctr(self._master, dk.iv, dk.data)
            self._keys[dk.key_id] = DataKeyInfo(dk.key_id, plain, dk.created_at)
            pos = end + length
        self._valid_end = pos

    def data_key(self, key_id: int) -> bytes:
        """The data key with this id; ``EncryptionKeyError`` if the registry does not hold it."""
        info = self._keys.get(key_id)
        if info is None:
            raise EncryptionKeyError(f"Error for the KEY ID {key_id} err: Invalid datakey id")
        return info.key

    def latest_data_key(self) -> DataKeyInfo:
        """The newest data key if younger than 10 days, else a new one appended (creating the registry if needed)."""
        if not self._exists:
            self._create()
        now = int(time.time())
        if self._keys:
            newest = self._keys[max(self._keys)]
            if now - newest.created_at < ROTATION_SECONDS:
                return newest
        return self._append_new_key(now)

    def _create(self) -> None:
        iv = os.urandom(16)
        header = iv + aes_ctr(self._master, iv, SANITY_TEXT)
        tmp = os.path.join(self._dir, KEY_REGISTRY_REWRITE_NAME)
        fd = self._fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self._fs.pwrite(fd, header, 0)
            self._fs.fsync(fd)
        finally:
            self._fs.close(fd)
        self._fs.rename(tmp, self._path)
        self._fs.fsync_dir(self._dir)
        self._exists = True
        self._valid_end = len(header)

    def _append_new_key(self, now: int) -> DataKeyInfo:
        key_id = max(self._keys, default=0) + 1
        plain = os.urandom(len(self._master))
        iv = os.urandom(16)
        dk = DataKey(key_id=key_id, data=aes_ctr(self._master, iv, plain), iv=iv, created_at=now)
        body = dk.SerializeToString()
        record = _RECORD_HEAD.pack(len(body), crc32c(body)) + body
        fd = self._fs.open(self._path, os.O_WRONLY)
        try:
            self._fs.pwrite(fd, record, self._valid_end)
            self._fs.ftruncate(fd, self._valid_end + len(record))
            self._fs.fsync(fd)
        finally:
            self._fs.close(fd)
        self._valid_end += len(record)
        info = DataKeyInfo(key_id, plain, now)
        self._keys[key_id] = info
        return info
