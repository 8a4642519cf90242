#!/usr/bin/env python3
"""Client side of bench/registry.sh: bulk registration, the watch fan-out timer, the restart
timer, counting what a server holds, and small utilities. Standard library only.

The fan-out timer uses raw non-blocking sockets, epoll and the kernel's receive timestamps
(SO_TIMESTAMPNS) rather than an HTTP client library: with 5,000 answers arriving at once, a
client that timed answers when it read them would measure its own speed, not the server's.
"""

import argparse
import asyncio
import http.client
import json
import os
import selectors
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time


# ---------------------------------------------------------------- small blocking HTTP calls


def request(addr, method, path, body=None, timeout=60.0):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def instance_body(iid, name, n, ttl="30s", status=None):
    """A realistic registration: address, port, two tags, two meta entries, a TTL check."""
    check = {"Name": "heartbeat", "TTL": ttl}
    if status:
        check["Status"] = status
    return {
        "ID": iid,
        "Name": name,
        "Address": f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}",
        "Port": 8000 + n % 1000,
        "Tags": ["v1", "primary"],
        "Meta": {"version": "1.4.2", "zone": f"zone-{n % 3}"},
        "Check": check,
    }


def cmd_freeport(_args):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def cmd_wait_http(args):
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            status, _, _ = request(args.addr, "GET", args.path, timeout=2)
            if status < 500:
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"{args.addr}{args.path} did not answer within {args.timeout}s")


def cmd_seed(args):
    for i in range(1, args.count + 1):
        status, _, body = request(
            args.addr, "PUT", "/v1/agent/service/register",
            instance_body(f"{args.service}-{i}", args.service, i, ttl="10m", status="passing"))
        if status != 200:
            sys.exit(f"seeding {args.service}-{i}: {status} {body!r}")


def cmd_fetch(args):
    status, headers, body = request(args.addr, "GET", args.path)
    if status != 200:
        sys.exit(f"GET {args.path}: {status}")
    with open(args.out, "wb") as f:
        f.write(body)
    print(len(body))


def cmd_count_trellis(args):
    status, _, body = request(args.addr, "GET", "/v1/agent/services", timeout=120)
    if status != 200:
        sys.exit(f"GET /v1/agent/services: {status}")
    print(sum(1 for k in json.loads(body) if k.startswith(args.prefix)))


def b64(s):
    import base64
    return base64.b64encode(s.encode()).decode()


def cmd_count_etcd(args):
    prefix = "bench/" + args.prefix
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    status, _, body = request(args.addr, "POST", "/v3/kv/range",
                              {"key": b64(prefix), "range_end": b64(end), "count_only": True})
    if status != 200:
        sys.exit(f"POST /v3/kv/range: {status} {body!r}")
    print(int(json.loads(body).get("count", "0")))


def cmd_etcd_revision(args):
    """The cluster's current revision: it goes up by one with every etcd transaction that writes."""
    status, _, body = request(args.addr, "POST", "/v3/kv/range", {"key": b64("\0"), "count_only": True})
    if status != 200:
        sys.exit(f"POST /v3/kv/range: {status} {body!r}")
    print(int(json.loads(body)["header"]["revision"]))


def cmd_heartbeats(args):
    """Registers COUNT instances with a passing TTL check, then sends PASSES heartbeats
    (PUT /v1/agent/check/pass/service:ID) round robin, one at a time; prints how many were
    answered 200."""
    for i in range(args.count):
        status, _, body = request(args.addr, "PUT", "/v1/agent/service/register",
                                  instance_body(f"hb-{i}", "hb", i, ttl="60s", status="passing"))
        if status != 200:
            sys.exit(f"registering hb-{i}: {status} {body!r}")
    if args.registered_only:
        return
    ok = 0
    for n in range(args.passes):
        status, _, _ = request(args.addr, "PUT", f"/v1/agent/check/pass/service:hb-{n % args.count}")
        ok += status == 200
    print(ok)


