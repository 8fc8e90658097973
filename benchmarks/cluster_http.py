"""Writes/s and latency of the example cluster run as users run it: three ``kvnode.py`` processes with durable
storage (``hard_sync``), driven over HTTP by 1..64 concurrent clients from this one process (aiohttp), side by side
in the same run with PySyncObj's replicated dict as three processes behind the same HTTP API
(``benchmarks/pysyncobj_kvnode.py``), on the same payload.

Each round starts each system afresh (new processes, empty directories), in an order that rotates every round, and
measures every client count in turn against its leader. PySyncObj's journal is an mmap it never syncs per write:
its acknowledged writes are in the page cache of the nodes, aiowal's are on disk on a quorum of them.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import statistics
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import Config, Scratch, compare, free_ports, percentiles, sig, summary

ROOT = Path(__file__).resolve().parent.parent
KVNODE = ROOT / "examples" / "cluster" / "kvnode.py"
PYSYNCOBJ_KVNODE = ROOT / "benchmarks" / "pysyncobj_kvnode.py"
# What each system runs: its node script and extra arguments.
SYSTEMS: dict[str, tuple[Path, list[str]]] = {
    "aiowal": (KVNODE, ["--snapshot-every", "5000", "--keep-entries", "1000"]),
    "pysyncobj": (PYSYNCOBJ_KVNODE, []),
    "pysyncobj_nobatch": (PYSYNCOBJ_KVNODE, ["--no-batch"]),
}
# What PySyncObj logs when a follower drops log entries it has already applied (seen with appendEntriesUseBatch off).
PYSYNCOBJ_DIVERGED = "truncating already-applied log entries"
KEYS = 1000  # clients cycle through this many keys: the state stays small on both systems
VALUE_BYTES = 100


@dataclass(frozen=True)
class Plan:
    levels: tuple[int, ...]
    seconds: float  # measured per client count
    warmup: float  # run before each measurement, not counted
    rounds: int

    @classmethod
    def of(cls, cfg: Config) -> Plan:
        if cfg.quick:
            return cls(levels=(1, 8), seconds=0.3, warmup=0.1, rounds=1)
        return cls(levels=(1, 2, 4, 8, 16, 32, 64), seconds=2.0, warmup=0.5, rounds=3)


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except (OSError, ValueError, urllib.error.URLError):
        return None


class Nodes:
    """Three node processes of one system on loopback."""

    def __init__(self, system: str, root: str) -> None:
        ports = free_ports(6)
        self.ids = (1, 2, 3)
        raft = ",".join(f"{i}=127.0.0.1:{ports[i - 1]}" for i in self.ids)
        self.http = {i: f"http://127.0.0.1:{ports[i + 2]}" for i in self.ids}
        http = ",".join(f"{i}={url.removeprefix('http://')}" for i, url in self.http.items())
        script, extra = SYSTEMS[system]
        os.makedirs(root, exist_ok=True)
        self.procs = []
        for i in self.ids:
            cmd = [sys.executable, str(script), "--id", str(i), "--dir", f"{root}/node{i}", "--peers", raft]
            cmd += ["--http", http, *extra]
            with open(f"{root}/node{i}.log", "wb") as log:  # the child keeps its own descriptor
                self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log))
        self.root = root

    def log_lines(self, text: str) -> int:
        """How many lines of the nodes' stderr contain ``text``."""
        n = 0
        for i in self.ids:
            with open(f"{self.root}/node{i}.log", errors="replace") as fh:
                n += sum(1 for line in fh if text in line)
        return n

    def leader(self, timeout: float = 30.0) -> str:
        """The HTTP address of the leader, once one leads and every node answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a node exited with status {p.returncode}")
            states = [_get_json(f"{url}/status") for url in self.http.values()]
            leaders = [url for url, st in zip(self.http.values(), states, strict=True) if st and st.get("is_leader")]
            if all(states) and len(leaders) == 1:
                return leaders[0]
            time.sleep(0.05)
        raise RuntimeError("no leader elected")

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def drive(leader: str, clients: int, seconds: float, warmup: float) -> tuple[float, list[float], int]:
    """(acknowledged writes per second, their latencies in seconds, failed requests) of ``clients`` closed-loop
    writers, each sending one PUT at a time to ``leader`` over its own keep-alive connection."""
    rng = random.Random(clients)
    value = "".join(rng.choices(string.ascii_letters, k=VALUE_BYTES)).encode()
    latencies: list[float] = []
    failed = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup
    stop = start + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def client(c: int) -> None:
            nonlocal failed
            n = c
            while (now := loop.time()) < stop:
                t0 = time.perf_counter()
                async with session.put(f"{leader}/kv/k{n % KEYS}", data=value) as resp:
                    await resp.read()
                    ok = resp.status == 200
                n += clients
                if now >= start:
                    if ok:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        failed += 1

        await asyncio.gather(*(client(c) for c in range(clients)))
    return len(latencies) / seconds, latencies, failed


@dataclass
class Results:
    """Everything measured of one system, over all rounds, by client count."""

    rates: dict[int, list[float]]
    latencies: dict[int, list[float]]  # every acknowledged write's, all rounds
    round_latency: dict[int, list[dict[str, float]]]
    cpu_us_per_write: dict[int, list[dict[str, float]]]
    storage: dict[int, list[dict[str, dict[str, float]]]]  # each aiowal node's group commits and syncs, per round
    failed: int = 0
    diverged_warnings: int = 0

    @classmethod
    def empty(cls, levels: tuple[int, ...]) -> Results:
        def per_level() -> dict[int, list[Any]]:
            return {n: [] for n in levels}

        return cls(per_level(), per_level(), per_level(), per_level(), per_level())


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _node_counts(url: str) -> dict[str, float]:
    """A kvnode's storage counters and histogram sums, and the time its write proposals took, from its /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    values = {s.name: s.value for s in samples if not s.labels}
    writes = {s.name: s.value for s in samples if s.labels.get("kind") == "write"}
    return {
        "entries": values["aiowal_storage_entries_per_commit_sum"],
        "commits": values["aiowal_storage_entries_per_commit_count"],
        "syncs": values["aiowal_storage_sync_seconds_count"],
        "sync_seconds": values["aiowal_storage_sync_seconds_sum"],
        "proposals": writes.get("aiowal_raft_proposal_seconds_count", 0.0),
        "proposal_seconds": writes.get("aiowal_raft_proposal_seconds_sum", 0.0),
    }


