"""The example cluster as real processes: the demo end to end, and SIGKILLs of random nodes under load with no
acknowledged write lost and the replicas converging."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "cluster"))
from cluster import Cluster, http  # noqa: E402


def test_demo_runs_end_to_end() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "cluster" / "demo.py"), "--writes", "60"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "every acknowledged write is on every node" in out.stdout
    assert "caught up through a snapshot" in out.stdout


def _kill_under_load(root: Path, kills: int, seed: int) -> tuple[int, int]:
    rng = random.Random(seed)
    cluster = Cluster(root, snapshot_every=50, keep_entries=10)
    acked: dict[str, str] = {}
    stop = threading.Event()
    errors: list[str] = []

    def writer() -> None:
        n = 0
        while not stop.is_set():
            try:
                cluster.put(f"k{n}", f"v{n}")
            except SystemExit as exc:  # no leader for too long
                errors.append(str(exc))
                return
            acked[f"k{n}"] = f"v{n}"
            n += 1

    try:
        for i in cluster.ids:
            cluster.start(i)
        cluster.leader()
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        for _ in range(kills):
            time.sleep(rng.uniform(0.1, 0.6))
            victim = rng.choice(sorted(cluster.procs))
            cluster.kill(victim)
            time.sleep(rng.uniform(0.0, 0.3))
            cluster.start(victim)
        stop.set()
        t.join(60)
        assert not errors, errors
        deadline = time.monotonic() + 60
        states = {}
        while time.monotonic() < deadline:
            states = {i: http("GET", cluster.url(i, "/local"))[1] for i in cluster.ids}
            if (
                all(all(s.get(k) == v for k, v in acked.items()) for s in states.values())
                and len({tuple(sorted(s.items())) for s in states.values()}) == 1
            ):
                break
            time.sleep(0.2)
        for i, s in states.items():
            lost = [k for k, v in acked.items() if s.get(k) != v]
            assert not lost, f"node {i} lost {len(lost)} acknowledged writes, e.g. {lost[:5]}"
        assert len({tuple(sorted(s.items())) for s in states.values()}) == 1, "replicas did not converge"
        return kills, len(acked)
    finally:
        stop.set()
        cluster.stop_all()


def test_sigkill_random_nodes_under_load(tmp_path: Path) -> None:
    kills, writes = _kill_under_load(tmp_path, kills=6, seed=1)
    assert kills == 6
    assert writes > 0


@pytest.mark.soak
def test_soak_sigkill_random_nodes(tmp_path: Path) -> None:
    total_kills = total_writes = 0
    for seed in range(10):
        kills, writes = _kill_under_load(tmp_path / f"run{seed}", kills=10, seed=seed)
        total_kills += kills
        total_writes += writes
    print(f"cluster soak: {total_kills} SIGKILLs, {total_writes} acknowledged writes, none lost")
    assert total_kills >= 100
