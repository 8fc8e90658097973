"""``python -m benchmarks.plot [RESULTS.json] [--out PNG] [--cluster-out PNG]``: from ``make bench``'s JSON, durable
throughput against the number of concurrent callers (the concurrency sweep, default docs/benchmarks-concurrency.png)
and the 3-process clusters' writes/s and latency against the number of HTTP clients (default
docs/benchmarks-cluster.png); each figure is drawn when its section is in the run."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DEFAULT_IN = "bench-results/latest.json"
DEFAULT_OUT = "docs/benchmarks-concurrency.png"
DEFAULT_CLUSTER_OUT = "docs/benchmarks-cluster.png"
STYLE = {
    "aiowal": ("aiowal (asyncio)", "o-"),
    "aiowal_uvloop": ("aiowal (uvloop)", "s--"),
    "sqlite": ("sqlite3 WAL, synchronous=FULL, 1 row/txn, N threads", "^-"),
    "plain_fdatasync_loop": ("plain write + fdatasync, N threads", "d-"),
}


def plot(doc: dict[str, Any], out: str) -> None:
    sweep = doc.get("durable", {}).get("concurrency_sweep")
    if sweep is None:
        raise SystemExit("this run has no concurrency sweep (durable.concurrency_sweep)")
    if "error" in sweep:
        raise SystemExit(f"the sweep failed in this run: {sweep['error']}")
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for name, series in sweep["series"].items():
        label, fmt = STYLE.get(name, (name, "x-"))
        ax.plot(series["callers"], series["ops_per_s"], fmt, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    levels = next(iter(sweep["series"].values()))["callers"]
    ax.set_xticks(levels)
    ax.set_xticklabels([str(n) for n in levels])
    ax.set_xlabel("concurrent callers")
    ax.set_ylabel("durable saves per second (one 100 B entry each)")
    meta = doc["meta"]
    load = (meta.get("loadavg_start") or ["?"])[0]
    ax.set_title(
        f"Durable throughput vs concurrency\n{meta['cpus']} CPUs, Python {meta['python']}, {meta['started']}, "
        f"load average {load} at start"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


CLUSTER_STYLE = {
    "aiowal": ("aiowal kvnode, hard_sync (fdatasync on a quorum)", "o-"),
    "pysyncobj_nobatch": ("PySyncObj ReplDict, appendEntriesUseBatch=False (no fsync)", "s--"),
    "pysyncobj": ("PySyncObj ReplDict, defaults (no fsync)", "^:"),
}


def plot_cluster(doc: dict[str, Any], out: str) -> None:
    """Writes/s (median over rounds, bars from min to max) and p50/p99 latency against HTTP clients."""
    section = doc.get("cluster", {}).get("processes_http")
    if section is None:
        raise SystemExit("this run has no cluster benchmark (cluster.processes_http)")
    if "error" in section:
        raise SystemExit(f"the cluster benchmark failed in this run: {section['error']}")
    levels = section["levels"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), dpi=120)
    for name, (label, fmt) in CLUSTER_STYLE.items():
        rates = [section["writes_per_s"][name][str(n)] for n in levels]
        med = [r["median"] for r in rates]
        err = [
            [m - r["min"] for m, r in zip(med, rates, strict=True)],
            [r["max"] - m for m, r in zip(med, rates, strict=True)],
        ]
        left.errorbar(levels, med, yerr=err, fmt=fmt, label=label, capsize=3)
        lat = section["latency_ms"][name]
        line = right.plot(levels, [lat[str(n)]["p50"] for n in levels], fmt, label=f"{label}: p50")[0]
        right.plot(levels, [lat[str(n)]["p99"] for n in levels], fmt, color=line.get_color(), alpha=0.4, label="p99")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels)
        ax.set_xticklabels([str(n) for n in levels])
        ax.set_xlabel("concurrent HTTP clients (one aiohttp process)")
        ax.grid(True, which="both", alpha=0.3)
    left.set_ylabel("acknowledged writes per second")
    left.legend(fontsize=7)
    right.set_yscale("log")
    right.set_ylabel("latency, ms (p50, and p99 paler)")
    meta = doc["meta"]
    load = (meta.get("loadavg_start") or ["?"])[0]
    fig.suptitle(
        f"3-process clusters over HTTP, 100 B values\n{meta['cpus']} CPUs, Python {meta['python']}, {meta['started']}, "
        f"load average {load} at start, {section['plan']['rounds']} rounds"
    )
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__)
    parser.add_argument("results", nargs="?", default=DEFAULT_IN)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--cluster-out", default=DEFAULT_CLUSTER_OUT)
    args = parser.parse_args(argv)
    with open(args.results) as fh:
        doc = json.load(fh)
    drawn = 0
    figures = (
        ("durable", "concurrency_sweep", plot, args.out),
        ("cluster", "processes_http", plot_cluster, args.cluster_out),
    )
    for group, section, draw, out in figures:
        if section in doc.get(group, {}):
            draw(doc, out)
            print(f"wrote {out}", file=sys.stderr)
            drawn += 1
    if not drawn:
        raise SystemExit(f"{args.results} holds neither the concurrency sweep nor the cluster benchmark")
    return 0


if __name__ == "__main__":
    sys.exit(main())
