"""One ``NNNNN.wal`` file: its slot table, data records and encryption header.

Writes go through ``fs.pwrite``/``pwritev``; reads come from a read-only shared mapping of the file, which sees
those writes at once. The in-memory state is a handful of integers (count, first/last index, data end), so a WAL
of any size costs the same memory.
"""

from __future__ import annotations

import bisect
import logging
import mmap
import os
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import add, and_, attrgetter, itemgetter
from typing import Any

from aiowal import records, speedups
from aiowal.errors import CorruptionError, EncryptionKeyError
from aiowal.format import (
    DATA_START,
    ENC_HEADER,
    ENC_OFFSET,
    LOG_FILE_SIZE,
    MAX_DATA_END,
    MAX_ENTRIES,
    SLOT,
    SLOT_AREA,
    SLOT_SIZE,
    TYPE_MASK,
    U32,
    U64,
    UNLIMITED,
    entry_size,
    grown_size,
    signed_type,
)
from aiowal.fs import FS
from aiowal.keyregistry import aes_ctr
from aiowal.raftpb import Entry

log = logging.getLogger(__name__)

IOV_MAX = 1024
_DATA, _TERM, _INDEX, _TYPE = (attrgetter(name) for name in ("data", "term", "index", "type"))
_FIRST = itemgetter(0)
_MAX_ENTRY_OVERHEAD = 39  # entry_size(term, index, type, n) - n is at most this (three 10-byte varints, tags, length)
_ZERO_SLOT_AREA = memoryview(bytes(SLOT_AREA))


@dataclass
class SlotInfo:
    """One decoded slot."""

    term: int
    index: int
    offset: int
    etype: int
    crc: int


