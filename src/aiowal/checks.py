"""The checks of a caller's arguments, made before anything is written: types, ranges, contiguous indexes, terms
that never go down, paths. Each raises ``TypeError`` or ``ValueError`` naming the argument."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from operator import attrgetter

from aiowal import speedups
from aiowal.meta import MetaInfo
from aiowal.raftpb import Entry, HardState

U64_MAX = (1 << 64) - 1
_INDEX = attrgetter("index")
_TERM = attrgetter("term")


def check_terms(ents: Sequence[Entry], prev_term: int, floor_term: int) -> None:
    """Raft's terms never decrease along the log: not inside ``ents``, not from the entry before them, not below
    the snapshot's term."""
    low = max(prev_term, floor_term)
    if ents[0].term < low:
        what = "the snapshot's term" if floor_term >= prev_term else f"the term of entry {ents[0].index - 1}"
        raise ValueError(f"entry {ents[0].index} has term {ents[0].term}, below {what} ({low}): terms never decrease")
    terms = list(map(_TERM, ents))
    if terms.count(terms[0]) != len(terms) and terms != sorted(terms):  # (one term: the common Raft save)
        k = next(k for k in range(1, len(terms)) if terms[k] < terms[k - 1])
        raise ValueError(
            f"entry {ents[k].index} has term {terms[k]}, below the term {terms[k - 1]} of entry {ents[k - 1].index}:"
            " terms never decrease"
        )


def nonempty(hs: HardState) -> bool:
    return bool(hs.term or hs.vote or hs.commit)


def check_index(v: object, name: str) -> None:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{name} must be an int, not {type(v).__name__}")
    if v < 0:
        raise ValueError(f"{name} must not be negative (got {v})")


def check_flag(v: object, name: str) -> None:
    if not isinstance(v, bool):
        raise TypeError(f"{name} must be True or False, not {v!r}")


def check_path(path: object) -> str:
    """``path`` as a str: a str or an ``os.PathLike`` giving one (bytes paths are refused)."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or an os.PathLike, not {type(path).__name__}")
    fspath = os.fspath(path)
    if not isinstance(fspath, str):
        raise TypeError(f"path must give a str, not {type(fspath).__name__}")
    if not fspath or "\0" in fspath:
        raise ValueError(f"invalid path: {fspath!r}")
    return fspath


def check_info(info: object) -> MetaInfo:
    if isinstance(info, bool) or not isinstance(info, int):
        raise TypeError(f"info must be a MetaInfo, not {type(info).__name__}")
    try:
        return MetaInfo(info)
    except ValueError:
        raise ValueError(f"Invalid info: {info}") from None


def check_entries(ents: Sequence[Entry]) -> None:
    """Every item a ``raftpb.Entry``, indexes contiguous and not 0: C-level passes first, a loop only to name the
    culprit."""
    ok = speedups.entries_ok
    if ok is not None and ok(ents, Entry):
        return
    if not ents:
        return
    if set(map(type, ents)) != {Entry}:
        for e in ents:
            if not isinstance(e, Entry):
                raise TypeError(f"entries must be raftpb.Entry, not {type(e).__name__}")
    indexes = list(map(_INDEX, ents))
    first = indexes[0]
    if indexes != list(range(first, first + len(indexes))):
        for prev, nxt in itertools.pairwise(indexes):
            if nxt != prev + 1:
                raise ValueError(f"entries are not contiguous: {prev} then {nxt}")
    if first == 0:
        raise ValueError("entry index 0 is not valid")
