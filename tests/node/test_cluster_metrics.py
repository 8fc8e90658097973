"""``GET /metrics`` of the example cluster's nodes, scraped from running processes and read with prometheus_client's
own parser: Raft figures per role, proposal latency, snapshots sent and received, and the storage's counters and
histograms."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from node_harness import Cluster, http
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def scrape(cluster: Cluster, i: int) -> dict[str, list[Sample]]:
    """Every sample of node ``i``'s /metrics by family name."""
    with urllib.request.urlopen(cluster.url(i, "/metrics"), timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    found = [s.value for s in samples_of(samples, name) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def samples_of(samples: dict[str, list[Sample]], name: str) -> list[Sample]:
    family = name.removesuffix("_total").removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
    return [s for s in samples.get(family, []) if s.name == name]


def check_histogram(samples: dict[str, list[Sample]], name: str, **labels: str) -> tuple[float, float]:
    """The histogram's buckets are cumulative and end at +Inf with its count; returns (count, sum)."""
    buckets = [s for s in samples_of(samples, f"{name}_bucket") if all(s.labels.get(k) == v for k, v in labels.items())]
    bounds = [float(s.labels["le"]) for s in buckets]
    counts = [s.value for s in buckets]
    assert bounds == sorted(bounds) and bounds[-1] == float("inf"), bounds
    assert counts == sorted(counts), counts
    count = value(samples, f"{name}_count", **labels)
    assert counts[-1] == count
    return count, value(samples, f"{name}_sum", **labels)


def wait_until(cond: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, f"no {what} in {seconds} s"
        time.sleep(0.05)


FOUNDING = 3  # the log of a new 3-node cluster starts with one configuration entry per founding voter


def test_metrics_of_a_running_cluster(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, snapshot_every=20, keep_entries=5)
    try:
        for i in cluster.ids:
            cluster.start(i)
        lead, term = cluster.leader()
        for n in range(10):
            assert http("PUT", cluster.url(lead, f"/kv/k{n}"), b"v")[0] == 200
        assert http("GET", cluster.url(lead, "/kv/k0"))[0] == 200
        progress = lambda: cluster.status(lead)["progress"].values()  # noqa: E731
        wait_until(lambda: all(p["match"] == FOUNDING + 12 for p in progress()), "replication")
        before = scrape(cluster, lead)
        assert value(before, "aiowal_raft_is_leader") == 1
        assert value(before, "aiowal_raft_term") == term
        assert value(before, "aiowal_raft_leader_changes_total") == 1
        assert value(before, "aiowal_raft_proposals_total") == 11  # 10 writes and a read barrier
        assert value(before, "aiowal_raft_proposals_failed_total") == 0
        writes, write_seconds = check_histogram(before, "aiowal_raft_proposal_seconds", kind="write")
        reads, _ = check_histogram(before, "aiowal_raft_proposal_seconds", kind="read")
        assert (writes, reads) == (10, 1) and write_seconds > 0
        # The founding entries, the leader's empty entry, 10 writes and the barrier: committed, applied, and on both
        # followers.
        applied = value(before, "aiowal_raft_applied_index")
        assert applied == value(before, "aiowal_raft_applied_entries_total") == FOUNDING + 12
        assert value(before, "aiowal_raft_committed_entries_total") == FOUNDING + 12
        followers = [i for i in cluster.ids if i != lead]
        for f in followers:
            assert value(before, "aiowal_raft_follower_match_index", follower=str(f)) == applied
            fm = scrape(cluster, f)
            assert value(fm, "aiowal_raft_is_leader") == 0 and value(fm, "aiowal_raft_leader") == lead
            assert value(fm, "aiowal_raft_term") == term
            assert samples_of(fm, "aiowal_raft_follower_match_index") == []
        # The storage's own figures: every sync and every commit in the histograms.
        syncs, sync_seconds = check_histogram(before, "aiowal_storage_sync_seconds")
        assert syncs == value(before, "aiowal_storage_syncs_total") > 0 and sync_seconds > 0
        commits, entries = check_histogram(before, "aiowal_storage_entries_per_commit")
        assert entries == value(before, "aiowal_storage_entries_total") == FOUNDING + 12
        assert 0 < commits <= value(before, "aiowal_storage_commits_total")
        assert value(before, "aiowal_storage_saves_total") > 0

        # A follower misses enough to need a snapshot; the counters only grow.
        down = followers[0]
        cluster.kill(down)
        for n in range(60):
            assert http("PUT", cluster.url(lead, f"/kv/m{n}"), b"v")[0] == 200
        cluster.start(down)
        wait_until(lambda: cluster.status(down).get("applied", 0) >= FOUNDING + 72, "the restarted follower's catch-up")
        after = scrape(cluster, lead)
        assert value(after, "aiowal_raft_snapshots_sent_total") >= 1
        assert value(scrape(cluster, down), "aiowal_raft_snapshots_received_total") == 1
        for name in ("aiowal_raft_proposals_total", "aiowal_storage_syncs_total", "aiowal_storage_entries_total"):
            assert value(after, name) > value(before, name)
        assert check_histogram(after, "aiowal_raft_proposal_seconds", kind="write")[0] == 70
        assert value(after, "aiowal_raft_snapshot_index") > 0
    finally:
        cluster.stop_all()
