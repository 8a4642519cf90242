#!/usr/bin/env python3
"""Acceptance: the maintained PyPI Consul client (py-consul), unchanged, against `trellis server`.

Every step talks to the real binary through the library's own calls and asserts the values it
gets back. Run through `tests/compat/run.sh`, or directly with a venv that has requirements.txt
and TRELLIS_BIN pointing at the binary.
"""

from __future__ import annotations

import base64
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from importlib.metadata import version

import consul
from consul import Check
from consul.exceptions import BadRequest

from trellis_proc import Trellis, wait_until

STEPS: list[Callable[[Trellis, consul.Consul], None]] = []


def step(fn: Callable[[Trellis, consul.Consul], None]) -> Callable[[Trellis, consul.Consul], None]:
    STEPS.append(fn)
    return fn


def health_ids(c: consul.Consul, name: str, **kwargs) -> list[str]:
    _, entries = c.health.service(name, **kwargs)
    return sorted(e["Service"]["ID"] for e in entries)


def check_status(c: consul.Consul, check_id: str) -> str | None:
    check = c.agent.checks().get(check_id)
    return check and check["Status"]


class Blocked:
    """Runs one blocking call on its own client (and connection) in a thread, timing it."""

    def __init__(self, call: Callable[[], tuple[str, object]]) -> None:
        self.result: tuple[str, object] | None = None
        self.error: BaseException | None = None
        self.elapsed = 0.0
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call: Callable[[], tuple[str, object]]) -> None:
        started = time.monotonic()
        try:
            self.result = call()
        except BaseException as e:  # reported by join()
            self.error = e
        self.elapsed = time.monotonic() - started

    def join(self, timeout: float) -> tuple[str, object]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"blocking query still open after {timeout}s"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@step
def agent_self_and_status(t: Trellis, c: consul.Consul) -> None:
    me = c.agent.self()
    for key, value in me.items():
        assert isinstance(value, dict), f"agent/self {key} is {type(value).__name__}, not an object"
    assert me["Config"]["Datacenter"] == "dc1", me["Config"]
    assert me["Config"]["NodeName"] == t.node_name, me["Config"]
    assert isinstance(me["Config"]["Version"], str) and me["Config"]["Version"], me["Config"]
    assert me["Member"]["Name"] == t.node_name, me["Member"]
    leader = c.status.leader()
    assert isinstance(leader, str) and ":" in leader, f"status/leader answered {leader!r}"
    assert c.status.peers() == [leader]
    assert c.catalog.datacenters() == ["dc1"]


@step
def register_with_lowercase_checks(t: Trellis, c: consul.Consul) -> None:
    # py-consul sends lowercase keys: "name", "id", "checks", "ttl", "http", "interval", "timeout".
    assert c.agent.service.register(
        "web",
        service_id="web-1",
        address="127.0.0.1",
        port=8080,
        tags=["v1", "primary"],
        meta={"version": "1.0", "team": "core"},
        check=Check.ttl("30s"),
        extra_checks=[Check.http(f"{t.url}/v1/status/leader", "1s", timeout="2s")],
    )
    assert c.agent.service.register(
        "web", service_id="web-2", address="127.0.0.2", port=8081, tags=["v2"], check=Check.ttl("30s")
    )
    services = c.agent.services()
    web1 = services["web-1"]
    assert web1["Service"] == "web" and web1["ID"] == "web-1", web1
    assert web1["Port"] == 8080 and isinstance(web1["Port"], int), web1
    assert web1["Address"] == "127.0.0.1", web1
    assert web1["Tags"] == ["v1", "primary"], web1
    assert web1["Meta"] == {"version": "1.0", "team": "core"}, web1
    assert services["web-2"]["Port"] == 8081

    checks = c.agent.checks()
    # Several checks on one service get IDs service:<ID>:<n>, in order; none was dropped.
    ttl, http = checks["service:web-1:1"], checks["service:web-1:2"]
    assert ttl["ServiceID"] == "web-1" and ttl["ServiceName"] == "web", ttl
    assert ttl["Type"] == "ttl" and ttl["Status"] == "critical", ttl
    assert http["Type"] == "http", http
    assert checks["service:web-2"]["Type"] == "ttl", checks["service:web-2"]
    # The server runs the HTTP check against itself: it turns passing.
    wait_until("HTTP check service:web-1:2 passing", lambda: check_status(c, "service:web-1:2") == "passing")


