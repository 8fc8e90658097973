"""A new node catching up a large state machine through a streamed snapshot, measured: three kvnode processes keep
their keys in SQLite (--store sqlite), are filled with --state-mib MiB of values, then a fourth node joins empty
and gets the leader's snapshot file in chunks over its own connection while a client keeps writing at a steady
rate. Reports how long the transfer took, how much the resident memory of the nodes grew meanwhile (each node's
peak, from /proc, against its size before), and the writes' latency before and during the transfer (they need
the other followers: a write commits once one of them has it).

    python examples/cluster/snapshot_catchup.py --state-mib 1024 [--value-kib 1024] [--rate 100] [--json OUT]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import Cluster, http

MIB = 1 << 20


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A process's resident set (or its peak, ``VmHWM``) in KiB, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ValueError(f"no {field} for {pid}")


def reset_peak(pid: int) -> bool:
    """Start a new peak (``VmHWM``) from the current resident set; False where the kernel does not allow it."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


class RateWriter:
    """Small PUTs to the leader at ``rate`` per second from one thread, following the leader when it changes; each
    write's (start time, latency). A write refused with "not leader" is sent again to the leader named, and its
    latency counts from the first attempt."""

    def __init__(self, cluster: Cluster, lead: int, rate: float) -> None:
        self.cluster = cluster
        self.lead = lead
        self.rate = rate
        self.samples: list[tuple[float, float]] = []
        self.failed = 0
        self.leader_changes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            t0 = time.monotonic()
            while not self._stop.is_set():
                code, body = http("PUT", self.cluster.url(self.lead, f"/kv/w{n}"), b"x" * 100, timeout=10)
                if code == 200:
                    self.samples.append((t0, time.monotonic() - t0))
                    break
                self.failed += 1
                if code == 503 and body.get("leader") in self.cluster.procs:
                    self.lead = body["leader"]
                    self.leader_changes += 1
                time.sleep(0.01)
            n += 1
            next_at += 1 / self.rate
            time.sleep(max(0.0, next_at - time.monotonic()))

    def start(self) -> RateWriter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def between(self, t0: float, t1: float) -> list[float]:
        return [lat for t, lat in self.samples if t0 <= t < t1]


def summary(lats: list[float]) -> dict[str, float]:
    return {
        "writes": len(lats),
        "p50_ms": round(percentile(lats, 50) * 1000, 2),
        "p99_ms": round(percentile(lats, 99) * 1000, 2),
        "max_ms": round(max(lats) * 1000, 2) if lats else float("nan"),
        "mean_ms": round(statistics.fmean(lats) * 1000, 2) if lats else float("nan"),
    }


def burst(cluster: Cluster, n: int, prefix: str) -> None:
    """``n`` small writes, 8 at a time."""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: cluster.put(f"{prefix}{i}", "x"), range(n)))


