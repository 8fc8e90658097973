"""Run every benchmark section and assemble the JSON document."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any

from benchmarks import cluster_http, durable, open_scale, raft_cluster, sweep, sync_read, sync_write
from benchmarks.common import Config, Scratch, scratch_dir

Section = Callable[[Config, Scratch], dict[str, Any]]

SECTIONS: list[tuple[str, str, Section]] = [
    ("save", "batch_256x1k", sync_write.run),
    ("read", "entries_100", sync_read.run),
    ("open", "scale_and_heap", open_scale.run),
    ("durable", "asyncio", durable.run_asyncio),
    ("durable", "uvloop", durable.run_uvloop),
    ("durable", "concurrency_sweep", sweep.run),
    ("cluster", "in_process", raft_cluster.run),
    ("cluster", "processes_http", cluster_http.run),
]
GROUPS = list(dict.fromkeys(group for group, _, _ in SECTIONS))


def run(quick: bool = False, log: Callable[[str], None] | None = None, only: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmarks (``quick``: tiny sizes, a few seconds) and return the JSON-ready document. ``only``
    keeps the sections whose name (``durable.uvloop``) or group (``durable``) is listed."""
    cfg = Config.quick_run() if quick else Config.full()
    say = log or (lambda msg: None)
    doc: dict[str, Any] = {"meta": _meta(cfg), **{group: {} for group in GROUPS}}
    t_all = time.perf_counter()
    with scratch_dir() as scratch:
        doc["meta"]["scratch_dir"] = scratch.root
        for group, name, section in SECTIONS:
            if only and group not in only and f"{group}.{name}" not in only:
                continue
            say(f"{group}.{name} ...")
            t0 = time.perf_counter()
            try:
                result = section(cfg, scratch)
            except Exception as exc:  # a broken section is reported, the others still run
                result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            result["seconds"] = round(time.perf_counter() - t0, 2)
            doc[group][name] = result
            say(f"{group}.{name} done in {result['seconds']} s")
    doc["meta"]["seconds"] = round(time.perf_counter() - t_all, 1)
    doc["meta"]["loadavg_end"] = _loadavg()
    doc["targets"] = list(_targets(doc))
    doc["targets_met"] = sum(1 for t in doc["targets"] if t["met"])
    doc["targets_missed"] = [t["figure"] for t in doc["targets"] if t["met"] is False]
    doc["errors"] = [f"{g}.{n}" for g in GROUPS for n, r in doc[g].items() if "error" in r]
    return doc


def _targets(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every figure held to a target or a limit, flattened as
    ``{"figure": "save.batch_256x1k.one_file.aiowal_vs_sqlite", "value": ..., "target" or "limit": ...,
    "met": ...}``."""

    def walk(node: Any, path: list[str]) -> Iterator[dict[str, Any]]:
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key in ("ratios", "limits") and isinstance(value, dict):
                for fig, res in value.items():
                    if isinstance(res, dict) and res.get("met") is not None:
                        bound = {"target": res["target"]} if "target" in res else {"limit": res["limit"]}
                        yield {"figure": ".".join([*path, fig]), "value": res["value"], **bound, "met": res["met"]}
            else:
                yield from walk(value, [*path, key])

    for group in GROUPS:
        yield from walk(doc[group], [group])


def _meta(cfg: Config) -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "quick": cfg.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "loadavg_start": _loadavg(),
        "versions": {
            "aiowal": version("aiowal"),
            "sqlite": sqlite3.sqlite_version,
            "pysyncobj": version("pysyncobj"),
            "uvloop": version("uvloop"),
            "protobuf": version("protobuf"),
            "aiosqlite": version("aiosqlite"),
        },
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(cfg).items()},
        "method": "each figure is measured in rounds interleaved with what it is compared to (the order rotates each "
        "round); medians over the rounds; ratios are median / median from this same run",
    }


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []
