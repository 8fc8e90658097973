"""``aiowal dump``: entries as a table or as JSON lines, read and written in bounded pieces.

Every write to stdout is checked: a full disk, a short write or a closed pipe ends the command with an error (or,
for a reader that went away, quietly), never with a truncated dump and exit status 0.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

from rich.console import Console

from aiowal.cli.common import EXIT_OK, CliError, open_read_only
from aiowal.raftpb import ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType
from aiowal.storage import DiskStorage

READ_CHUNK_BYTES = 4 << 20  # max_size of each entries() call: memory stays bounded whatever the log's size
# Payload bytes base64-encoded per write of a large entry. Rounded down to a multiple of 3, so that the encoded
# pieces join into exactly the one-shot encoding (no padding inside).
JSON_DATA_CHUNK_BYTES = 3 << 20
PREVIEW_CHARS = 48


class CheckedOutput:
    """A binary stream whose every write must take all it is given; anything else is a ``CliError``."""

    def __init__(self, raw: BinaryIO, encoding: str = "utf-8") -> None:
        self._raw = raw
        self._encoding = encoding

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            try:
                n = self._raw.write(view)
            except BrokenPipeError:
                raise  # the reader went away: main stops quietly
            except OSError as exc:
                raise CliError(f"cannot write the output: {exc.strerror or exc}") from exc
            if not n:
                raise CliError(f"cannot write the output: a write of {len(view)} bytes wrote {n}")
            view = view[n:]

    def text(self, s: str) -> None:
        self.write(s.encode(self._encoding, "backslashreplace"))

    def flush(self) -> None:
        try:
            self._raw.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise CliError(f"cannot write the output: {exc.strerror or exc}") from exc


def stdout_output() -> CheckedOutput:
    """stdout as a ``CheckedOutput`` (its text layer flushed first, so nothing is reordered)."""
    sys.stdout.flush()
    return CheckedOutput(sys.stdout.buffer, sys.stdout.encoding or "utf-8")


def cmd_dump(args: argparse.Namespace, key: bytes | None, out: Console) -> int:
    with open_read_only(args.dir, key) as st:
        first, last = st.first_index(), st.last_index()
        lo = first if args.lo is None else max(args.lo, first)
        hi = last if args.hi is None else min(args.hi, last)
        if args.lo is not None and args.hi is not None and args.lo > args.hi:
            raise CliError(f"--from {args.lo} is after --to {args.hi}")
        stream = stdout_output()
        if args.json:
            for e in iter_entries(st, lo, hi):
                write_entry_json(stream, e)
        else:
            widths = (max(len(str(hi)), 5), max(len(str(st.term(hi))) if hi >= lo else 1, 4))
            stream.text(_row(widths, "index", "term", "type", "size", "data") + "\n")
            count = 0
            for e in iter_entries(st, lo, hi):
                stream.text(
                    _row(widths, str(e.index), str(e.term), _type_name(e.type), str(len(e.data)), preview(e)) + "\n"
                )
                count += 1
            if count == 0:
                stream.text(f"(no entries; the log holds {first} .. {last})\n" if last >= first else "(no entries)\n")
        stream.flush()
    return EXIT_OK


def iter_entries(st: DiskStorage, lo: int, hi: int) -> Iterator[Entry]:
    """Entries ``lo..hi`` (inclusive), read a bounded chunk at a time."""
    while lo <= hi:
        chunk = st.entries(lo, hi + 1, READ_CHUNK_BYTES)
        if not chunk:
            return
        yield from chunk
        lo = chunk[-1].index + 1


def entry_json(e: Entry) -> dict[str, Any]:
    """One ``dump --json`` line: index, term, type name, data size and the data in base64."""
    head = _entry_head(e)
    head["data"] = base64.b64encode(e.data).decode("ascii")
    return head


def write_entry_json(stream: CheckedOutput, e: Entry) -> None:
    """``json.dumps(entry_json(e))`` and a newline, the data encoded and written a piece at a time."""
    step = max(3, JSON_DATA_CHUNK_BYTES // 3 * 3)
    data = e.data
    if len(data) <= step:
        stream.write(json.dumps(entry_json(e)).encode("ascii") + b"\n")
        return
    # json.dumps of the other fields, reopened to append "data" as the last key (base64 needs no escaping)
    stream.write(json.dumps(_entry_head(e))[:-1].encode("ascii") + b', "data": "')
    view = memoryview(data)
    for start in range(0, len(data), step):
        stream.write(base64.b64encode(view[start : start + step]))
    stream.write(b'"}\n')


def _entry_head(e: Entry) -> dict[str, Any]:
    try:
        tname = EntryType.Name(e.type)
    except ValueError:
        tname = str(e.type)
    return {"index": e.index, "term": e.term, "type": tname, "size": len(e.data)}


def _row(widths: tuple[int, int], index: str, term: str, etype: str, size: str, data: str) -> str:
    return f"{index:>{widths[0]}}  {term:>{widths[1]}}  {etype:<12}  {size:>8}  {data}".rstrip()


def _type_name(t: int) -> str:
    try:
        return EntryType.Name(t).removeprefix("Entry")  # type: ignore[arg-type]
    except ValueError:
        return f"type {t}"


def preview(e: Entry) -> str:
    """A short, printable view of an entry's data: text, a decoded conf change, or hex."""
    data = e.data
    if not data:
        return ""
    if e.type == EntryType.EntryConfChange:
        try:
            cc = ConfChange.FromString(data)
            return f"{ConfChangeType.Name(cc.type).removeprefix('ConfChange')} node {cc.node_id}"
        except Exception:
            pass
    if e.type == EntryType.EntryConfChangeV2:
        try:
            cc2 = ConfChangeV2.FromString(data)
            changes = ", ".join(
                f"{ConfChangeType.Name(c.type).removeprefix('ConfChange')} node {c.node_id}" for c in cc2.changes
            )
            return changes or "(auto leave)"
        except Exception:
            pass
    text = _as_text(data)
    if text is None:
        shown_bytes = data[: PREVIEW_CHARS // 2]
        return shown_bytes.hex() + ("…" if len(data) > len(shown_bytes) else "")
    shown = text[:PREVIEW_CHARS]
    return repr(shown) + ("…" if len(shown) < len(text) or len(data) > PREVIEW_CHARS * 4 else "")


def _as_text(data: bytes) -> str | None:
    """The start of ``data`` as text if it is printable UTF-8 (a character cut by the window is dropped)."""
    head = data[: PREVIEW_CHARS * 4]
    for cut in range(4 if len(data) > len(head) else 1):
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return text if text.isprintable() else None
    return None
