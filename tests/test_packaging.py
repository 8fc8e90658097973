"""The wheel is complete and its dependencies earn their place: built from the source tree, installed in a fresh
venv, the ``aiowal`` command and package work there away from the source tree, ``aiowal bench`` included (what
``make wheel-check`` runs). ``import aiowal`` loads neither ``cryptography`` (only encrypted directories need it)
nor ``rich`` (only the command line does).

Offline: the wheel is built without build isolation and installed without its dependencies; the fresh venv sees the
dependencies through a ``.pth`` line naming this test's own site-packages, which ``make test`` has filled.
"""

from __future__ import annotations

import email.parser
import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPENDENCIES = {"protobuf", "cryptography", "aiofiles", "crc32c", "rich"}


def sh(*argv: str | Path, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False)
    assert r.returncode == 0, f"{argv} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_wheel_installs_in_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    sh(sys.executable, "-m", "build", "-q", "--wheel", "--no-isolation", "--skip-dependency-check", "--outdir", dist,
       ROOT, cwd=tmp_path)  # fmt: skip
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
        "aiowal/cli/__init__.py",
        "aiowal/cli/bench.py",
        "aiowal/cli/diskcheck.py",
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
    assert {r.split(">")[0].split("<")[0].split("=")[0] for r in requires if "extra ==" not in r} == DEPENDENCIES
    assert any(r.startswith("aiohttp") and 'extra == "examples"' in r for r in requires)
    assert not any(r.startswith("lmdb") for r in requires)  # no benchmark uses it
    assert meta["License-Expression"] == "Apache-2.0"

    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    sh(sys.executable, "-m", "venv", "--without-pip", venv)
    sh(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel)
    # The dependencies: this environment's site-packages, after the venv's own (a plain path line is not scanned
    # for .pth files, so the source tree's editable install stays out of sight).
    venv_site = Path(sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (venv_site / "aiowal-test-dependencies.pth").write_text("".join(f"{p}\n" for p in ours))

    away = tmp_path / "elsewhere"  # not the source tree, and no benchmarks package: the installed package runs
    away.mkdir()
    r = sh(venv / "bin" / "aiowal", "--help", cwd=away)
    assert "verify" in r.stdout
    assert "bench" in r.stdout
    r = sh(python, "-m", "aiowal", "--version", cwd=away)
    assert r.stdout.strip() == "aiowal 0.1.0"
    script = (
        "import aiowal, sys\n"
        "assert aiowal.__file__.startswith(sys.prefix), aiowal.__file__\n"
        "from aiowal import speedups\n"
        "assert speedups.pack is not None and speedups.read is not None\n"
        "with aiowal.DiskStorage.open('wal') as st:\n"
        "    st.save(entries=[aiowal.raftpb.Entry(term=1, index=1, data=b'x')])\n"
    )
    sh(python, "-c", script, cwd=away)
    r = sh(venv / "bin" / "aiowal", "verify", "wal", cwd=away)
    assert r.stdout.startswith("OK: wal: wal.meta, 1 log file and 1 entry checked")

    r = sh(venv / "bin" / "aiowal", "bench", "--quick", "--json", cwd=away, timeout=120)
    doc = json.loads(r.stdout)
    assert doc["directory"] == str(away)
    assert [run["callers"] for run in doc["group_commit"]] == [1, 4, 16, 64]
    assert doc["fdatasync"]["p50_ms"] > 0
    assert doc["save"]["p50_ms"] > 0
    assert doc["verdict"]
    assert sorted(p.name for p in away.iterdir()) == ["wal"]  # the check's own directory is gone


def imported_after(code: str, cwd: Path) -> set[str]:
    """The top-level modules loaded in a fresh interpreter after ``code`` runs."""
    script = f"{code}\nimport sys\nprint(' '.join(sorted({{m.partition('.')[0] for m in sys.modules}})))\n"
    return set(sh(sys.executable, "-c", script, cwd=cwd).stdout.split())


def test_import_aiowal_loads_neither_cryptography_nor_rich(tmp_path: Path) -> None:
    loaded = imported_after("import aiowal", tmp_path)
    assert "aiowal" in loaded
    assert not loaded & {"cryptography", "rich"}


def test_a_plain_directory_never_loads_cryptography(tmp_path: Path) -> None:
    plain = (
        "import asyncio, aiowal\n"
        "from aiowal.raftpb import Entry, HardState\n"
        "with aiowal.DiskStorage.open('plain') as st:\n"
        "    st.save(HardState(term=1, vote=1, commit=1), [Entry(term=1, index=1, data=b'x')])\n"
        "with aiowal.DiskStorage.open('plain') as st:\n"
        "    assert st.entries(1, 2)[0].data == b'x'\n"
        "async def main():\n"
        "    st = await aiowal.AsyncDiskStorage.open('plain', hard_sync=True)\n"
        "    await st.save(entries=[Entry(term=1, index=2, data=b'y')])\n"
        "    await st.close()\n"
        "asyncio.run(main())\n"
    )
    assert "cryptography" not in imported_after(plain, tmp_path)
    encrypted = "import aiowal\nwith aiowal.DiskStorage.open('secret', key=bytes(32)) as st:\n    pass\n"
    assert "cryptography" in imported_after(encrypted, tmp_path)  # the check above can see the import