def _node_figures(before: dict[str, float], after: dict[str, float], elapsed: float) -> dict[str, float]:
    """Between two readings of ``_node_counts``: entries per group commit, mean sync time, syncs per second and, on
    the leader, the mean time from proposing a write to its result (the node's share of a write's latency)."""
    d = {k: after[k] - before[k] for k in after}
    out = {
        "entries_per_commit": sig(d["entries"] / max(d["commits"], 1), 3),
        "mean_sync_ms": sig(1000 * d["sync_seconds"] / max(d["syncs"], 1), 3),
        "syncs_per_s": sig(d["syncs"] / elapsed, 3),
    }
    if d["proposals"]:
        out["mean_proposal_ms"] = sig(1000 * d["proposal_seconds"] / d["proposals"], 3)
    return out


def _measure_system(system: str, root: str, plan: Plan, res: Results) -> None:
    nodes = Nodes(system, root)
    try:
        leader = nodes.leader()
        lead_pid = next(p.pid for p, url in zip(nodes.procs, nodes.http.values(), strict=True) if url == leader)
        pids = [p.pid for p in nodes.procs]
        for n in plan.levels:
            cpu0 = {pid: _cpu_seconds(pid) for pid in pids}
            disk0 = {url: _node_counts(url) for url in nodes.http.values()} if system == "aiowal" else {}
            me0, t0 = time.process_time(), time.perf_counter()
            rate, latencies, failed = asyncio.run(drive(leader, n, plan.seconds, plan.warmup))
            me, elapsed = time.process_time() - me0, time.perf_counter() - t0
            cpu = {pid: _cpu_seconds(pid) - cpu0[pid] for pid in pids}
            if disk0:
                figures: dict[str, dict[str, float]] = {}
                for url, before in disk0.items():
                    f = _node_figures(before, _node_counts(url), elapsed)
                    followers = sum(1 for name in figures if name != "leader")
                    figures["leader" if url == leader else f"follower{followers + 1}"] = f
                res.storage[n].append(figures)
            writes = max(len(latencies), 1) * (plan.seconds + plan.warmup) / plan.seconds  # warm-up's writes too
            res.rates[n].append(rate)
            res.latencies[n].extend(latencies)
            pct = percentiles(latencies, 1000)
            res.round_latency[n].append(
                {"p50": pct["p50"], "p99": pct["p99"], "mean": sig(1000 * statistics.fmean(latencies or [0.0]), 4)}
            )
            res.cpu_us_per_write[n].append(
                {
                    "leader": sig(1e6 * cpu[lead_pid] / writes, 3),
                    "followers": sig(1e6 * sum(v for pid, v in cpu.items() if pid != lead_pid) / writes, 3),
                    "client": sig(1e6 * me / writes, 3),
                }
            )
            res.failed += failed
    finally:
        nodes.stop()
    res.diverged_warnings += nodes.log_lines(PYSYNCOBJ_DIVERGED)


