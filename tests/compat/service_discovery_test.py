#!/usr/bin/env python3
"""Acceptance: a monitoring system's unchanged Consul service discovery against `trellis server`.

Starts trellis, registers two scrapable instances of a service (both pointing at trellis's own
`/metrics`), starts the scraper with `consul_sd_configs` aimed at trellis, and polls the
scraper's `/api/v1/targets` until the targets appear with the right `__meta_consul_*` labels and
are scraped; then fails a check and deregisters one instance and waits for the scraper to see it.

Scrapers (`--scraper`, repeatable):
  prometheus        `prometheus` (or $PROMETHEUS_BIN) -- only if it was built with Consul SD;
                    Debian's package is not (it patches Consul SD out), see README.md.
  victoria-metrics  `victoria-metrics` (or $VICTORIA_METRICS_BIN) from Debian's package of the
                    same name, whose scraper implements Prometheus' `consul_sd_configs`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from typing import Any

import consul
from consul import Check

from trellis_proc import Trellis, wait_until

SERVICE = "scrape-me"
SD_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_config(trellis_addr: str, with_refresh_interval: bool) -> str:
    refresh = "\n        refresh_interval: 1s" if with_refresh_interval else ""
    relabel = """
    relabel_configs:
      - source_labels: [__meta_consul_service_metadata_metrics_path]
        regex: (.+)
        target_label: __metrics_path__
      - source_labels: [__meta_consul_service_id]
        target_label: service_id
      - source_labels: [__meta_consul_health]
        target_label: consul_health"""
    return f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  # Watches one named service: /v1/health/service/{SERVICE} blocking queries.
  - job_name: by-service
    consul_sd_configs:
      - server: {trellis_addr}
        services: [{SERVICE}]{refresh}{relabel}
  # Watches the catalog (/v1/catalog/services) and keeps services tagged "prod".
  - job_name: by-tag
    consul_sd_configs:
      - server: {trellis_addr}
        tags: [prod]{refresh}{relabel}
"""


class Scraper:
    """One scraper process listening on a free loopback port."""

    def __init__(self, kind: str, trellis: Trellis) -> None:
        self.kind = kind
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory(prefix=f"compat-{kind}-")
        self.output: list[str] = []
        config = os.path.join(self.dir.name, "scrape.yml")
        if kind == "prometheus":
            binary = os.environ.get("PROMETHEUS_BIN", "prometheus")
            with open(config, "w") as f:
                f.write(scrape_config(trellis.addr, with_refresh_interval=True))
            self.argv = [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir.name}/tsdb",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ]
        elif kind == "victoria-metrics":
            binary = os.environ.get("VICTORIA_METRICS_BIN", "victoria-metrics")
            with open(config, "w") as f:
                f.write(scrape_config(trellis.addr, with_refresh_interval=False))
            self.argv = [
                binary,
                f"-storageDataPath={self.dir.name}/data",
                f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-promscrape.config={config}",
                "-promscrape.consulSDCheckInterval=1s",
                "-loggerLevel=WARN",
            ]
        else:
            raise SystemExit(f"unknown scraper {kind!r}")
        self.proc: subprocess.Popen[str] | None = None

    def version(self) -> str:
        flag = "--version" if self.kind == "prometheus" else "-version"
        out = subprocess.run([self.argv[0], flag], capture_output=True, text=True, check=False)
        lines = (out.stdout + out.stderr).strip().splitlines()
        if lines:
            return lines[0]
        # Debian's victoria-metrics build reports an empty version: ask dpkg instead.
        path = os.path.realpath(shutil.which(self.argv[0]) or self.argv[0])
        owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True, check=False)
        package = owner.stdout.split(":", 1)[0] if owner.returncode == 0 else ""
        if package:
            ver = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
            return f"{self.kind} {ver.stdout.strip()} (Debian package {package})"
        return f"{self.kind} (unknown version)"

    def __enter__(self) -> Scraper:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.dir.cleanup()

    def targets(self) -> list[dict[str, Any]]:
        """Active targets, or [] while the scraper is not answering yet."""
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.kind} exited with {self.proc.returncode}:\n" + "\n".join(self.output[-30:]))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/targets", timeout=5) as r:
                body = json.load(r)
        except OSError:
            return []
        assert body["status"] == "success", body
        return body["data"]["activeTargets"]

    def by_job(self) -> dict[str, dict[str, dict[str, Any]]]:
        """{job: {service id: target}} of the targets discovered through Consul."""
        jobs: dict[str, dict[str, dict[str, Any]]] = {}
        for target in self.targets():
            discovered = target["discoveredLabels"]
            job = target["labels"].get("job") or discovered.get("job")
            service_id = discovered.get("__meta_consul_service_id")
            if service_id is not None:
                jobs.setdefault(job, {})[service_id] = target
        return jobs


def expect_labels(target: dict[str, Any], want: dict[str, str]) -> list[str]:
    got = target["discoveredLabels"]
    return [f"{k}={got.get(k)!r}, want {v!r}" for k, v in want.items() if got.get(k) != v]