@step
def ttl_pass_and_passing_filter(t: Trellis, c: consul.Consul) -> None:
    wait_until("HTTP check passing", lambda: check_status(c, "service:web-1:2") == "passing")
    # Both TTL checks are still critical: nothing passes yet.
    assert health_ids(c, "web") == ["web-1", "web-2"]
    assert health_ids(c, "web", passing=True) == []
    assert c.agent.check.ttl_pass("service:web-1:1", notes="all good")
    assert check_status(c, "service:web-1:1") == "passing"
    assert c.agent.checks()["service:web-1:1"]["Output"] == "all good"
    assert health_ids(c, "web", passing=True) == ["web-1"]
    assert c.agent.check.ttl_pass("service:web-2")
    assert health_ids(c, "web", passing=True) == ["web-1", "web-2"]
    assert c.agent.check.ttl_warn("service:web-2", notes="slow")
    assert check_status(c, "service:web-2") == "warning"
    assert health_ids(c, "web", passing=True) == ["web-1"]
    assert c.agent.check.ttl_fail("service:web-2")
    assert check_status(c, "service:web-2") == "critical"
    assert c.agent.check.ttl_pass("service:web-2")

    _, entries = c.health.service("web", passing=True)
    entry = next(e for e in entries if e["Service"]["ID"] == "web-1")
    assert entry["Node"]["Node"] == t.node_name and entry["Node"]["Datacenter"] == "dc1", entry["Node"]
    assert entry["Service"]["Port"] == 8080 and entry["Service"]["Meta"]["team"] == "core", entry["Service"]
    statuses = {ch["CheckID"]: ch["Status"] for ch in entry["Checks"]}
    assert statuses == {"serfHealth": "passing", "service:web-1:1": "passing", "service:web-1:2": "passing"}, statuses


@step
def health_tag_filter(t: Trellis, c: consul.Consul) -> None:
    assert health_ids(c, "web", tag="v1") == ["web-1"]
    assert health_ids(c, "web", tag="v2") == ["web-2"]
    assert health_ids(c, "web", tag=["v1", "primary"]) == ["web-1"]
    assert health_ids(c, "web", tag=["v1", "v2"]) == []
    assert health_ids(c, "web", tag="nope") == []
    assert health_ids(c, "no-such-service") == []
    # As in Consul, tags and service names match without regard to case.
    assert health_ids(c, "web", tag="PRIMARY") == ["web-1"]
    assert health_ids(c, "WEB", tag="V2") == ["web-2"]
    _, entries = c.catalog.service("Web", tag="Primary")
    assert [(e["ServiceID"], e["ServiceName"], e["ServiceTags"]) for e in entries] == [
        ("web-1", "web", ["v1", "primary"])
    ], entries


@step
def catalog_reads(t: Trellis, c: consul.Consul) -> None:
    index, services = c.catalog.services()
    assert int(index) > 0
    assert sorted(services["web"]) == ["primary", "v1", "v2"], services
    index, instances = c.catalog.service("web")
    assert int(index) > 0
    by_id = {i["ServiceID"]: i for i in instances}
    assert sorted(by_id) == ["web-1", "web-2"], by_id
    web1 = by_id["web-1"]
    assert web1["ServiceName"] == "web" and web1["ServicePort"] == 8080, web1
    assert web1["ServiceAddress"] == "127.0.0.1" and web1["ServiceTags"] == ["v1", "primary"], web1
    assert web1["ServiceMeta"] == {"version": "1.0", "team": "core"}, web1
    assert web1["Node"] == t.node_name and web1["Datacenter"] == "dc1", web1
    _, tagged = c.catalog.service("web", tag="v2")
    assert [i["ServiceID"] for i in tagged] == ["web-2"]
    _, nodes = c.catalog.nodes()
    assert [n["Node"] for n in nodes] == [t.node_name], nodes


