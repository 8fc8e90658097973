"""The storage suites run on both implementations of the hot loops: the C accelerator and the pure-Python paths.

Each test of the suites in ``BOTH_PATHS`` is parametrized by the ``aiowal_path`` fixture, with the ids
``c-accelerator`` and ``pure-python``; on the pure-Python path the names of ``aiowal.speedups`` are None, and
``AIOWAL_PURE_PYTHON=1`` reaches the child processes. The pure-Python run of ``PURE_PYTHON_IN_SOAK`` is marked
``soak``: ``make soak`` runs it, ``make test`` does not. A test of the C accelerator itself is marked
``c_accelerator`` (``c_accelerator("sync_worker")``: of that part of it): it runs on that path only. Tests of the C
path skip (never fail) when the accelerator, or that part, is not built or ``AIOWAL_PURE_PYTHON`` is set.
``--aiowal-path`` picks one path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aiowal import speedups

C_ACCELERATOR = "c-accelerator"
PURE_PYTHON = "pure-python"

HERE = Path(__file__).resolve().parent
BOTH_PATHS = [
    HERE / "test_model.py",
    HERE / "test_storage_contract.py",
    HERE / "test_dgraph_fixtures.py",
    HERE / "test_bad_input.py",
    HERE / "test_save_rules.py",
    HERE / "test_aio.py",
    HERE / "test_aio_misuse.py",
    HERE / "crash",
    HERE / "test_both_paths.py",
]
# Their pure-Python run only in make soak (marked soak): one run takes minutes, and the C run already covers
# encrypted files, which always take the Python paths. Where the accelerator is not built, make test runs it.
PURE_PYTHON_IN_SOAK = [HERE / "crash" / "test_corruption_fuzz.py"]

# What the accelerator put in aiowal.speedups at import (all None when it is not built or AIOWAL_PURE_PYTHON is set).
ACCELERATED = {name: getattr(speedups, name) for name in ("pack", "read", "entries_ok", "sync_worker")}
BUILT = ACCELERATED["pack"] is not None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--aiowal-path",
        choices=("both", C_ACCELERATOR, PURE_PYTHON),
        default="both",
        help="which implementation the storage suites run on (default: both)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "c_accelerator(*parts): a test of the C accelerator (or of those parts of it, such as 'sync_worker'): on its "
        "path only, skipped when it is not built",
    )


def pytest_report_header(config: pytest.Config) -> str:
    if BUILT:
        worker = "with" if ACCELERATED["sync_worker"] is not None else "without"
        state = f"built, {worker} the sync worker"
    elif os.environ.get("AIOWAL_PURE_PYTHON", "") not in ("", "0"):
        state = "turned off by AIOWAL_PURE_PYTHON: its tests skip"
    else:
        state = "not built: its tests skip"
    return f"aiowal C accelerator: {state}; storage suites on: {config.getoption('--aiowal-path')}"


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == p or p in path.parents for p in roots)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    where = Path(metafunc.definition.path)
    if not _under(where, BOTH_PATHS):
        return
    chosen = metafunc.config.getoption("--aiowal-path")
    paths = [p for p in (C_ACCELERATOR, PURE_PYTHON) if chosen in ("both", p)]
    if metafunc.definition.get_closest_marker("c_accelerator") is not None:
        paths = [p for p in paths if p == C_ACCELERATOR]  # none: pytest reports the test skipped
    soak = BUILT and _under(where, PURE_PYTHON_IN_SOAK)
    params = [pytest.param(p, id=p, marks=[pytest.mark.soak] if soak and p == PURE_PYTHON else []) for p in paths]
    metafunc.parametrize("aiowal_path", params, indirect=True)


@pytest.fixture(autouse=True)
def aiowal_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The implementation this test runs on (None: a suite that is not parametrized, on whatever is loaded)."""
    path: str | None = getattr(request, "param", None)
    marker = request.node.get_closest_marker("c_accelerator")
    if (path == C_ACCELERATOR or marker is not None) and not BUILT:
        pytest.skip("the C accelerator is not built (or AIOWAL_PURE_PYTHON is set)")
    for part in marker.args if marker is not None else ():
        if ACCELERATED[part] is None:
            pytest.skip(f"the C accelerator was built without {part}")
    if path == PURE_PYTHON:
        for name in ACCELERATED:
            monkeypatch.setattr(speedups, name, None)
        monkeypatch.setenv("AIOWAL_PURE_PYTHON", "1")  # child processes (kill and full-disk tests) too
    elif path == C_ACCELERATOR:
        for name, value in ACCELERATED.items():
            monkeypatch.setattr(speedups, name, value)
        monkeypatch.delenv("AIOWAL_PURE_PYTHON", raising=False)
    return path
