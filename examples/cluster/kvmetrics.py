"""Prometheus metrics of one kvnode: the Raft node's status and counters, the proposal latency, and its storage's
own figures (``AsyncDiskStorage.stats()``), read at each scrape of ``GET /metrics``.

Counters only grow (rates come from PromQL: ``rate(aiowal_raft_applied_entries_total[1m])``); histograms are
cumulative since the node started, so ``histogram_quantile`` works over any window.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from aiowal.node import RaftNode

# Proposal latency bounds in seconds: a durable write through a 3-node cluster takes milliseconds.
PROPOSAL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class NodeCollector(Collector):
    """Reads a RaftNode and its storage when scraped."""

    def __init__(self, node: RaftNode) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        st = node.status()
        c = node.counters

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"aiowal_raft_{name}", doc, value=value)

        def counter(prefix: str, name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"aiowal_{prefix}_{name}", doc, value=value)

        yield gauge("term", "Current Raft term.", st.term)
        yield gauge("leader", "Id of the known leader (0: none).", st.leader)
        yield gauge("is_leader", "1 on the leader, else 0.", 1 if st.role == "leader" else 0)
        yield gauge("commit_index", "Highest log index known committed.", st.commit)
        yield gauge("applied_index", "Highest log index applied to the state machine.", st.applied)
        yield gauge("last_index", "Last index of the log.", st.last_index)
        yield gauge("snapshot_index", "Index of the stored snapshot.", st.snapshot_index)
        yield gauge("voters", "Voters in the configuration.", len(st.voters))
        yield gauge("learners", "Learners in the configuration.", len(st.learners))
        match = GaugeMetricFamily(
            "aiowal_raft_follower_match_index",
            "On the leader: highest index known replicated on each follower.",
            labels=["follower"],
        )
        for follower, pr in st.progress.items():
            match.add_metric([str(follower)], pr.match)
        yield match

        yield counter("raft", "leader_changes", "Times this node saw a new leader.", c.leader_changes)
        yield counter("raft", "proposals", "Proposals taken (read barriers included).", c.proposals)
        yield counter("raft", "proposals_failed", "Proposals that ended without a result.", c.proposals_failed)
        yield counter("raft", "committed_entries", "Entries this node learned were committed.", c.committed)
        yield counter("raft", "applied_entries", "Entries applied to the state machine.", c.applied)
        yield counter("raft", "snapshots_sent", "Snapshot files streamed to followers.", c.snapshots_sent)
        yield counter("raft", "snapshots_received", "Snapshots from a leader restored.", c.snapshots_received)
        yield counter("raft", "snapshot_sent_bytes", "Bytes of snapshot files streamed.", c.snapshot_bytes_sent)
        yield counter("raft", "snapshot_received_bytes", "Bytes of snapshot files received.", c.snapshot_bytes_received)
        yield counter(
            "raft", "snapshot_streams_failed", "Snapshot transfers that did not complete.", c.snapshot_streams_failed
        )

        s = node.storage.stats()
        yield counter("storage", "saves", "Saves made durable.", s["saves"])
        yield counter("storage", "entries", "Entries written by those saves.", s["entries"])
        yield counter("storage", "bytes", "Data-record bytes appended.", s["bytes"])
        yield counter("storage", "syncs", "fdatasync steps run.", s["syncs"])
        yield counter("storage", "commits", "Group commits (saves made durable together).", s["commits"])
        yield GaugeMetricFamily("aiowal_storage_queued", "Requests waiting for the writer.", value=s["queued"])
        yield _histogram("aiowal_storage_sync_seconds", "Duration of each fdatasync step.", s["sync_seconds"])
        yield _histogram(
            "aiowal_storage_entries_per_commit", "Entries made durable by each group commit.", s["entries_per_commit"]
        )


def _histogram(name: str, doc: str, h: dict[str, Any]) -> HistogramMetricFamily:
    buckets = [(str(float(le)), n) for le, n in zip(h["le"], h["cumulative"], strict=True)]
    buckets.append(("+Inf", h["count"]))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h["sum"])


class KVMetrics:
    """The registry a kvnode serves at ``/metrics``: its node's figures plus the proposal latency it observes."""

    def __init__(self, node: RaftNode) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(NodeCollector(node))
        self.proposal_seconds = Histogram(
            "aiowal_raft_proposal_seconds",
            "Time from proposing to the result on this node (writes, and read barriers before a GET).",
            ["kind"],
            buckets=PROPOSAL_BUCKETS,
            registry=self.registry,
        )

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The scrape's body and content type, in the format the scraper's Accept header asks for."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
