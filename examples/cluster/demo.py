"""The replicated key-value store end to end: three kvnode processes on loopback, writes, the leader SIGKILLed,
a new leader, more writes, the old leader restarted and caught up through a snapshot, and every acknowledged write
checked on every node. Prints a timeline; exits non-zero if anything acknowledged is missing.

    python examples/cluster/demo.py [--writes 100] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import Cluster, http

T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.2f}s] {msg}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--writes", type=int, default=100)
    p.add_argument("--dir")
    args = p.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="aiowal-cluster-"))
    cluster = Cluster(root)
    acked: dict[str, str] = {}
    try:
        say(f"starting 3 nodes in {root}")
        for i in cluster.ids:
            cluster.start(i)
        lead, term = cluster.leader()
        say(f"node {lead} is leader (term {term})")
        for n in range(args.writes):
            cluster.put(f"k{n}", f"v{n}")
            acked[f"k{n}"] = f"v{n}"
        say(f"{len(acked)} writes acknowledged")
        old = lead
        old_last = cluster.status(old)["last_index"]
        cluster.kill(old)
        say(f"SIGKILL node {old} (the leader, last index {old_last})")
        lead, term = cluster.leader()
        say(f"node {lead} is the new leader (term {term})")
        for n in range(args.writes, 3 * args.writes):
            cluster.put(f"k{n}", f"v{n}")
            acked[f"k{n}"] = f"v{n}"
        firsts = {i: cluster.status(i)["first_index"] for i in cluster.procs}
        say(f"{len(acked)} writes acknowledged in all; survivors' logs now start at {firsts}")
        cluster.start(old)
        say(f"restarted node {old}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and http("GET", cluster.url(old, "/local"))[1] != acked:
            time.sleep(0.1)
        st = cluster.status(old)
        how = "a snapshot" if st["snapshot_index"] > old_last else "log entries"
        say(f"node {old} caught up through {how}: applied {st['applied']}, snapshot at {st['snapshot_index']}")
        missing = 0
        for i in cluster.ids:
            local = http("GET", cluster.url(i, "/local"))[1]
            lost = [k for k, v in acked.items() if local.get(k) != v]
            missing += len(lost)
            say(f"node {i}: {len(acked) - len(lost)}/{len(acked)} acknowledged writes present")
        lead, _ = cluster.leader()
        code, body = http("GET", cluster.url(lead, f"/kv/k{3 * args.writes - 1}"))
        say(f"linearizable read on leader {lead}: k{3 * args.writes - 1} = {body.get('value')} (HTTP {code})")
        if missing:
            say(f"FAILED: {missing} acknowledged writes missing")
            return 1
        say("every acknowledged write is on every node")
        return 0
    finally:
        cluster.stop_all()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