def run(kind: str) -> None:
    with Trellis(node_name="compat-sd-node") as t:
        c = consul.Consul(host=t.host, port=t.port)
        assert c.agent.service.register(
            SERVICE,
            service_id=f"{SERVICE}-1",
            address="127.0.0.1",
            port=t.port,
            tags=["prod", "blue"],
            meta={"metrics_path": "/metrics", "owner": "team-a"},
            check=Check.ttl("60s"),
        )
        assert c.agent.check.ttl_pass(f"service:{SERVICE}-1")
        assert c.agent.service.register(
            SERVICE,
            service_id=f"{SERVICE}-2",
            address="localhost",
            port=t.port,
            tags=["prod", "green"],
            meta={"metrics_path": "/metrics", "owner": "team-b"},
        )
        # Neither named "scrape-me" nor tagged "prod": neither job may pick it up.
        assert c.agent.service.register("noise", service_id="noise-1", address="127.0.0.1", port=1, tags=["dev"])

        with Scraper(kind, t) as scraper:
            print(f"  {scraper.version()}")
            common = {
                "__meta_consul_service": SERVICE,
                "__meta_consul_node": t.node_name,
                "__meta_consul_dc": "dc1",
                "__meta_consul_address": "127.0.0.1",
                "__meta_consul_service_port": str(t.port),
            }
            want = {
                f"{SERVICE}-1": {
                    **common,
                    "__address__": f"127.0.0.1:{t.port}",
                    "__meta_consul_service_id": f"{SERVICE}-1",
                    "__meta_consul_service_address": "127.0.0.1",
                    "__meta_consul_tags": ",prod,blue,",
                    "__meta_consul_service_metadata_owner": "team-a",
                    "__meta_consul_service_metadata_metrics_path": "/metrics",
                    "__meta_consul_health": "passing",
                },
                f"{SERVICE}-2": {
                    **common,
                    "__address__": f"localhost:{t.port}",
                    "__meta_consul_service_id": f"{SERVICE}-2",
                    "__meta_consul_service_address": "localhost",
                    "__meta_consul_tags": ",prod,green,",
                    "__meta_consul_service_metadata_owner": "team-b",
                    "__meta_consul_health": "passing",
                },
            }

            def discovered_and_scraped() -> Any:
                jobs = scraper.by_job()
                problems = []
                for job in ("by-service", "by-tag"):
                    found = jobs.get(job, {})
                    if sorted(found) != sorted(want):
                        problems.append(f"{job}: service IDs {sorted(found)}")
                        continue
                    for sid, labels in want.items():
                        problems += [f"{job}/{sid}: {p}" for p in expect_labels(found[sid], labels)]
                        target = found[sid]
                        if target["health"] != "up":
                            problems.append(f"{job}/{sid}: health {target['health']!r} {target.get('lastError')!r}")
                        if not target["scrapeUrl"].endswith(f":{t.port}/metrics"):
                            problems.append(f"{job}/{sid}: scrapeUrl {target['scrapeUrl']}")
                        if target["labels"].get("service_id") != sid:
                            problems.append(f"{job}/{sid}: relabelled service_id {target['labels'].get('service_id')!r}")
                return _Problems(problems) if problems else True

            wait_until(f"{kind} to discover and scrape both instances", discovered_and_scraped, SD_TIMEOUT)
            print(f"  ok   discovered both instances in both jobs with the expected labels; both scraped (up)")

            # A health change reaches the scraper through the blocking queries.
            assert c.agent.check.ttl_fail(f"service:{SERVICE}-1", notes="compat test")

            def health_is_critical() -> bool:
                jobs = scraper.by_job()
                return all(
                    jobs.get(job, {}).get(f"{SERVICE}-1", {}).get("labels", {}).get("consul_health") == "critical"
                    for job in ("by-service", "by-tag")
                )

            wait_until(f"{kind} to see {SERVICE}-1 turn critical", health_is_critical, SD_TIMEOUT)
            print("  ok   a failed check shows as __meta_consul_health=critical")

            assert c.agent.service.deregister(f"{SERVICE}-2")

            def only_first_left() -> Any:
                jobs = scraper.by_job()
                seen = {job: sorted(jobs.get(job, {})) for job in ("by-service", "by-tag")}
                return all(ids == [f"{SERVICE}-1"] for ids in seen.values()) or _Problems([str(seen)])

            wait_until(f"{kind} to drop the deregistered {SERVICE}-2", only_first_left, SD_TIMEOUT)
            print("  ok   the deregistered instance disappeared, the other stayed")

            assert c.agent.service.deregister(f"{SERVICE}-1")
            wait_until(
                f"{kind} to drop every {SERVICE} target",
                lambda: not any(jobs for jobs in scraper.by_job().values()),
                SD_TIMEOUT,
            )
            print("  ok   deregistering the last instance removed the service's targets")


class _Problems(list):
    """A falsy list of problems, shown when polling times out."""

    def __bool__(self) -> bool:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scraper", action="append", choices=["prometheus", "victoria-metrics"], required=True)
    args = parser.parse_args()
    passed = failed = 0
    for kind in args.scraper:
        binary = os.environ.get("PROMETHEUS_BIN" if kind == "prometheus" else "VICTORIA_METRICS_BIN", kind)
        if shutil.which(binary) is None:
            print(f"FAIL {kind}: {binary!r} is not installed")
            failed += 1
            continue
        print(f"{kind} consul_sd_configs against trellis:")
        started = time.monotonic()
        try:
            run(kind)
        except Exception:
            failed += 1
            print(f"FAIL {kind}")
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {kind} ({time.monotonic() - started:.1f}s)")
    print(f"service-discovery: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
