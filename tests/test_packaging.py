"""The wheel that ``python -m build`` makes is complete: it installs with its dependencies in a fresh venv, and the
installed ``aiowal`` command and package work there, away from the source tree (what ``make wheel-check`` does)."""

from __future__ import annotations

import email.parser
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sh(*argv: str | Path, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False)
    assert r.returncode == 0, f"{argv} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_wheel_installs_in_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    sh(sys.executable, "-m", "build", "-q", "--wheel", "--outdir", dist, ROOT, cwd=tmp_path)
    wheels = list(dist.glob("aiowal-*.whl"))
    assert len(wheels) == 1
    wheel = wheels[0]

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(info).decode())
        entry_points = zf.read(info.replace("METADATA", "entry_points.txt")).decode()
    for needed in (
        "aiowal/__init__.py",
        "aiowal/__main__.py",
        "aiowal/cli.py",
        "aiowal/aio.py",
        "aiowal/py.typed",
        "aiowal/raftpb/raft_pb2.py",
        "aiowal/raftpb/raft_pb2.pyi",
        "aiowal/raftpb/raft.proto",
    ):
        assert needed in names, needed
    assert any(n.startswith("aiowal/_speedups.") and n.endswith(".so") for n in names)  # the C accelerator, built
    assert "aiowal/_speedups.pyi" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "benchmarks/", "examples/")) for n in names)
    assert "aiowal = aiowal.cli:main" in entry_points
    assert meta["Name"] == "aiowal"
    requires = meta.get_all("Requires-Dist") or []
    assert any(r.startswith("rich") for r in requires)
    assert any(r.startswith("aiohttp") and 'extra == "examples"' in r for r in requires)
    assert meta["License-Expression"] == "Apache-2.0"

    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", venv)
    sh(venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel)
    away = tmp_path / "elsewhere"  # not the source tree: the installed package must be the one imported
    away.mkdir()
    r = sh(venv / "bin" / "aiowal", "--help", cwd=away)
    assert "verify" in r.stdout
    r = sh(venv / "bin" / "python", "-m", "aiowal", "--version", cwd=away)
    assert r.stdout.strip() == "aiowal 0.1.0"
    script = (
        "import aiowal, sys\n"
        "assert aiowal.__file__.startswith(sys.prefix), aiowal.__file__\n"
        "from aiowal import speedups\n"
        "assert speedups.pack is not None and speedups.read is not None\n"
        "with aiowal.DiskStorage.open('wal') as st:\n"
        "    st.save(entries=[aiowal.raftpb.Entry(term=1, index=1, data=b'x')])\n"
    )
    sh(venv / "bin" / "python", "-c", script, cwd=away)
    r = sh(venv / "bin" / "aiowal", "verify", "wal", cwd=away)
    assert r.stdout.startswith("OK: wal: wal.meta, 1 log file and 1 entry checked")
