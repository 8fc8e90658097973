"""Helpers over the Dgraph-written fixtures in tests/data/dgraph: extract a directory, replay its operations, and
read a storage back in the shape of the fixture dumps."""

from __future__ import annotations

import base64
import gzip
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiowal import CompactedError, DiskStorage, MetaInfo, UnavailableError, raftpb

FIXTURES = Path(__file__).resolve().parent / "data" / "dgraph"
CASES = ["basic", "empty", "encrypted_basic", "rotation", "save_with_snapshot"]
ERRORS = {
    "requested index is unavailable due to compaction": "compacted",
    "requested entry at index is unavailable": "unavailable",
    None: None,
}
WHICH = {
    "RaftId": MetaInfo.RAFT_ID,
    "GroupId": MetaInfo.GROUP_ID,
    "CheckpointIndex": MetaInfo.CHECKPOINT_INDEX,
    "SnapshotIndex": MetaInfo.SNAPSHOT_INDEX,
    "SnapshotTerm": MetaInfo.SNAPSHOT_TERM,
}


def key_of(case: str) -> bytes | None:
    path = FIXTURES / f"{case}.key"
    return bytes.fromhex(path.read_text().strip()) if path.exists() else None


def extract(case: str, dest: Path) -> Path:
    """The Dgraph directory of ``case``, extracted with its holes kept."""
    out = dest / case
    with tarfile.open(FIXTURES / f"{case}.tar.gz") as tar:
        tar.extractall(out, filter="tar")
    return out


def ops(case: str) -> Iterator[dict[str, Any]]:
    with gzip.open(FIXTURES / f"{case}.ops.jsonl.gz", "rt") as fh:
        for line in fh:
            yield json.loads(line)


def expected_dump(case: str) -> dict[str, Any]:
    with gzip.open(FIXTURES / f"{case}.dump.json.gz", "rt") as fh:
        raw: dict[str, Any] = json.load(fh)
    return normalize_dump(raw)


def normalize_dump(x: dict[str, Any]) -> dict[str, Any]:
    snap = x["snapshot"]
    return {
        "first_index": x["first_index"],
        "last_index": x["last_index"],
        "hard_state": {k: x["hard_state"][k] for k in ("term", "vote", "commit")},
        "snapshot": {
            k: snap[k]
            for k in (
                "index",
                "term",
                "voters",
                "learners",
                "voters_outgoing",
                "learners_next",
                "auto_leave",
                "data_b64",
            )
        },
        "uints": [x["raft_id"], x["group_id"], x["checkpoint"], x["meta_snapshot_index"], x["meta_snapshot_term"]],
        "num_entries": x["num_entries"],
        "num_log_files": x["num_log_files"],
        "entries": [(e["term"], e["index"], e["type"], e["data_b64"]) for e in x["entries"]],
        "terms": [(t["index"], t["term"], ERRORS[t["error"]]) for t in x["terms"]],
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def dump(st: DiskStorage) -> dict[str, Any]:
    """What ``st`` reads back, in the normalized dump shape."""
    first, last = st.first_index(), st.last_index()
    hs = st.hard_state()
    snap = st.snapshot()
    cs = snap.metadata.conf_state
    terms: list[tuple[int, int, str | None]] = []
    for i in range(first - 1, last + 2):
        try:
            terms.append((i, st.term(i), None))
        except CompactedError:
            terms.append((i, 0, "compacted"))
        except UnavailableError:
            terms.append((i, 0, "unavailable"))
    return {
        "first_index": first,
        "last_index": last,
        "hard_state": {"term": hs.term, "vote": hs.vote, "commit": hs.commit},
        "snapshot": {
            "index": snap.metadata.index,
            "term": snap.metadata.term,
            "voters": list(cs.voters),
            "learners": list(cs.learners),
            "voters_outgoing": list(cs.voters_outgoing),
            "learners_next": list(cs.learners_next),
            "auto_leave": cs.auto_leave,
            "data_b64": b64(snap.data),
        },
        "uints": [st.uint(i) for i in MetaInfo],
        "num_entries": st.num_entries(),
        "num_log_files": st.num_log_files(),
        "entries": [(e.term, e.index, e.type, b64(e.data)) for e in st.entries(first, last + 1)],
        "terms": terms,
    }


def entry_of(e: dict[str, Any]) -> raftpb.Entry:
    ent = raftpb.Entry(term=e["term"], index=e["index"], type=e["type"])
    if e.get("data_b64"):
        ent.data = base64.b64decode(e["data_b64"])
    return ent


def apply_op(st: DiskStorage, op: dict[str, Any]) -> None:
    """Apply one fixture operation to ``st`` through the public API."""
    kind = op["op"]
    if kind == "save":
        hs = raftpb.HardState(**op["hs"]) if op["hs"] is not None else None
        snap = None
        if op["snap"] is not None:
            s = op["snap"]
            snap = raftpb.Snapshot(
                data=base64.b64decode(s.get("data_b64") or ""),
                metadata=raftpb.SnapshotMetadata(
                    index=s["index"],
                    term=s["term"],
                    conf_state=raftpb.ConfState(voters=s.get("voters", []), learners=s.get("learners", [])),
                ),
            )
        st.save(hs, [entry_of(e) for e in op["entries"]], snap)
    elif kind == "create_snapshot":
        st.create_snapshot(
            op["index"], raftpb.ConfState(voters=op.get("voters", [])), base64.b64decode(op.get("data_b64") or "")
        )
    elif kind == "set_uint":
        st.set_uint(WHICH[op["which"]], op["value"])
    elif kind == "truncate_until":
        st.truncate_entries_until(op["index"])
    elif kind == "sync":
        st.sync()
    else:  # pragma: no cover - the fixture format has no other operations
        raise AssertionError(f"unknown op {kind}")
