from collections.abc import Sequence
from typing import Any

from aiowal.raftpb import Entry

HARDWARE_CRC: int

def crc32c(data: bytes | bytearray | memoryview, value: int = 0, /) -> int: ...
def pack(
    entries: Sequence[Entry], start: int, stop: int, data_end: int, max_data_end: int, force_first: bool, /
) -> tuple[bytes, bytes, int, int, int, int, int] | None: ...
def read(
    entry_cls: type[Entry], buf: Any, s: int, stop: int, hi: int, budget: int, started: bool, out: list[Entry], /
) -> int: ...
def entries_ok(entries: Sequence[Entry], entry_cls: type[Entry], /) -> bool: ...
