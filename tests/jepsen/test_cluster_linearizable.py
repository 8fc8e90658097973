"""The example cluster as three processes stays linearizable under faults: clients PUT, DELETE and GET a few keys
while a nemesis kills, pauses and partitions nodes; every operation is recorded with its call, return and outcome,
and the whole history goes through the linearizability checker. A failing history is saved as JSON (with the
nemesis's log) in the test's temporary directory and the checker's explanation is printed."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import runreport
from cluster import Cluster
from faultproxy import Network
from kvclients import KVClient, Recorder, new_session, run_client
from lincheck import check, save
from nemesis import Nemesis

SOAK = os.environ.get("AIOWAL_SOAK", "") not in ("", "0")
KEYS = ["k0", "k1", "k2"]
CLIENTS = 6


@dataclass
class Run:
    ops: int
    outcomes: Counter[str]
    faults: Counter[str]
    seconds: float
    check_seconds: float
    explored: int


async def linearizability_run(tmp_path: Path, seconds: float, seed: int) -> Run:
    started = time.monotonic()
    cluster = Cluster(tmp_path / "nodes", snapshot_every=60, keep_entries=20)
    net = Network(cluster.raft)
    cluster.routes = await net.start()
    rec = Recorder()
    async with new_session() as session:
        nemesis = Nemesis(cluster, net, session, rec, seed)
        try:
            for i in cluster.ids:
                await asyncio.to_thread(cluster.start, i)
            clients = [KVClient(p, session, cluster.http, rec) for p in range(CLIENTS)]
            until = rec.now() + seconds
            await asyncio.gather(
                nemesis.run(until), *(run_client(c, KEYS, until, seed * 1000 + c.process) for c in clients)
            )
            await nemesis.recover()
            # Once the faults are over the cluster must answer again, and what it answers is part of the history.
            final = KVClient(CLIENTS, session, cluster.http, rec, deadline=30.0)
            for key in KEYS:
                op = await final.get(key)
                assert op.outcome == "ok", f"the healed cluster did not answer a read of {key}: {op.describe()}"
        finally:
            await nemesis.recover()
            await asyncio.to_thread(cluster.stop_all)
            await net.close()
    elapsed = time.monotonic() - started
    t = time.monotonic()
    result = check(rec.ops, max_states=500_000)
    check_seconds = time.monotonic() - t
    if not result.ok:
        path = tmp_path / "history.json"
        save(path, rec.ops, nemesis=nemesis.log, seed=seed)
        print(result.explanation())
        pytest.fail(f"history is {result.verdict.value} (saved to {path}):\n{result.explanation()}")
    run = Run(
        len(rec.ops),
        Counter(op.outcome for op in rec.ops),
        nemesis.faults,
        elapsed,
        check_seconds,
        sum(k.explored for k in result.keys),
    )
    runreport.LINES.append(
        f"seed {seed}: {run.ops} operations ({dict(run.outcomes)}) under {sum(run.faults.values())} faults "
        f"({dict(run.faults)}) in {run.seconds:.0f} s; checked linearizable in {run.check_seconds:.2f} s "
        f"({run.explored} states)"
    )
    return run


def assert_meaningful(run: Run, min_faults: int) -> None:
    # A run that did little, or in which nothing went wrong, would prove nothing.
    assert run.outcomes["ok"] >= 200, run
    assert sum(run.faults.values()) >= min_faults, run
    assert run.outcomes["unknown"] + run.outcomes["fail"] > 0, run


async def test_cluster_is_linearizable_under_faults(tmp_path: Path) -> None:
    run = await linearizability_run(tmp_path, seconds=30, seed=1)
    assert_meaningful(run, min_faults=8)


@pytest.mark.soak
async def test_soak_cluster_is_linearizable_under_faults(tmp_path: Path) -> None:
    seconds = float(os.environ.get("AIOWAL_JEPSEN_SECONDS", "300"))
    runs = [await linearizability_run(tmp_path / f"run{seed}", seconds=seconds / 3, seed=seed) for seed in (2, 3, 4)]
    for run in runs:
        assert_meaningful(run, min_faults=int(seconds / 3 / 3))