def run(cfg: Config, scratch: Scratch) -> dict[str, Any]:
    plan = Plan.of(cfg)
    results = {s: Results.empty(plan.levels) for s in SYSTEMS}
    names = list(SYSTEMS)
    for r in range(plan.rounds):
        k = r % len(names)
        for system in names[k:] + names[:k]:
            root = scratch.fresh(f"cluster-{system}")
            try:
                _measure_system(system, root, plan, results[system])
            finally:
                scratch.remove(root)
    top, low = max(plan.levels), min(plan.levels)
    med = {s: {str(n): summary(res.rates[n], "writes/s") for n in plan.levels} for s, res in results.items()}
    return {
        "what": f"acknowledged HTTP PUTs per second ({VALUE_BYTES} B values, {KEYS} keys) to the leader of a "
        "3-process cluster, closed-loop clients from one aiohttp process",
        "levels": list(plan.levels),
        "writes_per_s": med,
        "latency_ms": {
            s: {str(n): percentiles(res.latencies[n], 1000) for n in plan.levels} for s, res in results.items()
        },
        "latency_ms_per_round": {s: {str(n): res.round_latency[n] for n in plan.levels} for s, res in results.items()},
        "cpu_us_per_write": {s: {str(n): res.cpu_us_per_write[n] for n in plan.levels} for s, res in results.items()},
        "aiowal_storage": {str(n): results["aiowal"].storage[n] for n in plan.levels},
        "failed_requests": {s: res.failed for s, res in results.items()},
        "pysyncobj_diverged_warnings": {s: res.diverged_warnings for s, res in results.items() if s != "aiowal"},
        "ratios": {
            f"aiowal_vs_pysyncobj_{top}_clients": compare(
                med["aiowal"][str(top)], med["pysyncobj"][str(top)], target=1.0
            ),
            f"aiowal_vs_pysyncobj_nobatch_{top}_clients": compare(
                med["aiowal"][str(top)], med["pysyncobj_nobatch"][str(top)], target=1.0
            ),
            f"aiowal_vs_pysyncobj_{low}_clients": compare(med["aiowal"][str(low)], med["pysyncobj"][str(low)]),
            f"aiowal_vs_pysyncobj_nobatch_{low}_clients": compare(
                med["aiowal"][str(low)], med["pysyncobj_nobatch"][str(low)]
            ),
        },
        "durability": {
            "aiowal": "hard_sync: every acknowledged write is fdatasynced on a quorum (the leader and a follower)",
            "pysyncobj": "FileJournal (an mmap): acknowledged writes are in the page cache, never synced per write",
        },
        "systems": {
            "aiowal": "examples/cluster/kvnode.py, snapshot every 5,000 entries (keep 1,000)",
            "pysyncobj": "ReplDict, defaults: appends batched every appendEntriesPeriod (0.1 s)",
            "pysyncobj_nobatch": "ReplDict, appendEntriesUseBatch=False: each command sent at once",
        },
        "plan": {"seconds": plan.seconds, "warmup": plan.warmup, "rounds": plan.rounds},
    }
