"""Membership changes of the example cluster as real processes, through the admin API, under write load: grow from
3 to 5 voters and shrink back to 3, remove the leader, replace a killed node with an empty one that catches up
through a snapshot. No acknowledged write may be lost and the remaining replicas must converge."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from node_harness import Cluster, http


class Writer:
    """Writes distinct keys to the cluster's leader from a thread until stopped; remembers what was acknowledged."""

    def __init__(self, cluster: Cluster, prefix: str = "k") -> None:
        self.cluster = cluster
        self.prefix = prefix
        self.acked: dict[str, str] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            key, value = f"{self.prefix}{n}", f"v{n}"
            try:
                self.cluster.put(key, value)
            except SystemExit as exc:  # no leader for too long
                self.errors.append(str(exc))
                return
            self.acked[key] = value
            n += 1

    def start(self) -> Writer:
        self._thread.start()
        return self

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, f"only {len(self.acked)} writes acknowledged"
            time.sleep(0.05)

    def stop(self) -> dict[str, str]:
        self._stop.set()
        self._thread.join(60)
        assert not self.errors, self.errors
        return dict(self.acked)


def wait_until(cond: object, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def converged(cluster: Cluster, ids: list[int], acked: dict[str, str], seconds: float = 60.0) -> None:
    """Every node in ``ids`` holds every acknowledged write, and they all hold the same state."""
    states: dict[int, dict] = {}

    def check() -> bool:
        nonlocal states
        states = {i: http("GET", cluster.url(i, "/local"))[1] for i in ids}
        same = len({tuple(sorted(s.items())) for s in states.values()}) == 1
        return same and all(all(s.get(k) == v for k, v in acked.items()) for s in states.values())

    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.2)
    for i, s in states.items():
        lost = [k for k, v in acked.items() if s.get(k) != v]
        assert not lost, f"node {i} lost {len(lost)} acknowledged writes, e.g. {lost[:5]}"
    assert len({tuple(sorted(s.items())) for s in states.values()}) == 1, "replicas did not converge"


def members(cluster: Cluster) -> dict:
    code, out = cluster.admin("GET", "/admin/members")
    assert code == 200, out
    return out


def join(cluster: Cluster, i: int) -> None:
    """Start node ``i`` empty with --join and wait until the leader lists it as a learner."""
    cluster.start(i, join=True)
    wait_until(lambda: i in members(cluster)["learners"], f"node {i} never joined as a learner")


def remove(cluster: Cluster, i: int) -> dict:
    """Remove node ``i`` through the admin API; the node shuts itself down once that is safe."""
    code, out = cluster.admin("DELETE", f"/admin/members/{i}")
    assert code == 200, out
    assert i not in out["voters"] and out.get("stopped") is True
    assert cluster.wait_exit(i) == 0
    return out


def grow_and_shrink(root: Path, seed: int) -> int:
    rng = random.Random(seed)
    cluster = Cluster(root, spares=2, snapshot_every=50, keep_entries=10)
    try:
        for i in cluster.ids:
            cluster.start(i)
        cluster.leader()
        writer = Writer(cluster).start()
        writer.wait_for(120)  # the log is compacted: newcomers need a snapshot
        for i in (4, 5):
            join(cluster, i)
            code, out = cluster.admin("POST", f"/admin/members/{i}/promote", {})
            assert code == 200, out
        assert members(cluster)["voters"] == [1, 2, 3, 4, 5]
        writer.wait_for(len(writer.acked) + 50)
        for i in (4, 5):
            st = cluster.status(i)
            assert st["counters"]["snapshots_received"] >= 1 and st["snapshot_index"] > 0, st
        # Shrink: two of the founding nodes go, the leader first when it is one of them.
        lead, _ = cluster.leader()
        founding = [1, 2, 3]
        first = lead if lead in founding else rng.choice(founding)
        gone = [first, rng.choice([i for i in founding if i != first])]
        for i in gone:
            remove(cluster, i)
            writer.wait_for(len(writer.acked) + 20)
        rest = sorted({1, 2, 3, 4, 5} - set(gone))
        assert members(cluster)["voters"] == rest
        acked = writer.stop()
        converged(cluster, rest, acked)
        return len(acked)
    finally:
        cluster.stop_all()


def test_grow_from_3_to_5_and_shrink_back_to_3_under_write_load(tmp_path: Path) -> None:
    assert grow_and_shrink(tmp_path, seed=1) > 0


def test_remove_the_leader_under_write_load(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, snapshot_every=50, keep_entries=10)
    try:
        for i in cluster.ids:
            cluster.start(i)
        old, term = cluster.leader()
        writer = Writer(cluster).start()
        writer.wait_for(40)
        out = remove(cluster, old)  # the request reaches the leader itself; it answers, then exits
        assert sorted(out["voters"]) == [i for i in cluster.ids if i != old]
        new, new_term = cluster.leader()
        assert new != old and new_term > term
        writer.wait_for(len(writer.acked) + 40)
        acked = writer.stop()
        converged(cluster, [i for i in cluster.ids if i != old], acked)
    finally:
        cluster.stop_all()


def test_replace_a_killed_node_with_an_empty_one(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, spares=1, snapshot_every=50, keep_entries=10)
    try:
        for i in cluster.ids:
            cluster.start(i)
        lead, _ = cluster.leader()
        writer = Writer(cluster).start()
        writer.wait_for(30)
        dead = next(i for i in cluster.ids if i != lead)
        cluster.kill(dead)  # for good: its disk is gone too
        writer.wait_for(len(writer.acked) + 120)  # past the snapshots: the newcomer needs one
        join(cluster, 4)
        body = {"id": 4, "raft": cluster.addr(4), "http": cluster.addr(4, "http")}
        code, out = cluster.admin("POST", f"/admin/members/{dead}/replace", body)
        assert code == 200, out
        want = sorted({1, 2, 3, 4} - {dead})
        assert out["voters"] == want and out["voters_outgoing"] == [] and out["learners"] == []
        st = cluster.status(4)
        assert st["counters"]["snapshots_received"] >= 1 and st["snapshot_index"] > 0, st
        writer.wait_for(len(writer.acked) + 30)
        # Node 4 is a voter that counts: with one of the two others stopped, writes still commit.
        lead, _ = cluster.leader()
        other = next(i for i in want if i not in (lead, 4))
        cluster.kill(other)
        writer.wait_for(len(writer.acked) + 30)
        cluster.start(other)
        acked = writer.stop()
        converged(cluster, want, acked)
    finally:
        cluster.stop_all()


@pytest.mark.soak
def test_soak_grow_and_shrink(tmp_path: Path) -> None:
    total = sum(grow_and_shrink(tmp_path / f"run{seed}", seed) for seed in range(10))
    print(f"membership soak: 10 rounds of 3 -> 5 -> 3 voters, {total} acknowledged writes, none lost")