@step
def filter_expressions(t: Trellis, c: consul.Consul) -> None:
    # py-consul sends `filter_expr` as ?filter= on every endpoint Consul filters, each with its
    # own selectors (AgentService, HealthCheck, CheckServiceNode, ServiceNode, Node, NodeService).
    assert sorted(c.agent.services(filter_expr='Meta.team == "core"')) == ["web-1"]
    assert sorted(c.agent.services(filter_expr='"v2" in Tags')) == ["web-2"]
    assert c.agent.services(filter_expr="Port == 1") == {}
    assert sorted(c.agent.checks(filter_expr="Type == http")) == ["service:web-1:2"]
    assert sorted(c.agent.checks(filter_expr='ServiceID == "web-2" and Status == passing')) == ["service:web-2"]
    assert health_ids(c, "web", filter_expr='Service.Meta.version == "1.0"') == ["web-1"]
    assert health_ids(c, "web", filter_expr='Checks.Type == http and Service.Port == 8081') == []
    assert health_ids(c, "web", filter_expr='Service.Port == 8081 or "primary" in Service.Tags') == ["web-1", "web-2"]
    _, checks = c.health.checks("web", filter_expr='ServiceID == "web-1" and Type == ttl')
    assert [ch["CheckID"] for ch in checks] == ["service:web-1:1"], checks
    _, checks = c.health.state("any", filter_expr="CheckID == serfHealth")
    assert [ch["CheckID"] for ch in checks] == ["serfHealth"], checks
    _, checks = c.health.node(t.node_name, filter_expr='ServiceTags contains v2')
    assert [ch["CheckID"] for ch in checks] == ["service:web-2"], checks
    _, services = c.catalog.services(filter_expr="ServiceMeta.team == core")
    assert {name: sorted(tags) for name, tags in services.items()} == {"web": ["primary", "v1"]}, services
    _, instances = c.catalog.service("web", filter_expr="ServiceTags contains v2")
    assert [i["ServiceID"] for i in instances] == ["web-2"], instances
    _, nodes = c.catalog.nodes(filter_expr=f'Node == "{t.node_name}"')
    assert [n["Node"] for n in nodes] == [t.node_name], nodes
    assert c.catalog.nodes(filter_expr='Node == "elsewhere"')[1] == []
    _, node = c.catalog.node(t.node_name, filter_expr="Port == 8081")
    assert sorted(node["Services"]) == ["web-2"], node
    # A filter that does not parse, or names a selector the endpoint lacks, is a 400 that says
    # where and why.
    for bad, why in [("Service.Port ==", "1:16:"), ("Nope == 1", '1:1: Selector "Nope" is not valid')]:
        try:
            c.health.service("web", filter_expr=bad)
        except BadRequest as e:
            assert why in str(e), str(e)
        else:
            raise AssertionError(f"filter {bad!r} should be a 400")


@step
def blocking_timeout_returns_same_index(t: Trellis, c: consul.Consul) -> None:
    index, _ = c.health.service("web")
    started = time.monotonic()
    again, entries = c.health.service("web", index=index, wait="1s")
    elapsed = time.monotonic() - started
    assert again == index, f"timeout answered index {again}, expected the same {index}"
    assert 0.9 <= elapsed < 5, f"wait=1s held the query {elapsed:.2f}s"
    assert len(entries) == 2
    # catalog.services and KV blocking behave the same way.
    sindex, _ = c.catalog.services()
    assert c.catalog.services(index=sindex, wait="500ms")[0] == sindex


