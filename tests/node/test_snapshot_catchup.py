"""A node joining a cluster whose state machine is larger than what it should hold in memory: the snapshot is
streamed as a file, the nodes' resident memory stays flat, and writes keep committing through the other followers
meanwhile (examples/cluster/snapshot_catchup.py; 1 GiB under the soak marker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from node_harness import CLUSTER  # noqa: F401  (puts examples/cluster on the path)
from snapshot_catchup import measure

MIB = 1 << 20


def check(out: dict[str, Any], state_mib: int) -> None:
    assert out["snapshot_bytes"] >= state_mib * MIB  # the whole state went through the stream
    assert out["keys_on_new_node"] == out["keys_on_leader"]
    # Memory: no node holds the snapshot, on either side of the stream.
    growth = out["peak_rss_growth_mib"] or out["rss_growth_mib"]
    assert sum(max(0.0, g) for g in growth.values()) < 100, growth
    # Writes went on, committed by the leader and the followers that were already there.
    assert out["writes_during"]["writes"] > 0, out
    assert all(n > 0 for n in out["other_followers_applied_during"].values()), out


def test_a_joining_node_catches_up_through_a_streamed_snapshot(tmp_path: Path) -> None:
    out = measure(tmp_path, state_mib=24, value_kib=256, rate=50, say=print, settle=1.0, snapshot_every=60)
    check(out, 24)


@pytest.mark.soak
def test_soak_a_joining_node_catches_up_a_1_gib_state_machine(tmp_path: Path) -> None:
    out = measure(tmp_path, state_mib=1024, value_kib=1024, rate=100, say=print)
    print(out)
    check(out, 1024)