class LogFile:
    """An open log file. ``count`` slots are used; their indexes run from ``first`` to ``last``."""

    # Entries per file before rotation. Always 30,000 (Dgraph's maxNumEntries); tests lower it to exercise
    # rotation with few entries. Files stay readable by Dgraph either way: they just hold fewer slots.
    max_entries = MAX_ENTRIES

    def __init__(self, fs: FS, path: str, fid: int, fd: int, size: int, writable: bool) -> None:
        self.fs = fs
        self.path = path
        self.fid = fid
        self.fd = fd
        self.size = size
        self.writable = writable
        self.mm: mmap.mmap | None = fs.map(fd, size) if size else None
        self.key_id = 0
        self.data_key: bytes | None = None
        self.base_iv = b""
        self.count = 0
        self.first = 0
        self.last = 0
        self.last_term = 0
        self.data_end = DATA_START
        self.contiguous = True
        # Set when new data must not go into this file again: an encrypted file whose tail was cut (its
        # keystream positions were used) gets no more appends, so no key/IV pair ever encrypts two payloads.
        self.sealed = False
        self.problem: str | None = None  # set by load: the first invalid slot, if any

    # --- opening ----------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, fs: FS, path: str, fid: int, key_id: int = 0, data_key: bytes | None = None) -> LogFile:
        """A new sparse 256 MiB file, as Dgraph creates one; with a data key, its keyID and a random base IV."""
        fd = fs.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        lf: LogFile | None = None
        try:
            fs.ftruncate(fd, LOG_FILE_SIZE)
            lf = cls(fs, path, fid, fd, LOG_FILE_SIZE, True)
            if data_key is not None:
                lf.key_id = key_id
                lf.data_key = data_key
                lf.base_iv = os.urandom(8)
                fs.pwrite(fd, ENC_HEADER.pack(key_id, lf.base_iv), ENC_OFFSET)
        except BaseException:
            if lf is not None:
                lf.close()  # the mapping holds a descriptor of its own
            else:
                fs.close(fd)
            raise
        return lf

    @classmethod
    def open(cls, fs: FS, path: str, fid: int, writable: bool) -> LogFile:
        """Open an existing file (``load`` must follow). A file shorter than its 1 MiB header holds no entries:
        ``load`` says so, and open decides whether that is a file cut short while it was created or damage."""
        fd = fs.open(path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            return cls(fs, path, fid, fd, fs.size(fd), writable)
        except BaseException:
            fs.close(fd)
            raise

    @property
    def short(self) -> bool:
        """Whether the file is shorter than its header (a creation cut short by a crash, or damage)."""
        return 0 < self.size < DATA_START

    def empty_reason(self) -> str:
        """Why a file with no used slot holds no entries, naming it and an offset."""
        if self.short:
            return f"{self.path}: offset {self.size}: log file shorter than its 1 MiB header"
        if self.mm is None:
            return f"{self.path}: offset 0: empty file"
        return f"{self.path}: offset 0: no entry in slot 0"

    def header_key_id(self) -> tuple[int, bytes]:
        """The keyID and base IV stored at 1 MiB - 16 (keyID 0: not encrypted)."""
        if self.mm is None or self.short:
            return 0, b""
        raw = self.fs.pread(self.fd, ENC_HEADER.size, ENC_OFFSET)  # pread: a hole in plain files (see load)
        if len(raw) < ENC_HEADER.size:
            return 0, b""
        key_id, iv = ENC_HEADER.unpack(raw)
        return int(key_id), bytes(iv)

    def peek_first_index(self) -> int:
        """The index in slot 0 (0: no entries), read before ``load`` (with pread, see ``load``)."""
        raw = self.fs.pread(self.fd, 8, 8) if self.mm is not None and not self.short else b""
        return int(U64.unpack(raw)[0]) if len(raw) == 8 else 0

    def load(self, validate_records: bool) -> int:
        """Read the slot table and check its structure; returns how many leading slots are valid.

        Used slots must hold strictly increasing indexes, non-decreasing terms and data offsets inside the file,
        followed only by empty slots. Without ``validate_records`` only the checks that cost no scan in Python are
        made (indexes, terms, the first and last record); with it every record is checked, CRC included. ``problem``
        describes the first invalid slot, with its offset (None when the whole table is valid); the caller decides
        whether it is an unsynced tail to cut or damage to report (see ``recovery``).
        """
        self.problem = None
        if self.mm is None:
            return 0
        if self.short:
            self.problem = f"{self.path}: offset {self.size}: log file shorter than its 1 MiB header"
            self._set_prefix(array("Q"), 0)
            return 0
        # pread, not the mapping: most of a slot table is a hole, and reading a hole through a shared mapping of a
        # file on a full tmpfs raises SIGBUS (the page cannot be allocated); pread just returns zeros.
        raw = self.fs.pread(self.fd, SLOT_AREA, 0)
        zero = bytes(8)
        n = bisect.bisect_left(  # Dgraph's firstEmptySlot: the first slot whose index is 0
            range(MAX_ENTRIES), True, key=lambda k: raw[k * SLOT_SIZE + 8 : k * SLOT_SIZE + 16] == zero
        )
        table = array("Q")
        table.frombytes(raw[: n * SLOT_SIZE])  # only the used slots: decoding all 30,000 costs milliseconds
        table.byteswap()
        indexes = table[1::4]
        good = n
        if n and not indexes[0]:  # slot 0 empty, used slots after it (the search above assumes none): none valid
            good = 0
        elif n:
            if indexes[0] + n > 1 << 64 or indexes[:n] != array("Q", range(indexes[0], indexes[0] + n)):
                good = records.first_not_increasing(indexes, n, strict=True)  # not contiguous: a gap, or damage
            good = min(good, records.first_not_increasing(table[0::4], good, strict=False))
            if table[2] < DATA_START:
                good = 0
            if validate_records:
                good = min(good, records.first_not_increasing(table[2::4], good, strict=True))
                good = next(records.bad_records(table, self.mm, self.size, good), good)
            elif good and not self._record_fits(table, good - 1):
                good -= 1
        if good < n:
            self.problem = self._slot_problem(table, good)
        elif not raw.endswith(_ZERO_SLOT_AREA[: len(raw) - n * SLOT_SIZE]):  # no copies: fast
            after = len(raw) - len(raw[n * SLOT_SIZE :].lstrip(b"\0"))
            slot = after // SLOT_SIZE
            self.problem = (
                f"{self.path}: offset {slot * SLOT_SIZE}: slot {slot} is not empty after the first empty slot {n}"
            )
        self._set_prefix(table, good)
        return good

    def _slot_problem(self, table: array[int], k: int) -> str:
        """What is wrong with slot ``k``, the first invalid one (all before it are valid)."""
        term, index, off = table[4 * k], table[4 * k + 1], table[4 * k + 2]
        if index == 0:  # an empty slot before a used one (the table was decoded up to a used slot past it)
            j = next((j for j in range(k + 1, len(table) // 4) if table[4 * j + 1]), k)
            return f"{self.path}: offset {j * SLOT_SIZE}: slot {j} is not empty after the first empty slot {k}"
        where = f"{self.path}: offset {k * SLOT_SIZE}: slot {k} (index {index})"
        if k:
            p_term, p_index, p_off = table[4 * k - 4], table[4 * k - 3], table[4 * k - 2]
            if index <= p_index:
                return f"{where}: index does not follow {p_index}"
            if term < p_term:
                return f"{where}: term {term} is below the previous term {p_term}"
            if off <= p_off:
                return f"{where}: data offset {off} overlaps the previous record"
        if off < DATA_START:
            return f"{where}: data offset {off} outside the data area (record at offset {off})"
        assert self.mm is not None
        problem = records.record_problem(table, self.mm, self.size, k, len(table) // 4)
        return f"{where}: {problem or 'invalid record'} (record at offset {off})"

    def _record_fits(self, table: array[int], slot: int) -> bool:
        assert self.mm is not None
        off = table[4 * slot + 2]
        if off + 4 > self.size:
            return False
        return bool(off + 4 + U32.unpack_from(self.mm, off)[0] <= self.size)

    def record_problems(self) -> list[str]:
        """Every used slot whose record is out of bounds or fails its checksum, naming file and offset."""
        if not self.count:
            return []
        table = array("Q")
        table.frombytes(self.fs.pread(self.fd, self.count * SLOT_SIZE, 0))
        table.byteswap()
        assert self.mm is not None
        return [self._slot_problem(table, k) for k in records.bad_records(table, self.mm, self.size, self.count)]

    def _set_prefix(self, table: array[int], n: int) -> None:
        self.count = n
        if n == 0:
            self.first = self.last = self.last_term = 0
            self.data_end = DATA_START
            self.contiguous = True
            return
        self.first = table[1]
        self.last = table[4 * (n - 1) + 1]
        self.last_term = table[4 * (n - 1)]
        self.contiguous = self.last - self.first + 1 == n
        assert self.mm is not None
        off = table[4 * (n - 1) + 2]
        length = U32.unpack_from(self.mm, off)[0] if off + 4 <= self.size else 0
        self.data_end = min(off + 4 + length, self.size)

    def cut_to(self, n: int) -> None:
        """Repair: make ``n`` the number of used slots, zeroing every slot after it."""
        self.fs.pwrite(self.fd, bytes(SLOT_AREA - n * SLOT_SIZE), n * SLOT_SIZE)
        self.forget_from(n)

    def forget_from(self, n: int) -> None:
        """Use only the first ``n`` slots (a read-only view of what ``cut_to`` would keep)."""
        table = array("Q")
        if n:
            table.frombytes(self.fs.pread(self.fd, n * SLOT_SIZE, 0))
            table.byteswap()
        self._set_prefix(table, n)

    # --- reading ----------------------------------------------------------------------------------------------
    def slot(self, s: int) -> SlotInfo:
        assert self.mm is not None
        term, index, off, word = SLOT.unpack_from(self.mm, s * SLOT_SIZE)
        return SlotInfo(term, index, off, word & TYPE_MASK, word >> 32)

    def slot_of(self, index: int) -> int:
        """The slot holding ``index``, or -1 when the file has no entry with that index (a gap)."""
        if not self.count or index < self.first or index > self.last:
            return -1
        if self.contiguous:
            return index - self.first
        s = self.slot_ge(index)
        return s if s < self.count and self.index_at(s) == index else -1

    def slot_ge(self, index: int) -> int:
        """The first used slot whose index is >= ``index`` (``count`` if none)."""
        if self.contiguous:
            return max(0, min(self.count, index - self.first))
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self.index_at(mid) < index:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def index_at(self, s: int) -> int:
        assert self.mm is not None
        return int(U64.unpack_from(self.mm, s * SLOT_SIZE + 8)[0])

    def term_at(self, s: int) -> int:
        assert self.mm is not None
        return int(U64.unpack_from(self.mm, s * SLOT_SIZE)[0])

    def read(self, s: int, stop: int, hi: int, budget: int, out: list[Entry]) -> int:
        """Append entries from slots ``[s, stop)`` with index < ``hi`` to ``out``, spending ``budget`` bytes of
        protobuf size (``UNLIMITED``: no limit); returns the budget left, or -1 once the size limit stopped it.

        Slots, lengths and payload slices are decoded by C-level passes over the whole range; only building the
        ``Entry`` objects is a Python loop."""
        mm = self.mm
        assert mm is not None
        if self.contiguous and self.count:
            stop = min(stop, max(s, hi - self.first))  # no slot at or past hi: nothing to test per entry
        if stop <= s:
            return budget
        if self.key_id and self.data_key is None:
            raise EncryptionKeyError(f"{self.path}: encrypted, and opened without the key")
        read = speedups.read
        if read is not None and self.data_key is None:
            try:
                return read(Entry, mm, s, stop, hi, min(budget, UNLIMITED), bool(out), out)
            except ValueError as exc:  # a record outside the file, or a type that is not an EntryType
                raise CorruptionError(f"{self.path}: {exc}") from exc
        return self._read_python(s, stop, hi, budget, out)

    def _read_python(self, s: int, stop: int, hi: int, budget: int, out: list[Entry]) -> int:
        """``read`` without the C accelerator (and for encrypted files, whose payloads are decrypted here)."""
        mm = self.mm
        assert mm is not None
        table = array("Q")
        table.frombytes(mm[s * SLOT_SIZE : stop * SLOT_SIZE])
        table.byteswap()
        indexes = table[1::4]
        if not self.contiguous:
            cut = bisect.bisect_left(indexes, hi)  # indexes rise strictly within a file (checked on open)
            indexes = indexes[:cut]
        take = len(indexes)
        if not take:
            return budget
        terms, offs, words = table[0 : 4 * take : 4], table[2 : 4 * take : 4], table[3 : 4 * take : 4]
        try:
            lens = list(map(_FIRST, map(U32.unpack_from, repeat(mm), offs)))
        except (struct.error, OverflowError) as exc:  # OverflowError: an offset beyond 2**63
            raise CorruptionError(f"{self.path}: a data offset points past the end of the file ({exc})") from exc
        begins = list(map(add, offs, repeat(4)))
        ends = list(map(add, begins, lens))
        if max(ends) > self.size:
            k = next(k for k, end in enumerate(ends) if end > self.size)
            raise CorruptionError(f"{self.path}: offset {offs[k]}: record of {lens[k]} bytes runs past end of file")
        types = list(map(and_, words, repeat(TYPE_MASK)))
        if max(types) > 2:
            types = [signed_type(t) for t in types]  # the raw value, as Dgraph reads it (int32 of the low bits)
        more = indexes[-1] == self.last and hi > self.last + 1  # the caller goes on to the next file
        if budget < UNLIMITED and (more or sum(lens) + _MAX_ENTRY_OVERHEAD * take > budget):
            for k, cost in enumerate(map(entry_size, terms, indexes, types, lens)):
                if (out or k) and cost > budget:
                    self._build(terms, indexes, types, begins, ends, k, out)
                    return -1
                budget -= cost
        self._build(terms, indexes, types, begins, ends, take, out)
        return budget

    def _build(
        self,
        terms: array[int],
        indexes: array[int],
        types: list[Any],  # ints, set as the closed EntryType enum (a bad value raises ValueError)
        begins: list[int],
        ends: list[int],
        take: int,
        out: list[Entry],
    ) -> None:
        """Append ``Entry`` objects for the first ``take`` decoded slots to ``out``."""
        mm = self.mm
        assert mm is not None
        datas = list(map(mm.__getitem__, map(slice, begins[:take], ends[:take])))
        key = self.data_key
        if key is not None:
            base_iv = self.base_iv
            datas = [
                aes_ctr(key, base_iv + U64.pack(b - 4), d) if d else d for b, d in zip(begins, datas, strict=False)
            ]
        add_entry = out.append
        new_entry = Entry
        try:
            # Setting the fields one by one is faster than Entry(term=..., ...) with upb's protobuf.
            for term, index, etype, data in zip(terms, indexes, types, datas, strict=False):  # datas: ``take``
                e = new_entry()
                e.term = term
                e.index = index
                e.type = etype
                if data:
                    e.data = data
                add_entry(e)
        except ValueError as exc:  # e.type = etype: raftpb.EntryType is a closed proto2 enum
            raise CorruptionError(f"{self.path}: an entry's type is not an EntryType ({exc})") from exc

    # --- writing ----------------------------------------------------------------------------------------------
    def append(self, entries: Sequence[Entry], start: int) -> int:
        """Write ``entries[start:]`` after the last record, data records first, then their slots, stopping where
        Dgraph's rotation rule (30,000 slots, 1 GiB of data) says the next file begins; returns where it stopped.

        An entry too big for the data cap still goes into an empty file (Dgraph would leave an empty file
        behind, bug B11)."""
        stop = min(len(entries), start + self.max_entries - self.count)
        if start >= stop:
            return start
        pack = speedups.pack
        packed: records.Packed | None
        if pack is not None and self.data_key is None:
            c_packed = pack(entries, start, stop, self.data_end, MAX_DATA_END, self.count == 0)
            packed = None if c_packed is None else ([c_packed[0]], *c_packed[1:])
        else:
            encrypt = records.encryptor(self.data_key, self.base_iv) if self.data_key is not None else None
            packed = records.pack(entries, start, stop, self.data_end, MAX_DATA_END, self.count == 0, encrypt)
        if packed is None:
            return start
        payloads, slots, end, count, first, last, last_term = packed
        if end > self.size:
            self._grow(end)
        at = self.data_end
        for i in range(0, len(payloads), IOV_MAX):
            chunk = payloads[i : i + IOV_MAX]
            self.fs.pwritev(self.fd, chunk, at)
            at += sum(map(len, chunk))
        self.fs.pwrite(self.fd, slots, self.count * SLOT_SIZE)
        if self.count == 0:
            self.first = first
            self.contiguous = True
        elif first != self.last + 1:
            self.contiguous = False
        self.count += count
        self.last = last
        self.last_term = last_term
        self.data_end = end
        return start + count

    def _grow(self, needed_end: int) -> None:
        self.resize(grown_size(self.size, needed_end))

    def resize(self, size: int) -> None:
        """Set the file's apparent size and remap it."""
        self.fs.ftruncate(self.fd, size)
        self.size = size
        self.remap()

    def remap(self) -> None:
        if self.mm is not None:
            self.mm.close()
        self.mm = self.fs.map(self.fd, self.size) if self.size else None

    def truncate_from(self, s: int) -> None:
        """Discard slots ``[s, count)``: zero them; new data will follow the record of slot ``s - 1``."""
        if s >= self.count:
            return
        self.fs.pwrite(self.fd, bytes((self.count - s) * SLOT_SIZE), s * SLOT_SIZE)
        self.forget_from(s)

    def drop_data(self, s: int) -> bool:
        """truncate_entries_until for one slot: forget a Normal entry's data. Returns whether it changed."""
        info = self.slot(s)
        if info.etype != 0 or self.mm is None:
            return False
        if U32.unpack_from(self.mm, info.offset)[0] == 0:
            return False
        # The slot first gets the dropped-data mark, then the length goes to zero: both states open as valid.
        new_word = (records.dropped_crc(info.term, info.index, info.offset) << 32) if info.crc else 0
        self.fs.pwrite(self.fd, U64.pack(new_word), s * SLOT_SIZE + 24)
        return True

    def zero_length(self, s: int) -> None:
        info = self.slot(s)
        self.fs.pwrite(self.fd, bytes(4), info.offset)

    def close(self) -> None:
        if self.mm is not None:
            self.mm.close()
            self.mm = None
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            self.fs.close(fd)