@step
def blocking_returns_at_once_on_change(t: Trellis, c: consul.Consul) -> None:
    index, _ = c.health.service("web", passing=True)
    watcher = consul.Consul(host=t.host, port=t.port)
    blocked = Blocked(lambda: watcher.health.service("web", passing=True, index=index, wait="20s"))
    time.sleep(0.3)  # let the query reach the server and block
    assert blocked.thread.is_alive(), "blocking query returned before anything changed"
    assert c.agent.check.ttl_fail("service:web-2", notes="going down")
    new_index, entries = blocked.join(10)
    assert blocked.elapsed < 5, f"change took {blocked.elapsed:.2f}s to wake the watcher"
    assert int(new_index) > int(index), (index, new_index)
    assert sorted(e["Service"]["ID"] for e in entries) == ["web-1"], entries
    assert c.agent.check.ttl_pass("service:web-2")
    # An index the server has never answered (e.g. from before a restart) returns at once.
    started = time.monotonic()
    idx, _ = c.health.service("web", index=int(new_index) + 1000, wait="10s")
    assert time.monotonic() - started < 2 and idx != str(int(new_index) + 1000)


@step
def blocking_not_woken_by_other_service(t: Trellis, c: consul.Consul) -> None:
    index, _ = c.health.service("web")
    watcher = consul.Consul(host=t.host, port=t.port)
    blocked = Blocked(lambda: watcher.health.service("web", index=index, wait="1500ms"))
    time.sleep(0.3)
    assert c.agent.service.register("other", service_id="other-1", port=9000, check=Check.ttl("30s"))
    assert c.agent.check.ttl_pass("service:other-1")
    assert c.kv.put("compat/unrelated", "x")
    again, entries = blocked.join(10)
    assert again == index, f"a change to another service moved web's index {index} -> {again}"
    assert blocked.elapsed >= 1.4, f"woken after {blocked.elapsed:.2f}s by another service's change"
    assert len(entries) == 2
    # ...while the other service's own index did move.
    other_index, other = c.health.service("other")
    assert int(other_index) > int(index) and [e["Service"]["ID"] for e in other] == ["other-1"], other
    assert c.agent.service.deregister("other-1")
    assert c.kv.delete("compat/unrelated")


@step
def kv_put_get(t: Trellis, c: consul.Consul) -> None:
    assert c.kv.put("compat/a", "alpha") is True
    assert c.kv.put("compat/b/c", "gamma") is True
    assert c.kv.put("compat/b/d", b"\x00\x01binary", flags=42) is True
    index, item = c.kv.get("compat/a")
    assert int(index) > 0
    assert item["Key"] == "compat/a" and item["Value"] == b"alpha", item
    assert item["Flags"] == 0 and item["CreateIndex"] > 0 and item["ModifyIndex"] >= item["CreateIndex"], item
    _, item = c.kv.get("compat/b/d")
    assert item["Value"] == b"\x00\x01binary" and item["Flags"] == 42, item
    index, missing = c.kv.get("compat/missing")
    assert missing is None and int(index) > 0, (index, missing)


@step
def kv_recurse_and_keys(t: Trellis, c: consul.Consul) -> None:
    _, items = c.kv.get("compat/", recurse=True)
    assert [(i["Key"], i["Value"]) for i in items] == [
        ("compat/a", b"alpha"),
        ("compat/b/c", b"gamma"),
        ("compat/b/d", b"\x00\x01binary"),
    ], items
    _, keys = c.kv.get("compat/", keys=True, separator="/")
    assert keys == ["compat/a", "compat/b/"], keys
    _, keys = c.kv.get("compat/", keys=True)
    assert keys == ["compat/a", "compat/b/c", "compat/b/d"], keys
    _, keys = c.kv.get("compat/b/", keys=True, separator="/")
    assert keys == ["compat/b/c", "compat/b/d"], keys


@step
def kv_cas_and_delete(t: Trellis, c: consul.Consul) -> None:
    _, item = c.kv.get("compat/a")
    modify = item["ModifyIndex"]
    assert c.kv.put("compat/a", "stale", cas=modify + 1000) is False
    assert c.kv.get("compat/a")[1]["Value"] == b"alpha"
    assert c.kv.put("compat/a", "fresh", cas=modify) is True
    _, item = c.kv.get("compat/a")
    assert item["Value"] == b"fresh" and item["ModifyIndex"] > modify, item
    # cas=0 writes only if the key does not exist.
    assert c.kv.put("compat/a", "again", cas=0) is False
    assert c.kv.put("compat/new", "created", cas=0) is True
    assert c.kv.delete("compat/new", cas=item["ModifyIndex"] + 1000) is False
    _, new = c.kv.get("compat/new")
    assert new is not None
    assert c.kv.delete("compat/new", cas=new["ModifyIndex"]) is True
    assert c.kv.get("compat/new")[1] is None
    assert c.kv.delete("compat/a") is True
    assert c.kv.get("compat/a")[1] is None
    assert c.kv.delete("compat/", recurse=True) is True
    assert c.kv.get("compat/", recurse=True)[1] is None


