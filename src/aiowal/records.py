"""Log records and slots as bytes, with no I/O: packing entries into records and slots, and checking records.

``pack`` is the pure-Python twin of the C accelerator's ``pack`` (``_speedups.c``): the two give the same bytes,
which the tests compare. ``bad_records`` is the one record check: a record must lie inside the file, end before the
next one starts, and match the CRC32C its slot carries (or carry none, as Dgraph writes them, or the mark of data
that ``truncate_entries_until`` dropped).
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator, Sequence
from itertools import accumulate, chain, compress, repeat
from operator import add, and_, attrgetter, gt, itemgetter, lshift, ne, or_, rshift
from typing import Any

from crc32c import crc32c as _crc32c

from aiowal.format import CRC_HEADER, SLOT, TYPE_MASK, U32, U64, record_crc
from aiowal.keyregistry import aes_ctr
from aiowal.raftpb import Entry

_DATA, _TERM, _INDEX, _TYPE = (attrgetter(name) for name in ("data", "term", "index", "type"))
_FIRST = itemgetter(0)

Packed = tuple[list[bytes], bytes, int, int, int, int, int]
"""What an append writes: the records (length prefix, payload, ...), the slots' bytes, the new data end, how many
entries, their first and last index, the last term."""


def pack(
    entries: Sequence[Entry],
    start: int,
    stop: int,
    data_end: int,
    max_data_end: int,
    force_first: bool,
    encrypt: Any = None,
) -> Packed | None:
    """Records and slots of ``entries[start:stop]`` from offset ``data_end`` on, as many as end by
    ``max_data_end`` (Dgraph's 1 GiB of data per file; ``force_first``: the first goes in anyway, into an empty
    file), or None when none fits. ``encrypt(offset, data)`` gives a payload's stored bytes (AES-CTR at that offset).
    Every per-entry step is a ``map`` over C functions: a Python loop body would cost more than the packing."""
    batch = entries[start:stop] if start or stop < len(entries) else entries
    datas = list(map(_DATA, batch))
    lens = list(map(len, datas))
    # ends[k] is where record k starts, ends[k + 1] where it ends (4-byte length prefix + payload).
    ends = list(accumulate(map(add, lens, repeat(4)), initial=data_end))
    if ends[-1] > max_data_end:
        fit = max(bisect.bisect_right(ends, max_data_end) - 1, 0)
        if fit == 0 and force_first:
            fit = 1
        if fit == 0:
            return None
        batch, datas, lens, ends = batch[:fit], datas[:fit], lens[:fit], ends[: fit + 1]
    offs = ends[:-1]
    terms = list(map(_TERM, batch))
    indexes = list(map(_INDEX, batch))
    types = list(map(_TYPE, batch))  # a closed proto2 enum: 0..2, so the low 32 bits as they are
    if encrypt is not None:
        datas = [encrypt(o, d) if d else d for o, d in zip(offs, datas, strict=True)]
    # format.record_crc and format.type_word, as C-level passes over the batch
    crcs = map(_crc32c, datas, map(_crc32c, map(CRC_HEADER.pack, terms, indexes, offs, types, lens)))
    words = map(or_, map(lshift, crcs, repeat(32)), types)
    slots = b"".join(map(SLOT.pack, terms, indexes, offs, words))
    records = list(chain.from_iterable(zip(map(U32.pack, lens), datas, strict=True)))
    return records, slots, ends[-1], len(batch), indexes[0], indexes[-1], terms[-1]


def bad_records(table: array[int], buf: Any, size: int, n: int) -> Iterator[int]:
    """The slots in ``[0, n)`` of a decoded slot ``table`` (u64s: term, index, offset, type word) whose record in
    ``buf`` (the file, ``size`` bytes) runs out of the file, into the next record, or fails its CRC. Runs on open
    over up to 30,000 records, so the common all-good case is C-level passes; anything suspect is then located by
    the record-by-record check."""
    if not n:
        return
    terms, indexes, offs, words = (
        table[0 : 4 * n : 4],
        table[1 : 4 * n : 4],
        table[2 : 4 * n : 4],
        table[3 : 4 * n : 4],
    )
    if max(offs) + 4 <= size:
        lens = list(map(_FIRST, map(U32.unpack_from, repeat(buf), offs)))
        begins = list(map(add, offs, repeat(4)))
        ends = list(map(add, begins, lens))
        if max(ends) <= size and not any(map(gt, ends[:-1], offs[1:])):
            types = map(and_, words, repeat(TYPE_MASK))
            stored = list(map(rshift, words, repeat(32)))
            datas = map(buf.__getitem__, map(slice, begins, ends))
            header_crcs = map(_crc32c, map(CRC_HEADER.pack, terms, indexes, offs, types, lens))
            crcs = map(_crc32c, datas, header_crcs)  # format.record_crc as C-level passes
            # A stored CRC of 0 is a slot written by Dgraph (no CRC to check); the others must match, or be the mark
            # of a dropped record (checked one by one).
            suspects = compress(range(n), map(and_, map(bool, stored), map(ne, crcs, stored)))
            yield from (k for k in suspects if record_problem(table, buf, size, k, k + 1) is not None)
            return
    yield from (k for k in range(n) if record_problem(table, buf, size, k, n) is not None)


def record_problem(table: array[int], buf: Any, size: int, k: int, n: int) -> str | None:
    """What is wrong with the record of slot ``k`` (it must end before slot ``k + 1``'s starts, if ``k + 1 < n``),
    or None."""
    term, index, off, word = table[4 * k : 4 * k + 4]
    if off + 4 > size:
        return f"data offset {off} outside the data area"
    length = U32.unpack_from(buf, off)[0]
    end = off + 4 + length
    if end > size:
        return f"record of {length} bytes runs past the end of the file"
    if k + 1 < n and end > table[4 * k + 6]:
        return f"record of {length} bytes overlaps the next record"
    if not crc_ok(term, index, off, word, buf[off + 4 : end]):
        return "record checksum mismatch"
    return None


def first_not_increasing(values: array[int], n: int, strict: bool) -> int:
    """The first position k < n where values[k] does not follow values[k-1] in order (n if none)."""
    prefix = values[:n].tolist()
    if prefix == sorted(prefix) and (not strict or len(set(prefix)) == n):
        return n
    for k in range(1, n):
        if prefix[k] < prefix[k - 1] or (strict and prefix[k] == prefix[k - 1]):
            return k
    return n  # pragma: no cover - the sorted comparison said otherwise


DROPPED_MARK = 0x5A5A_A5A5
"""XORed into the CRC of empty data for a record whose data truncate_entries_until dropped. It must differ from
the plain CRC of empty data: an empty entry appended where an older record lies (after an overwrite, or after a
crash left unsynced records past the log's end) has that CRC, and if its 4-byte record did not reach the disk
before a power cut, the older record's bytes would otherwise pass for dropped data and be read back as its data."""


def dropped_crc(term: int, index: int, off: int) -> int:
    """The CRC a slot carries once its Normal record's data is dropped."""
    return record_crc(term, index, off, 0, b"") ^ DROPPED_MARK


def crc_ok(term: int, index: int, off: int, word: int, stored: bytes) -> bool:
    """Whether a record matches its slot's CRC: no CRC (written by Dgraph), the stored bytes, or, for a Normal
    record whose data truncate_entries_until dropped (or is dropping: the length is zeroed after the mark), the
    dropped-data mark."""
    crc = word >> 32
    return (
        crc == 0
        or crc == record_crc(term, index, off, word, stored)
        or (word & TYPE_MASK == 0 and crc == dropped_crc(term, index, off))
    )


def encryptor(key: bytes, base_iv: bytes) -> Any:
    """``encrypt(offset, data)`` for ``pack``: AES-CTR with the IV of a record at that offset."""
    return lambda off, data: aes_ctr(key, base_iv + U64.pack(off), data)