def cmd_fsync_probe(args):
    """Latency of a 4 KiB write + fsync on the disk the data directories live on."""
    path = os.path.join(args.dir, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    times = []
    try:
        for _ in range(args.count):
            os.write(fd, b"x" * 4096)
            t = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    print(f"fsync_p50_ms={times[len(times) // 2] * 1e3:.2f} "
          f"fsync_p99_ms={times[int(len(times) * 0.99)] * 1e3:.2f}")


# ---------------------------------------------------------------- bulk registration


async def _read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _bulk(args):
    host, port = args.addr.rsplit(":", 1)
    counter = iter(range(args.count))
    ok = 0
    failed = []

    async def worker():
        nonlocal ok
        reader, writer = await asyncio.open_connection(host, int(port))
        for n in counter:
            name = f"svc-{n % args.services}"
            body = json.dumps(instance_body(f"{args.prefix}{n}", name, n)).encode()
            writer.write(b"PUT /v1/agent/service/register HTTP/1.1\r\nHost: bench\r\n"
                         b"Content-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            status = await _read_response(reader)
            if status == 200:
                ok += 1
            else:
                failed.append(status)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    print(f"registered={ok} failed={len(failed)} seconds={elapsed:.2f} "
          f"rate={ok / elapsed:.0f}")
    if failed:
        sys.exit(f"{len(failed)} registrations failed, e.g. status {failed[0]}")


def cmd_bulk_register(args):
    asyncio.run(_bulk(args))


# ---------------------------------------------------------------- watch fan-out


# Linux's SO_TIMESTAMPNS (asm-generic value; Python does not export it): the kernel stamps each
# received segment with the wall-clock time it arrived, so the time of an answer does not depend
# on when this single-threaded client gets round to reading it.
SO_TIMESTAMPNS = 35


class Conn:
    __slots__ = ("sock", "buf", "first", "done", "status", "index")

    def __init__(self, sock):
        self.sock = sock
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.reset()

    def reset(self):
        self.buf = b""
        self.first = None
        self.done = None
        self.status = None
        self.index = None

    def read(self):
        """Reads what is there; returns None on EOF, else True once a whole response is in.
        `first` and `done` are the kernel arrival times (ns) of the first and last bytes."""
        data, ancdata, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(16))
        if not data:
            return None
        stamp = None
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", cdata[:16])
                stamp = sec * 1_000_000_000 + nsec
        if stamp is None:
            sys.exit("no SO_TIMESTAMPNS receive timestamp from the kernel")
        if self.first is None:
            self.first = stamp
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        length = 0
        for line in self.buf[:end].split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            key = key.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"x-consul-index":
                self.index = int(value)
        if len(self.buf) < end + 4 + length:
            return False
        self.status = int(self.buf[9:12])
        self.done = stamp
        return True


def metric(addr, name):
    _, _, body = request(addr, "GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def schedstat(pid):
    """(ns on a CPU, ns waiting for a CPU) summed over the threads of `pid`."""
    run = wait = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
        except FileNotFoundError:
            continue
        run += int(fields[0])
        wait += int(fields[1])
    return run, wait


def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def cmd_fanout(args):
    host, port = args.addr.rsplit(":", 1)
    # Watchers spread round-robin over the server and any --also servers (followers of a
    # cluster); the change is made on the first.
    servers = [args.addr] + [a for a in (args.also or "").split(",") if a]
    path = f"/v1/health/service/{args.service}"
    status, headers, _ = request(args.addr, "GET", path)
    index = int({k.lower(): v for k, v in headers.items()}["x-consul-index"])

    def watchers():
        return sum(metric(a, "trellis_watchers") or 0 for a in servers)

    baseline = watchers()

    sel = selectors.EpollSelector()
    conns = []
    for i in range(args.watchers):
        whost, wport = servers[i % len(servers)].rsplit(":", 1)
        s = socket.create_connection((whost, int(wport)))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        c = Conn(s)
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
    writer = socket.create_connection((host, int(port)))
    writer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer.setblocking(False)
    wconn = Conn(writer)
    sel.register(writer, selectors.EVENT_READ, wconn)

    all_done, all_first, rounds = [], [], []
    for r in range(args.rounds):
        req = (f"GET {path}?index={index}&wait=5m HTTP/1.1\r\nHost: bench\r\n\r\n").encode()
        for c in conns:
            c.reset()
            c.sock.send(req)
        # The change must find every watcher blocked, so wait until the server holds them all.
        deadline = time.monotonic() + 60
        while watchers() < baseline + args.watchers:
            if time.monotonic() > deadline:
                sys.exit("the watchers did not all block within 60 s")
            time.sleep(0.05)
        n = args.seed + r + 1
        body = json.dumps(instance_body(f"{args.service}-{n}", args.service, n,
                                        ttl="10m", status="passing")).encode()
        change = (b"PUT /v1/agent/service/register HTTP/1.1\r\nHost: bench\r\n"
                  b"Content-Type: application/json\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\n\r\n" + body)
        wconn.reset()
        pending = len(conns) + 1
        sched0 = schedstat(args.pid) if args.pid else (0, 0)
        t0 = time.time_ns()  # the same clock as the kernel's receive timestamps
        writer.send(change)
        # Stay off the CPU while the server fans out (it has only 2 cores, shared with this
        # client); answers that take longer are still timed exactly by their kernel stamps.
        time.sleep(args.idle)
        deadline = time.monotonic() + 60
        while pending:
            for key, _ in sel.select(timeout=1.0):
                c = key.data
                complete = c.read()
                if complete is None:
                    sys.exit("a watcher's connection closed")
                if complete:
                    pending -= 1
            if time.monotonic() > deadline:
                sys.exit(f"{pending} watchers had no answer 60 s after the change")
        sched1 = schedstat(args.pid) if args.pid else (0, 0)
        if wconn.status != 200:
            sys.exit(f"the change (registration) answered {wconn.status}")
        bad = [c for c in conns if c.status != 200 or c.index is None or c.index == index]
        if bad:
            sys.exit(f"{len(bad)} watchers answered without a new index")
        done = sorted((c.done - t0) / 1e6 for c in conns)
        first = sorted((c.first - t0) / 1e6 for c in conns)
        index = conns[0].index
        rounds.append({
            "ack_ms": (wconn.done - t0) / 1e6,
            "p50_ms": pct(done, 50), "p99_ms": pct(done, 99), "max_ms": done[-1],
            "first_byte_p50_ms": pct(first, 50), "first_byte_min_ms": first[0],
            # What the server spent on the change and the fan-out, and how long its threads
            # waited for a CPU (other processes, e.g. compilers, competing for the 2 cores).
            "server_cpu_ms": (sched1[0] - sched0[0]) / 1e6,
            "server_runqueue_wait_ms": (sched1[1] - sched0[1]) / 1e6,
        })
        all_done += done
        all_first += first
    all_done.sort()
    for i, r in enumerate(rounds, 1):
        print(f"ROUND {i} " + " ".join(f"{k}={v:.1f}" for k, v in r.items()))
    print(f"FANOUT watchers={args.watchers} rounds={args.rounds} samples={len(all_done)} "
          f"p50_ms={pct(all_done, 50):.1f} p99_ms={pct(all_done, 99):.1f} "
          f"max_ms={all_done[-1]:.1f} worst_round_p99_ms={max(r['p99_ms'] for r in rounds):.1f} "
          f"ack_ms_median={statistics.median(r['ack_ms'] for r in rounds):.1f} "
          f"server_cpu_ms_median={statistics.median(r['server_cpu_ms'] for r in rounds):.1f} "
          f"server_runqueue_wait_ms_median="
          f"{statistics.median(r['server_runqueue_wait_ms'] for r in rounds):.1f}")
    for c in conns:
        c.sock.close()
    writer.close()


# ---------------------------------------------------------------- restart


def _try_get(host, port, path, timeout=30.0):
    """One GET on a fresh connection; None while nothing listens. Returns (status, body)."""
    try:
        s = socket.create_connection((host, port), timeout=timeout)
    except (ConnectionRefusedError, ConnectionResetError):
        return None
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            data = s.recv(1 << 20)
            if not data:
                break
            chunks.append(data)
    except (ConnectionResetError, socket.timeout):
        return None
    finally:
        s.close()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        return None
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return int(head[9:12]), body


def _dechunk(body):
    out, pos = [], 0
    while True:
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[end + 2:end + 2 + size])
        pos = end + 2 + size + 2


def cmd_restart(args):
    host, port = args.addr.rsplit(":", 1)
    port = int(port)
    results = []
    log = open(args.log, "ab")
    for r in range(args.rounds):
        restored = {}
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [args.bin, "server", "--http", args.addr, "--data-dir", args.data_dir],
            stdout=subprocess.PIPE, stderr=log)
        with open(args.pidfile, "w") as f:
            f.write(str(proc.pid))

        def read_stdout(p=proc, seen=restored):
            for line in p.stdout:
                if b"instances restored" in line and "t" not in seen:
                    seen["t"] = time.perf_counter()
                    seen["line"] = line.decode().strip()
        reader = threading.Thread(target=read_stdout, daemon=True)
        reader.start()
        try:
            while True:
                if proc.poll() is not None:
                    sys.exit(f"the server exited with {proc.returncode} during restart")
                got = _try_get(host, port, "/v1/catalog/services")
                if got and got[0] == 200:
                    t_answer = time.perf_counter()
                    rss_restored = _rss(proc.pid)
                    break
                time.sleep(0.002)
            got = _try_get(host, port, "/v1/agent/services", timeout=60)
            t_listed = time.perf_counter()
            count = len(json.loads(got[1])) if got and got[0] == 200 else -1
            rss_listed = _rss(proc.pid)
            if count != args.expect:
                sys.exit(f"after restart /v1/agent/services lists {count}, expected {args.expect}")
            t_stop = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            stop_s = time.perf_counter() - t_stop
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.unlink(args.pidfile)
        reader.join(timeout=5)
        results.append((t_answer - t0, t_listed - t0,
                        restored.get("t", float("nan")) - t0, stop_s, rss_restored))
        print(f"RESTART {r + 1} answer_s={t_answer - t0:.3f} listed_s={t_listed - t0:.3f} "
              f"restored_line_s={restored.get('t', float('nan')) - t0:.3f} "
              f"sigterm_exit_s={stop_s:.3f} rss_kib_after_restore={rss_restored} "
              f"rss_kib_after_listing={rss_listed} "
              f"({restored.get('line', 'no restored line')})")
    listed = sorted(x[1] for x in results)
    answer = sorted(x[0] for x in results)
    print(f"RESTART_SUMMARY rounds={args.rounds} answer_median_s={statistics.median(answer):.3f} "
          f"listed_median_s={statistics.median(listed):.3f} listed_max_s={listed[-1]:.3f} "
          f"rss_kib_after_restore={results[-1][4]}")