@step
def kv_blocking(t: Trellis, c: consul.Consul) -> None:
    assert c.kv.put("compat/watched", "1")
    assert c.kv.put("compat/watched-backup", "b")  # shares the key's prefix
    index, item = c.kv.get("compat/watched")
    # As in Consul, a single key answers its own ModifyIndex (usable for CAS)...
    assert int(index) == item["ModifyIndex"], (index, item)
    # ...and a write to a key that merely shares its prefix does not wake its watchers.
    watcher = consul.Consul(host=t.host, port=t.port)
    blocked = Blocked(lambda: watcher.kv.get("compat/watched", index=index, wait="1s"))
    time.sleep(0.3)
    assert c.kv.put("compat/watched-backup", "c")
    same, item = blocked.join(10)
    assert same == index and blocked.elapsed >= 0.95 and item["Value"] == b"1", (same, index, blocked.elapsed)
    assert c.kv.delete("compat/watched-backup")
    watcher = consul.Consul(host=t.host, port=t.port)
    blocked = Blocked(lambda: watcher.kv.get("compat/watched", index=index, wait="20s"))
    time.sleep(0.3)
    assert c.kv.put("compat/watched", "2")
    new_index, item = blocked.join(10)
    assert blocked.elapsed < 5 and int(new_index) > int(index), (blocked.elapsed, index, new_index)
    assert item["Value"] == b"2", item
    assert c.kv.delete("compat/watched")


@step
def session_create_info_list_node_renew_destroy(t: Trellis, c: consul.Consul) -> None:
    sid = c.session.create(name="compat-leader", ttl=15, lock_delay=1)
    index, info = c.session.info(sid)
    assert int(index) > 0
    assert info["ID"] == sid and info["Name"] == "compat-leader", info
    assert info["Node"] == t.node_name and info["TTL"] == "15s", info
    assert info["LockDelay"] == 1_000_000_000 and info["Behavior"] == "release", info
    assert info["NodeChecks"] == ["serfHealth"], info
    _, sessions = c.session.list()
    assert sid in [s["ID"] for s in sessions], sessions
    _, mine = c.session.node(t.node_name)
    assert [s["ID"] for s in mine] == [sid], mine
    assert c.session.node("some-other-node")[1] == []
    renewed = c.session.renew(sid)
    assert renewed["ID"] == sid, renewed
    assert c.session.destroy(sid) is True
    assert c.session.destroy(sid) is True, "destroy is idempotent"
    _, gone = c.session.info(sid)
    assert gone is None, gone
    try:
        c.session.renew(sid)
    except consul.NotFound:
        pass
    else:
        raise AssertionError("renewing a destroyed session should be a 404")


@step
def session_blocking_info(t: Trellis, c: consul.Consul) -> None:
    sid = c.session.create()
    index, _ = c.session.info(sid)
    watcher = consul.Consul(host=t.host, port=t.port)
    blocked = Blocked(lambda: watcher.session.info(sid, index=index, wait="20s"))
    time.sleep(0.3)
    assert c.session.destroy(sid)
    new_index, gone = blocked.join(10)
    assert gone is None and int(new_index) > int(index) and blocked.elapsed < 5, (new_index, blocked.elapsed)


