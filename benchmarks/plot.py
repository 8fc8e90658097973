"""``python -m benchmarks.plot [RESULTS.json] [--out PNG]``: durable throughput against the number of concurrent
callers, from the concurrency sweep of ``make bench``'s JSON (default docs/benchmarks-concurrency.png)."""

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
STYLE = {
    "aiowal": ("aiowal (asyncio)", "o-"),
    "aiowal_uvloop": ("aiowal (uvloop)", "s--"),
    "sqlite": ("sqlite3 WAL, synchronous=FULL, 1 row/txn, N threads", "^-"),
    "plain_fdatasync_loop": ("plain write + fdatasync, N threads", "d-"),
}


def plot(doc: dict[str, Any], out: str) -> None:
    sweep = doc.get("issue3", {}).get("concurrency_sweep")
    if sweep is None:
        raise SystemExit("this run has no concurrency sweep (issue3.concurrency_sweep)")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__)
    parser.add_argument("results", nargs="?", default=DEFAULT_IN)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    with open(args.results) as fh:
        doc = json.load(fh)
    plot(doc, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
