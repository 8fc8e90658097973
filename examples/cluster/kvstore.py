"""The key-value state machines of the example node: ``MemoryKV`` (a dict) and ``SqliteKV`` (a SQLite file, for a
state larger than memory). Both apply the same JSON commands and write the same snapshot file: one JSON line
``[key, value]`` per key, written in a worker thread while the node goes on applying.

A store is rebuilt at every start from the node's stored snapshot and the log after it, as Raft replays them, so
``SqliteKV`` empties its file when it opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import Awaitable, Iterable, Iterator


def _write_lines(path: str, items: Iterable[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for k, v in items:
            f.write(json.dumps([k, v]))
            f.write("\n")


def _read_lines(path: str) -> Iterator[tuple[str, str]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            k, v = json.loads(line)
            yield k, v


class MemoryKV:
    """The state in a dict."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def apply(self, index: int, data: bytes) -> object:
        cmd = json.loads(data)
        if cmd["op"] == "put":
            self.data[cmd["key"]] = cmd["value"]
        elif cmd["op"] == "delete":
            self.data.pop(cmd["key"], None)
        return index

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def items(self) -> dict[str, str]:
        return dict(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def snapshot_to(self, path: str) -> Awaitable[None]:
        # The values are immutable strings: a shallow copy taken now is the state as of now.
        items = list(self.data.items())
        return asyncio.to_thread(_write_lines, path, items)

    async def restore_from(self, path: str) -> None:
        self.data = await asyncio.to_thread(lambda: dict(_read_lines(path)))


class SqliteKV:
    """The state in a SQLite file (write-ahead journal, no syncs: the Raft log is what makes writes durable).
    A snapshot reads through a second connection whose read transaction, opened when the snapshot is asked for,
    pins the state as of then while later entries are applied."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._snapshots: set[asyncio.Future[None]] = set()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)
        self.db = self._open(path)

    @staticmethod
    def _open(path: str) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        return db

    def apply(self, index: int, data: bytes) -> object:
        cmd = json.loads(data)
        if cmd["op"] == "put":
            self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (cmd["key"], cmd["value"]))
        elif cmd["op"] == "delete":
            self.db.execute("DELETE FROM kv WHERE k = ?", (cmd["key"],))
        return index

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def items(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT k, v FROM kv"))

    def __len__(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM kv").fetchone()[0])

    def snapshot_to(self, path: str) -> Awaitable[None]:
        reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM kv").fetchone()  # the read transaction starts here: the state as of now

        def write() -> None:
            try:
                _write_lines(path, reader.execute("SELECT k, v FROM kv"))
            finally:
                reader.close()

        fut = asyncio.ensure_future(asyncio.to_thread(write))
        self._snapshots.add(fut)
        fut.add_done_callback(self._snapshots.discard)
        return fut

    async def restore_from(self, path: str) -> None:
        # Build the new file beside the old one, then swap them; snapshots still reading the old one finish first.
        if self._snapshots:
            await asyncio.wait(set(self._snapshots))
        fresh = self.path + ".restore"

        def build() -> None:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(fresh + suffix)
            db = self._open(fresh)
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", _read_lines(path))
            db.execute("COMMIT")
            db.close()

        await asyncio.to_thread(build)
        self.db.close()
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path + suffix)
        os.replace(fresh, self.path)
        self.db = self._open(self.path)