@step
def kv_acquire_and_release(t: Trellis, c: consul.Consul) -> None:
    a = c.session.create(lock_delay=0)
    b = c.session.create(lock_delay=0)
    assert c.kv.put("compat/lock", "a", acquire=a) is True
    _, item = c.kv.get("compat/lock")
    assert item["Session"] == a and item["LockIndex"] == 1 and item["Value"] == b"a", item
    assert c.kv.put("compat/lock", "b", acquire=b) is False
    assert c.kv.put("compat/lock", "b", release=b) is False
    assert c.kv.put("compat/lock", "a2", acquire=a) is True
    assert c.kv.get("compat/lock")[1]["LockIndex"] == 1
    assert c.kv.put("compat/lock", "released", release=a) is True
    _, item = c.kv.get("compat/lock")
    assert "Session" not in item and item["LockIndex"] == 1 and item["Value"] == b"released", item
    assert c.kv.put("compat/lock", "b", acquire=b) is True
    assert c.kv.get("compat/lock")[1]["LockIndex"] == 2
    # Destroying the holder releases its lock.
    assert c.session.destroy(b)
    _, item = c.kv.get("compat/lock")
    assert "Session" not in item, item
    # An unknown session is refused.
    try:
        c.kv.put("compat/lock", "x", acquire="00000000-0000-0000-0000-000000000000")
    except consul.ConsulException as e:
        assert "invalid session" in str(e), e
    else:
        raise AssertionError("acquire with an unknown session should fail")
    # Behavior delete: the key goes with the session.
    eph = c.session.create(behavior="delete", lock_delay=0)
    assert c.kv.put("compat/ephemeral", "here", acquire=eph) is True
    assert c.session.destroy(eph)
    assert c.kv.get("compat/ephemeral")[1] is None
    assert c.session.destroy(a)
    assert c.kv.delete("compat/lock")


@step
def txn_put(t: Trellis, c: consul.Consul) -> None:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    done = c.txn.put(
        [
            {"KV": {"Verb": "set", "Key": "compat/txn/a", "Value": b64("1")}},
            {"KV": {"Verb": "set", "Key": "compat/txn/b", "Value": b64("2")}},
            {"KV": {"Verb": "get", "Key": "compat/txn/a"}},
        ]
    )
    assert done["Errors"] is None, done
    results = done["Results"]
    assert len(results) == 3 and results[2]["KV"]["Value"] == b64("1"), results
    assert results[0]["KV"]["ModifyIndex"] == results[1]["KV"]["ModifyIndex"], results
    # A failed check fails the whole transaction (409) and nothing applies.
    try:
        c.txn.put(
            [
                {"KV": {"Verb": "set", "Key": "compat/txn/c", "Value": b64("3")}},
                {"KV": {"Verb": "check-not-exists", "Key": "compat/txn/a"}},
            ]
        )
    except consul.ConsulException as e:
        assert "409" in str(e) and "exists" in str(e), e
    else:
        raise AssertionError("a failed transaction should be a 409")
    assert c.kv.get("compat/txn/c")[1] is None
    assert c.kv.delete("compat/txn/", recurse=True)


@step
def agent_and_operator_calls(t: Trellis, c: consul.Consul) -> None:
    # User events: fired, listed, and a blocking list woken by the next one.
    fired = c.event.fire("compat-deploy", "v42")
    assert fired["Name"] == "compat-deploy" and fired["ID"], fired
    index, events = c.event.list(name="compat-deploy")
    # py-consul decodes the base64 payload itself.
    assert [e["Payload"] for e in events] == [b"v42"], events
    watcher = consul.Consul(host=t.host, port=t.port)
    blocked = Blocked(lambda: watcher.event.list(name="compat-deploy", index=index, wait="20s"))
    time.sleep(0.3)
    c.event.fire("compat-deploy", "v43")
    new_index, events = blocked.join(10)
    assert new_index != index and len(events) == 2 and blocked.elapsed < 5, (new_index, events)
    # Coordinates and the Raft configuration of a single server.
    dcs = c.coordinate.datacenters()
    assert dcs and dcs[0]["Datacenter"] == "dc1", dcs
    _, nodes = c.coordinate.nodes()
    assert len(nodes) == 1 and "Coord" in nodes[0], nodes
    raft = c.operator.raft_config()
    assert len(raft["Servers"]) == 1 and raft["Servers"][0]["Leader"] is True, raft
    # Metrics in Consul's JSON shape, and as Prometheus text.
    summary = c.agent.metrics()
    assert {"Timestamp", "Gauges", "Counters", "Samples"} <= set(summary), sorted(summary)
    assert "trellis_http_requests_total" in c.agent.metrics(format_prometheus=True)
    # Every Consul server lists itself as the `consul` service.
    _, services = c.catalog.services()
    assert "consul" in services, services
    _, consul_nodes = c.health.service("consul")
    assert consul_nodes and consul_nodes[0]["Service"]["Port"] == 8300, consul_nodes


