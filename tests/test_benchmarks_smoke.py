"""The benchmark harness runs end to end at tiny sizes and produces a well-formed document. Speed is not asserted
here: ``make bench`` measures it."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # benchmarks/ lives beside src/, outside the installed package

import benchmarks  # noqa: E402


def _ratios(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "ratios" and isinstance(value, dict):
                for name, res in value.items():
                    yield f"{path}.{name}", res
            else:
                yield from _ratios(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _ratios(value, f"{path}[{i}]")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    result: dict[str, Any] = benchmarks.run(quick=True)
    return result


def test_document_is_json_with_every_section(doc: dict[str, Any]) -> None:
    assert json.loads(json.dumps(doc)) == doc
    assert doc["meta"]["quick"] is True
    assert doc["errors"] == [], [doc[g][n].get("traceback") for g, n in (e.split(".") for e in doc["errors"])]
    assert set(doc["issue2"]) == {"save_256x1k", "entries_100", "open_and_heap"}
    assert set(doc["issue3"]) == {"asyncio", "uvloop", "concurrency_sweep"}
    for loop in ("asyncio", "uvloop"):
        section = doc["issue3"][loop]
        assert {"single_caller_100B", "batch_256x1k", "callers_64"} <= set(section)
        assert section["callers_64"]["stats_last_run"]["saves"] > 0
        lag = section["callers_64"]["loop_lag_ms"]["under_load"]
        assert lag["count"] > 0 and 0 <= lag["p99"] <= lag["max"]
    assert "uvloop" in doc["issue3"]["uvloop"]["loop_type"].lower()
    assert set(doc["cluster"]) == {"processes_http"}


def test_cluster_benchmark_drives_every_system(doc: dict[str, Any], tmp_path: Any) -> None:
    """Every system answered every client count with acknowledged writes, none failed, and the figures plot."""
    from benchmarks.plot import plot_cluster

    section = doc["cluster"]["processes_http"]
    systems = {"aiowal", "pysyncobj", "pysyncobj_nobatch"}
    assert set(section["writes_per_s"]) == set(section["latency_ms"]) == systems
    for name in systems:
        for n in section["levels"]:
            assert section["writes_per_s"][name][str(n)]["median"] > 0
            lat = section["latency_ms"][name][str(n)]
            assert lat["count"] > 0 and 0 < lat["p50"] <= lat["p99"]
            cpu = section["cpu_us_per_write"][name][str(n)][0]
            assert cpu["client"] > 0 and cpu["leader"] >= 0 and cpu["followers"] >= 0  # (/proc counts 10 ms ticks)
    assert section["cpu_us_per_write"]["aiowal"][str(max(section["levels"]))][0]["leader"] > 0
    assert section["failed_requests"] == dict.fromkeys(systems, 0)
    for n in section["levels"]:
        nodes = section["aiowal_storage"][str(n)][0]
        assert set(nodes) == {"leader", "follower1", "follower2"}
        for figures in nodes.values():
            assert figures["entries_per_commit"] >= 1 and figures["mean_sync_ms"] > 0 and figures["syncs_per_s"] > 0
        # The leader's own share of a write's latency is part of what the client saw.
        client = section["latency_ms_per_round"]["aiowal"][str(n)][0]
        assert 0 < nodes["leader"]["mean_proposal_ms"] < client["mean"]
    out = tmp_path / "cluster.png"
    plot_cluster(doc, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_figure_is_a_positive_median(doc: dict[str, Any]) -> None:
    def medians(node: Any) -> Iterator[float]:
        if isinstance(node, dict):
            if "median" in node and "samples" in node:
                assert node["min"] <= node["median"] <= node["max"]
                assert len(node["samples"]) >= 1
                yield node["median"]
            for value in node.values():
                yield from medians(value)

    found = list(medians(doc))
    assert len(found) > 20
    assert all(math.isfinite(m) and m > 0 for m in found)


def test_every_ratio_is_positive_and_finite(doc: dict[str, Any]) -> None:
    ratios = list(_ratios(doc))
    assert len(ratios) >= 15
    for name, res in ratios:
        assert isinstance(res["value"], float), name
        assert math.isfinite(res["value"]) and res["value"] > 0, (name, res)
        assert res["met"] in (True, False, None), name


def test_targets_are_flattened(doc: dict[str, Any]) -> None:
    names = {t["figure"] for t in doc["targets"]}
    for expected in (
        "issue2.save_256x1k.aiowal_vs_pysyncobj",
        "issue2.save_256x1k.aiowal_vs_sqlite",
        "issue2.save_256x1k.aiowal_vs_floor",
        "issue2.entries_100.aiowal_vs_sqlite_rows",
        "issue2.open_and_heap.open_large_ms",
        "issue3.asyncio.callers_64.aiowal_vs_single_caller",
        "issue3.uvloop.callers_64.loop_lag_p99_ms",
    ):
        assert expected in names
    assert any(name.startswith("cluster.processes_http.aiowal_vs_pysyncobj_nobatch_") for name in names)
    assert all(isinstance(t["met"], bool) for t in doc["targets"])


def test_sweep_series_feed_the_plot(doc: dict[str, Any], tmp_path: Any) -> None:
    from benchmarks.plot import plot

    series = doc["issue3"]["concurrency_sweep"]["series"]
    assert set(series) == {"aiowal", "aiowal_uvloop", "sqlite", "plain_fdatasync_loop"}
    for s in series.values():
        assert len(s["callers"]) == len(s["ops_per_s"]) >= 2
    out = tmp_path / "sweep.png"
    plot(doc, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
