"""Every example runs as a user would run it (a subprocess) and does what it says: the quickstarts, the
key-value server's kill -9 and restart, and the end-to-end demo."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiowal import DiskStorage

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SERVER_ARGS = ["--snapshot-every", "100", "--entries-per-file", "50"]


def run_example(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert r.returncode == 0, f"{name} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def test_quickstart(tmp_path: Path) -> None:
    r = run_example("quickstart.py", str(tmp_path / "wal"))
    lines = r.stdout.splitlines()
    assert lines == [
        "after save: first=1 last=3 entries=[1@t1:set x=1, 2@t1:set x=2, 3@t1:set x=3]",
        "after overwrite: first=1 last=4 entries=[1@t1:set x=1, 2@t1:set x=2, 3@t2:set y=3, 4@t2:set y=4]",
        "term(3)=2 term(4)=2",
        "snapshot: index=3 term=2 data=x=2,y=3",
        "entries(2, 4): CompactedError: requested index is unavailable due to compaction",
        "reopened: hard_state=(term=2 vote=2 commit=3) voters=[1, 2, 3]",
        "reopened: first=4 last=4 entries=[4@t2:set y=4]",
    ]
    with DiskStorage.open(tmp_path / "wal", read_only=True) as st:  # the directory holds what it printed
        assert [(e.index, e.term, e.data) for e in st.entries(4, 5)] == [(4, 2, b"set y=4")]
    run_example("quickstart.py")  # and with its own temporary directory


def test_async_quickstart_shows_group_commit(tmp_path: Path) -> None:
    r = run_example("async_quickstart.py", str(tmp_path / "wal"), "--saves", "1000")
    out = r.stdout
    seq = re.search(r"^sequential: (\d+) saves, (\d+) syncs", out, re.M)
    conc = re.search(r"^concurrent: (\d+) saves, (\d+) batches, (\d+) syncs", out, re.M)
    assert seq is not None and conc is not None, out
    assert int(seq[1]) == 100 and int(seq[2]) >= 100  # one sync per save when saves wait for each other
    saves, batches, syncs = int(conc[1]), int(conc[2]), int(conc[3])
    assert saves == 1000
    assert syncs <= 20 and batches <= 10  # 1000 concurrent saves share a handful of syncs
    stats = json.loads(out[out.index("stats() =") + len("stats() =") :])
    assert (stats["saves"], stats["entries"]) == (1100, 1100)
    assert stats["batch_size"]["max"] > 100
    assert stats["bytes"] > 0 and stats["sync_latency_ms"]["count"] == stats["syncs"]
    with DiskStorage.open(tmp_path / "wal", read_only=True) as st:
        assert (st.first_index(), st.last_index(), st.hard_state().commit) == (1, 1100, 1100)


def test_the_quickstarts_in_the_order_the_docs_give_them(tmp_path: Path) -> None:
    """docs/quickstart.md runs the synchronous snippet, then the asyncio one, on the same directory: the second
    continues the log the first left (term 2 from index 5), and nothing is refused or lost."""
    wal = str(tmp_path / "wal")
    run_example("quickstart.py", wal)
    r = run_example("async_quickstart.py", wal, "--saves", "200")
    assert "concurrent: 200 saves" in r.stdout
    with DiskStorage.open(wal, read_only=True) as st:
        assert (st.first_index(), st.last_index(), st.hard_state().commit) == (4, 304, 304)
        ents = st.entries(4, 305)
        assert [e.index for e in ents] == list(range(4, 305))
        assert {e.term for e in ents} == {2}


# --- kv_server ----------------------------------------------------------------------------------------------------
class KV:
    def __init__(self, wal: Path, log: Path) -> None:
        self.wal, self.log = wal, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.recovered: dict[str, Any] = {}

    def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, str(EXAMPLES / "kv_server.py"), str(self.wal), "0", *SERVER_ARGS],
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.log.read_bytes()[offset:].decode()
            m = re.search(r"^listening on (\S+)\nrecovered (.*)$", text, re.M)
            if m:
                self.url, self.recovered = m[1], json.loads(m[2])
                return
            assert self.proc.poll() is None, text
            time.sleep(0.02)
        raise AssertionError(f"kv_server did not start: {self.log.read_text()}")

    def put(self, key: str, value: str) -> bool:
        req = urllib.request.Request(f"{self.url}/kv/{key}", data=value.encode(), method="PUT")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def test_kv_server_keeps_every_acknowledged_write_across_kill_9(tmp_path: Path) -> None:
    kv = KV(tmp_path / "wal", tmp_path / "server.log")
    kv.start()
    assert kv.recovered["keys"] == 0
    acked: dict[str, str] = {}
    with ThreadPoolExecutor(16) as pool:
        results = pool.map(lambda i: (f"k{i}", f"v{i}", kv.put(f"k{i}", f"v{i}")), range(400))
        acked.update((k, v) for k, v, ok in results if ok)
    assert len(acked) == 400
    status, body = kv.get("/stats")
    stats = json.loads(body)
    assert (stats["applied"], stats["keys"]) == (400, 400)
    assert stats["snapshot_index"] >= 300
    assert stats["log"]["saves"] == 400
    assert stats["log"]["syncs"] < 400  # concurrent PUTs shared fdatasync calls
    assert not (tmp_path / "wal" / "00001.wal").exists()  # snapshots made old log files go away

    # More writes, and kill -9 while they are in flight.
    stop = False

    def writer(i: int) -> tuple[str, str, bool]:
        if stop:
            return f"k{i}", "", False
        return f"k{i}", f"v{i}", kv.put(f"k{i}", f"v{i}")

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(writer, i) for i in range(400, 2000)]
        while sum(1 for f in futures if f.done() and f.result()[2]) < 150:
            time.sleep(0.005)
        assert kv.proc is not None
        os.kill(kv.proc.pid, signal.SIGKILL)
        stop = True
        second = [f.result() for f in futures]
    assert kv.proc.wait() == -signal.SIGKILL
    acked2 = {k: v for k, v, ok in second if ok}
    assert 150 <= len(acked2) < 1600
    acked.update(acked2)

    kv.start()
    assert kv.recovered["snapshot_index"] >= 400
    assert kv.recovered["keys"] >= len(acked)
    for key, value in acked.items():
        assert kv.get(f"/kv/{key}") == (200, value.encode()), key
    status, _ = kv.get("/kv/never-written")
    assert status == 404
    assert kv.proc is not None
    kv.proc.send_signal(signal.SIGTERM)
    assert kv.proc.wait(timeout=30) == 0
    assert "stopped" in kv.log.read_text()


def test_demo_end_to_end(tmp_path: Path) -> None:
    r = run_example("demo.py", "--keys", "300", "--dir", str(tmp_path))
    out = r.stdout
    acked = re.search(r"(\d+) writes acknowledged", out)
    assert acked is not None and int(acked[1]) == 300
    assert re.search(r"SIGKILL sent \(pid \d+, exit status -9\)", out)
    assert re.search(r"restarted \(pid \d+\): state rebuilt", out)
    found = re.search(r"all (\d+) acknowledged writes found with their values", out)
    assert found is not None and int(found[1]) >= 450
    assert f"$ aiowal info {tmp_path / 'wal'}" in out
    assert "00001.wal" not in out  # old files went away after snapshots
    assert re.search(r"aiowal verify: OK: ", out)
    assert out.rstrip().endswith("DEMO OK: every acknowledged write survived kill -9")