@step
def config_entries(t: Trellis, c: consul.Consul) -> None:
    # py-consul's generic config entry API: write, read (as Consul prints it), cas, list, delete.
    assert c.config.set("service-defaults", "compat-web", {"Protocol": "HTTP", "Meta": {"team": "compat"}})
    entry = c.config.get("service-defaults", "compat-web")
    assert entry["Protocol"] == "http" and entry["Meta"] == {"team": "compat"}, entry
    assert entry["TransparentProxy"] == {} and entry["MeshGateway"] == {} and entry["Expose"] == {}, entry
    modify = entry["ModifyIndex"]
    assert c.config.set("service-defaults", "compat-web", {"Protocol": "grpc"}, cas=0) is False
    assert c.config.set("service-defaults", "compat-web", {"Protocol": "grpc"}, cas=modify) is True
    assert c.config.get("service-defaults", "compat-web")["Protocol"] == "grpc"
    assert c.config.set("proxy-defaults", "global", {"Config": {"protocol": "http"}})
    assert [e["Name"] for e in c.config.list("service-defaults")] == ["compat-web"]
    # A write replaces the whole entry (its Meta went with the cas write above).
    assert c.config.list("service-defaults", filter_expr='Meta.team == "compat"') == []
    grpc = c.config.list("service-defaults", filter_expr='Protocol == "grpc"')
    assert [e["Name"] for e in grpc] == ["compat-web"], grpc
    assert c.config.get("proxy-defaults", "global")["Config"] == {"protocol": "http"}
    # Kinds that configure Connect are refused with the reason.
    try:
        c.config.set("service-router", "compat-web", {})
    except BadRequest as e:
        assert "not supported by Trellis" in str(e), e
    else:
        raise AssertionError("a service-router entry should be refused")
    assert c.config.delete("service-defaults", "compat-web", cas=modify) is False
    assert c.config.delete("service-defaults", "compat-web") is True
    assert c.config.get("service-defaults", "compat-web") is None
    assert c.config.delete("proxy-defaults", "global") is True
    assert c.config.list("proxy-defaults") == []


@step
def deregister(t: Trellis, c: consul.Consul) -> None:
    assert c.agent.service.deregister("web-1")
    assert "web-1" not in c.agent.services()
    checks = c.agent.checks()
    assert not any(cid.startswith("service:web-1") for cid in checks), sorted(checks)
    assert health_ids(c, "web") == ["web-2"]
    _, services = c.catalog.services()
    assert services["web"] == ["v2"], services
    assert c.agent.service.deregister("web-2")
    assert health_ids(c, "web") == []
    _, services = c.catalog.services()
    assert "web" not in services, services
    assert c.catalog.service("web")[1] == []


def main() -> int:
    print(f"py-consul {version('py-consul')} against {os.environ.get('TRELLIS_BIN', 'target/debug/trellis')}")
    passed = failed = 0
    with Trellis() as t:
        client = consul.Consul(host=t.host, port=t.port)
        for fn in STEPS:
            started = time.monotonic()
            try:
                fn(t, client)
            except Exception:
                failed += 1
                print(f"FAIL {fn.__name__}")
                traceback.print_exc()
            else:
                passed += 1
                print(f"ok   {fn.__name__} ({time.monotonic() - started:.2f}s)")
        if failed:
            print("--- trellis output ---\n" + "\n".join(t.output[-40:]))
    print(f"consul-client: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