def fill(cluster: Cluster, mib: int, value_kib: int, say: Any) -> int:
    """PUT ``mib`` MiB of distinct random values, 4 at a time; returns the number of keys."""
    n = max(1, mib * 1024 // value_kib)
    raw = value_kib * 1024 * 3 // 4

    def put(i: int) -> None:
        cluster.put(f"big{i:06d}", base64.b64encode(os.urandom(raw)).decode())

    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        for done, _ in enumerate(pool.map(put, range(n)), 1):
            if done % max(1, n // 8) == 0:
                say(f"filled {done}/{n} values ({done * value_kib // 1024} MiB)")
    say(f"filled {n} values of {value_kib} KiB in {time.monotonic() - t0:.1f} s")
    return n


def measure(
    root: Path,
    state_mib: int,
    value_kib: int,
    rate: float,
    say: Any,
    settle: float = 5.0,
    snapshot_every: int = 4000,
) -> dict[str, Any]:
    """The figures of one run (``settle``: seconds of writes measured before and after the transfer)."""
    cluster = Cluster(root, spares=1, store="sqlite", snapshot_every=snapshot_every, keep_entries=20)
    try:
        for i in cluster.ids:
            cluster.start(i)
        lead, _ = cluster.leader()
        keys = fill(cluster, state_mib, value_kib, say)
        # Small writes until every node's stored snapshot holds the whole fill. (Each node writes its snapshot every
        # ``snapshot_every`` entries: a large figure, so that none is written again during the measurement.)
        filled = cluster.status(lead)["last_index"]
        rounds = 0
        while min(cluster.status(i)["snapshot_index"] for i in cluster.ids) < filled:
            burst(cluster, 200, f"s{rounds}-")
            rounds += 1
        lead, _ = cluster.leader()
        snap_index = cluster.status(lead)["snapshot_index"]
        say(f"every node has a snapshot at or past {filled} (the leader's at {snap_index}); node {lead} leads")

        writer = RateWriter(cluster, lead, rate).start()
        time.sleep(settle)  # latency before the transfer
        pids = {i: p.pid for i, p in cluster.procs.items()}
        base = {i: rss_kib(pid) for i, pid in pids.items()}
        peaks_reset = all(reset_peak(pid) for pid in pids.values())
        applied_before = {i: cluster.status(i)["applied"] for i in cluster.ids if i != lead}
        t_join = time.monotonic()
        cluster.start(4, join=True)
        pids[4] = cluster.procs[4].pid
        base[4] = rss_kib(pids[4])
        samples: list[dict[int, int]] = []
        sent_before = cluster.status(lead)["counters"]["snapshots_sent"]
        # Streaming starts when the leader puts node 4 in snapshot state, ends when the leader counts the file
        # sent (node 4 has it synced and renamed), and the restore ends when node 4 counts the snapshot received.
        t_first_byte = t_streamed = t_received = None
        while True:
            samples.append({i: rss_kib(pid) for i, pid in pids.items()})
            st = cluster.status(4)
            c = st.get("counters", {})
            lst = cluster.status(lead)
            if t_first_byte is None and lst.get("progress", {}).get("4", {}).get("state") == "snapshot":
                t_first_byte = time.monotonic()
            if t_streamed is None and lst.get("counters", {}).get("snapshots_sent", 0) > sent_before:
                t_streamed = time.monotonic()
            if t_received is None and c.get("snapshots_received", 0) >= 1:
                t_received = time.monotonic()
            if t_received is not None and st.get("applied", 0) >= snap_index:
                break
            if time.monotonic() - t_join > 1800:
                raise SystemExit("node 4 did not catch up in 30 minutes")
            time.sleep(0.05)
        t_done = time.monotonic()
        received = cluster.status(4)["counters"]["snapshot_bytes_received"]
        applied_after = {i: cluster.status(i)["applied"] for i in applied_before}
        peak = {i: rss_kib(pid, "VmHWM") for i, pid in pids.items()} if peaks_reset else {}
        time.sleep(settle)  # latency after
        writer.stop()
        t_end = time.monotonic()
        # Once the writes stop, the new node ends up with exactly the leader's keys.
        lead = writer.lead
        deadline = time.monotonic() + 60
        while cluster.status(4).get("applied") != cluster.status(lead).get("applied") and time.monotonic() < deadline:
            time.sleep(0.1)
        # The new node's size before the transfer: its smallest sample (it may have asked to join, and the leader
        # begun streaming, before its first sample).
        base[4] = min(base[4], *(s[4] for s in samples))
        sampled_peak = {i: max(s[i] for s in samples) for i in pids}
        cluster_base = sum(base.values())
        cluster_peak = max(sum(s.values()) for s in samples)
        start = t_first_byte or t_join
        streamed = t_streamed or t_received or t_done
        out = {
            "state_mib": state_mib,
            "value_kib": value_kib,
            "keys": keys,
            "snapshot_index": snap_index,
            "snapshot_bytes": received,
            "leader": lead,
            "catch_up_s": round(t_done - t_join, 2),
            "stream_s": round(streamed - start, 2),
            "stream_mib_per_s": round(received / MIB / max(1e-9, streamed - start), 1),
            "restore_s": round((t_received or t_done) - streamed, 2),
            "rss_before_mib": {str(i): round(v / 1024, 1) for i, v in base.items()},
            "rss_growth_mib": {str(i): round((sampled_peak[i] - base[i]) / 1024, 1) for i in pids},
            "peak_rss_growth_mib": {str(i): round((peak[i] - base[i]) / 1024, 1) for i in peak} if peak else None,
            "cluster_rss_growth_mib": round((cluster_peak - cluster_base) / 1024, 1),
            "cluster_peak_growth_mib": round(sum(max(0, peak[i] - base[i]) for i in peak) / 1024, 1) if peak else None,
            "writes_before": summary(writer.between(t_join - settle, t_join)),
            "writes_during": summary(writer.between(t_join, t_done)),
            "writes_after": summary(writer.between(t_done, t_end)),
            "writes_refused": writer.failed,
            "leader_changes": writer.leader_changes,
            "other_followers_applied_during": {str(i): applied_after[i] - applied_before[i] for i in applied_before},
            "keys_on_new_node": cluster.status(4)["keys"],
            "keys_on_leader": cluster.status(lead)["keys"],
        }
        return out
    finally:
        cluster.stop_all()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state-mib", type=int, default=1024)
    p.add_argument("--value-kib", type=int, default=1024)
    p.add_argument("--rate", type=float, default=100.0, help="writes per second during the measurement")
    p.add_argument("--dir", help="where the nodes' directories go (default: a temporary one)")
    p.add_argument("--json", help="write the figures here too")
    args = p.parse_args()
    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f}s] {msg}", flush=True)

    with tempfile.TemporaryDirectory(prefix="aiowal-catchup-", dir=args.dir) as root:
        out = measure(Path(root), args.state_mib, args.value_kib, args.rate, say)
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