def _rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("freeport").set_defaults(fn=cmd_freeport)
    s = sub.add_parser("wait-http")
    s.add_argument("addr"), s.add_argument("path"), s.add_argument("--timeout", type=float, default=60)
    s.set_defaults(fn=cmd_wait_http)
    s = sub.add_parser("seed")
    s.add_argument("addr"), s.add_argument("service"), s.add_argument("count", type=int)
    s.set_defaults(fn=cmd_seed)
    s = sub.add_parser("fetch")
    s.add_argument("addr"), s.add_argument("path"), s.add_argument("out")
    s.set_defaults(fn=cmd_fetch)
    s = sub.add_parser("count-trellis")
    s.add_argument("addr"), s.add_argument("prefix")
    s.set_defaults(fn=cmd_count_trellis)
    s = sub.add_parser("count-etcd")
    s.add_argument("addr"), s.add_argument("prefix")
    s.set_defaults(fn=cmd_count_etcd)
    s = sub.add_parser("etcd-revision")
    s.add_argument("addr")
    s.set_defaults(fn=cmd_etcd_revision)
    s = sub.add_parser("heartbeats")
    s.add_argument("addr"), s.add_argument("count", type=int), s.add_argument("passes", type=int)
    s.add_argument("--registered-only", action="store_true")
    s.set_defaults(fn=cmd_heartbeats)
    s = sub.add_parser("fsync-probe")
    s.add_argument("dir"), s.add_argument("--count", type=int, default=200)
    s.set_defaults(fn=cmd_fsync_probe)
    s = sub.add_parser("bulk-register")
    s.add_argument("addr"), s.add_argument("count", type=int)
    s.add_argument("--prefix", default="mem-"), s.add_argument("--services", type=int, default=1000)
    s.add_argument("--concurrency", type=int, default=64)
    s.set_defaults(fn=cmd_bulk_register)
    s = sub.add_parser("fanout")
    s.add_argument("addr"), s.add_argument("service"), s.add_argument("watchers", type=int)
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--seed", type=int, default=10, help="instances the service already has")
    s.add_argument("--pid", type=int, help="the server's pid, to report its CPU time per change")
    s.add_argument("--also", help="more servers (HOST:PORT,...) to spread the watchers over")
    s.add_argument("--idle", type=float, default=1.0,
                   help="seconds the client stays idle after the change before reading answers")
    s.set_defaults(fn=cmd_fanout)
    s = sub.add_parser("restart")
    s.add_argument("--bin", required=True), s.add_argument("--addr", required=True)
    s.add_argument("--data-dir", required=True), s.add_argument("--expect", type=int, required=True)
    s.add_argument("--rounds", type=int, default=3), s.add_argument("--pidfile", required=True)
    s.add_argument("--log", required=True)
    s.set_defaults(fn=cmd_restart)
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
