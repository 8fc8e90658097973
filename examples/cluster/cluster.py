"""Run kvnode processes on loopback and talk to them over HTTP (used by demo.py and the cluster tests)."""

from __future__ import annotations

import http.client as http_client
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def http(method: str, url: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, dict]:
    """(status, JSON body) of one request; status 0 when the node could not be reached or answered garbage
    (a node being killed can cut a reply short)."""
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError, http_client.HTTPException):
        return 0, {}


class Cluster:
    """``n`` founding nodes, and ``spares`` more (ids n+1...) with addresses ready, to join later."""

    def __init__(
        self,
        root: Path,
        n: int = 3,
        snapshot_every: int = 60,
        keep_entries: int = 20,
        spares: int = 0,
        store: str = "memory",
    ) -> None:
        self.snapshot_every = snapshot_every
        self.keep_entries = keep_entries
        self.store = store
        total = n + spares
        ports = free_ports(2 * total)
        self.ids = list(range(1, n + 1))
        self.raft = {i: ("127.0.0.1", ports[i - 1]) for i in range(1, total + 1)}
        self.http = {i: ("127.0.0.1", ports[total + i - 1]) for i in range(1, total + 1)}
        self.root = root
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.routes: dict[int, dict[int, tuple[str, int]]] = {}
        """Where node i reaches node j when not at j's Raft address (a proxy, say): routes[i][j]; set before start."""

    def url(self, i: int, path: str) -> str:
        host, port = self.http[i]
        return f"http://{host}:{port}{path}"

    def addr(self, i: int, kind: str = "raft") -> str:
        host, port = (self.raft if kind == "raft" else self.http)[i]
        return f"{host}:{port}"

    def start(self, i: int, join: bool = False) -> None:
        """Start node ``i`` (again). A founding node is told the founding nodes' addresses; one that joins (empty,
        as a learner) is told those and its own."""

        def fmt(d: dict[int, tuple[str, int]]) -> str:
            return ",".join(f"{k}={h}:{p}" for k, (h, p) in d.items())

        known = [*self.ids, i] if i not in self.ids else self.ids
        cmd = [sys.executable, str(HERE / "kvnode.py"), "--id", str(i), "--dir", str(self.root / f"node{i}")]
        cmd += ["--peers", fmt({j: self.raft[j] for j in known}), "--http", fmt({j: self.http[j] for j in known})]
        cmd += ["--snapshot-every", str(self.snapshot_every), "--keep-entries", str(self.keep_entries)]
        cmd += ["--store", self.store]
        if join:
            cmd.append("--join")
        if self.routes.get(i):
            cmd += ["--connect", fmt(self.routes[i])]
        self.procs[i] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if http("GET", self.url(i, "/status"), timeout=1)[0] == 200:
                return
            time.sleep(0.05)
        raise SystemExit(f"node {i} did not start")

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()
        del self.procs[i]

    def pause(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGSTOP)

    def resume(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGCONT)

    def stop_all(self) -> None:
        for p in self.procs.values():
            p.terminate()
            p.send_signal(signal.SIGCONT)  # a paused node handles the SIGTERM once it runs again
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    def status(self, i: int) -> dict:
        return http("GET", self.url(i, "/status"), timeout=2)[1]

    def leader(self, timeout: float = 30.0) -> tuple[int, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in list(self.procs):
                st = self.status(i)
                if st.get("is_leader"):
                    return i, st["term"]
            time.sleep(0.05)
        raise SystemExit("no leader elected")

    def admin(self, method: str, path: str, body: dict | None = None, timeout: float = 90.0) -> tuple[int, dict]:
        """An admin request to the leader (following "not leader" answers); (status, JSON body)."""
        deadline = time.monotonic() + timeout
        while True:
            lead, _ = self.leader()
            data = json.dumps(body).encode() if body is not None else None
            code, out = http(method, self.url(lead, path), data, timeout=timeout)
            if code not in (0, 503) or time.monotonic() > deadline:
                return code, out
            time.sleep(0.1)

    def wait_exit(self, i: int, timeout: float = 30.0) -> int:
        """Wait for node ``i``'s process to end by itself (a removed node shut down); its exit code."""
        code = self.procs[i].wait(timeout)
        del self.procs[i]
        return code

    def put(self, key: str, value: str) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            lead, _ = self.leader()
            code, _ = http("PUT", self.url(lead, f"/kv/{key}"), value.encode())
            if code == 200:
                return
            time.sleep(0.05)
        raise SystemExit(f"write {key} was never acknowledged")
