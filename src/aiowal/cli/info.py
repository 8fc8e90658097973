"""``aiowal info``: a WAL directory at a glance, as a table or as one JSON object."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aiowal.cli.common import EXIT_OK, human_size, open_read_only
from aiowal.format import DATA_START, KEY_REGISTRY_NAME, META_NAME
from aiowal.meta import MetaInfo
from aiowal.raftpb import ConfState


def cmd_info(args: argparse.Namespace, key: bytes | None, out: Console) -> int:
    summary = info_summary(args.dir, key)
    if args.json:
        out.out(json.dumps(summary, indent=2), highlight=False)
        return EXIT_OK
    _print_info(summary, out)
    return EXIT_OK


def info_summary(path: str, key: bytes | None) -> dict[str, Any]:
    """What ``aiowal info`` shows, as plain data."""
    with open_read_only(path, key) as st:
        files = st.log_files()
        hs = st.hard_state()
        snap = st.snapshot()
        cs = snap.metadata.conf_state
        encrypted = os.path.exists(os.path.join(path, KEY_REGISTRY_NAME)) or any(f["encrypted"] for f in files)
        first, last = st.first_index(), st.last_index()
        return {
            "path": os.path.abspath(path),
            "encrypted": encrypted,
            "raft_id": st.uint(MetaInfo.RAFT_ID),
            "group_id": st.uint(MetaInfo.GROUP_ID),
            "checkpoint": st.checkpoint(),
            "first_index": first,
            "last_index": last,
            "num_entries": st.num_entries(),
            "num_log_files": st.num_log_files(),
            "hard_state": {"term": hs.term, "vote": hs.vote, "commit": hs.commit},
            "snapshot": {
                "index": snap.metadata.index,
                "term": snap.metadata.term,
                "conf_state": _conf_state(cs),
                "data_size": len(snap.data),
            },
            "files": files,
            "meta_size": os.path.getsize(os.path.join(path, META_NAME)),
            "repairs_on_open": list(st.repairs),
        }


def _conf_state(cs: ConfState) -> dict[str, Any]:
    return {
        "voters": list(cs.voters),
        "learners": list(cs.learners),
        "voters_outgoing": list(cs.voters_outgoing),
        "learners_next": list(cs.learners_next),
        "auto_leave": cs.auto_leave,
    }


def _print_info(s: dict[str, Any], out: Console) -> None:
    hs, snap = s["hard_state"], s["snapshot"]
    n_files = len(s["files"])
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("directory", escape(s["path"]))
    head.add_row("encrypted", "yes" if s["encrypted"] else "no")
    head.add_row("raft id / group id", f"{s['raft_id']} / {s['group_id']}")
    head.add_row("checkpoint", str(s["checkpoint"]))
    if s["last_index"] >= s["first_index"]:
        span = f"{s['first_index']} .. {s['last_index']}"
    else:
        span = f"empty (first {s['first_index']}, last {s['last_index']})"
    head.add_row("entries", f"{span}  ({s['num_entries']} stored in {n_files} file{'s' if n_files != 1 else ''})")
    head.add_row("hard state", f"term {hs['term']}  vote {hs['vote']}  commit {hs['commit']}")
    if snap["index"]:
        cs = snap["conf_state"]
        conf = ", ".join(f"{k} {v}" for k, v in cs.items() if v) or "empty"
        head.add_row(
            "snapshot",
            f"index {snap['index']}  term {snap['term']}  data {human_size(snap['data_size'])}  conf state: {conf}",
        )
    else:
        head.add_row("snapshot", "none")
    head.add_row("wal.meta", human_size(s["meta_size"]))
    out.print(head)
    if s["files"]:
        t = Table(title=None, box=None, pad_edge=False, header_style="bold")
        for name, justify in [
            ("file", "left"),
            ("first", "right"),
            ("last", "right"),
            ("entries", "right"),
            ("data", "right"),
            ("apparent", "right"),
            ("allocated", "right"),
            ("encrypted", "left"),
        ]:
            t.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for f in s["files"]:
            empty = not f["entries"]
            t.add_row(
                f["name"],
                "-" if empty else str(f["first"]),
                "-" if empty else str(f["last"]),
                str(f["entries"]),
                human_size(f["data_end"] - DATA_START),
                human_size(f["apparent_size"]),
                human_size(f["allocated_size"]),
                "yes" if f["encrypted"] else "no",
            )
        out.print()
        out.print(t)
    for r in s["repairs_on_open"]:
        out.print(f"note: a writable open would repair: {escape(r)}")
