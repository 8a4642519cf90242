"""Starts the real `trellis server` binary for the compatibility tests and stops it again."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

LISTEN_RE = re.compile(r"HTTP API listening on http://(\S+)")
# Every listener's line, "trellis server: <WHAT> listening on [http://]ADDR ...", and the last
# start-up line, after which no address comes.
ANY_LISTEN_RE = re.compile(r"trellis server: (.+?) listening on (?:http://)?(\S+)")
READY_RE = re.compile(r"instances restored")


class Trellis:
    """A `trellis server` on a free loopback port with a temporary data directory; with
    TRELLIS_COMPAT_ETCD (etcd client URLs, comma-separated), a leader and two followers sharing
    a prefix there, the last follower being the one to talk to."""

    def __init__(self, node_name: str = "compat-node") -> None:
        self.binary = os.environ.get("TRELLIS_BIN", "target/debug/trellis")
        if not os.access(self.binary, os.X_OK):
            raise SystemExit(f"trellis binary {self.binary!r} not found or not executable (set TRELLIS_BIN)")
        self.node_name = node_name
        self.data_dir = tempfile.TemporaryDirectory(prefix="trellis-compat-")
        self.proc: subprocess.Popen[str] | None = None
        # Every server started (three against an etcd cluster: TRELLIS_COMPAT_ETCD).
        self.procs: list[subprocess.Popen[str]] = []
        self.addr = ""
        # Listener name ("HTTP API", "DNS", "OTLP", "OTLP/gRPC") -> HOST:PORT.
        self.listeners: dict[str, str] = {}
        self.output: list[str] = []

    def __enter__(self) -> Trellis:
        etcd = os.environ.get("TRELLIS_COMPAT_ETCD")
        if etcd:
            # A cluster of three on a fresh prefix: the clients talk to the last follower, so
            # every write is forwarded to the leader and every read comes from the follower's
            # replica. Each server lists the members starting from a different one. All take the
            # same node name: the node is the cluster's, whichever server answers.
            prefix = f"/compat-{os.getpid()}-{time.monotonic_ns()}/"
            members = etcd.split(",")
            for n, name in enumerate(["leader", "follower", "data"]):
                endpoints = ",".join(members[n % len(members) :] + members[: n % len(members)])
                cluster = ["--store", "etcd", "--etcd", endpoints, "--etcd-prefix", prefix, "--etcd-lease-ttl", "2s"]
                server = self._spawn(cluster + ["--data-dir", os.path.join(self.data_dir.name, name)])
                if n == 0:
                    self.leader = server
        else:
            self._spawn(["--data-dir", os.path.join(self.data_dir.name, "data")])
        return self

    def _spawn(self, args: list[str]) -> subprocess.Popen[str]:
        """Starts a server with `args`; its addresses become this object's."""
        proc = subprocess.Popen(
            [self.binary, "server", "--http", "127.0.0.1:0", "--node-name", self.node_name, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        self.proc = proc
        self.listeners = {}
        self.addr = ""
        found = threading.Event()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.output.append(line.rstrip("\n"))
                if not found.is_set():
                    m = ANY_LISTEN_RE.search(line)
                    if m:
                        self.listeners[m.group(1)] = m.group(2)
                    m = LISTEN_RE.search(line)
                    if m:
                        self.addr = m.group(1)
                    if READY_RE.search(line) and self.addr:
                        found.set()

        threading.Thread(target=pump, daemon=True).start()
        if not found.wait(30):
            self.__exit__(None, None, None)
            raise SystemExit("trellis did not report its listen address within 30 s:\n" + "\n".join(self.output))
        return proc

    @property
    def host(self) -> str:
        return self.addr.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.addr.rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def __exit__(self, *exc: Any) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.data_dir.cleanup()


def wait_until(what: str, probe: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Polls `probe` until it returns something truthy; fails with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
