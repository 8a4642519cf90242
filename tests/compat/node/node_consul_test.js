#!/usr/bin/env node
// Acceptance: the npm Consul client (`consul`, pinned in package.json), unchanged, against the
// real `trellis server` binary. Run through tests/compat/run.sh, which installs the package and
// sets NODE_PATH and TRELLIS_BIN.
"use strict";

const assert = require("node:assert/strict");
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const Consul = require("consul");

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// One `trellis server` with `args`; resolves with the child and its HTTP address.
async function spawnServer(bin, args, output) {
  const child = spawn(bin, ["server", "--http", "127.0.0.1:0", "--node-name", "compat-node-js", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const seen = [];
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("trellis did not report its address:\n" + output.join(""))), 30000);
    child.on("exit", (code) => reject(new Error(`trellis exited with ${code}:\n` + output.join(""))));
    child.stderr.on("data", (d) => output.push(String(d)));
    child.stdout.on("data", (d) => {
      output.push(String(d));
      seen.push(String(d));
      const m = /HTTP API listening on http:\/\/(\S+)/.exec(seen.join(""));
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
  child.removeAllListeners("exit");
  return { child, addr };
}

// A server on a free port; with TRELLIS_COMPAT_ETCD (etcd client URLs), three sharing a fresh
// prefix there, as tests/compat/trellis_proc.py starts them: the client talks to the last
// follower, so every write is forwarded to the leader and every read comes from a replica.
async function startTrellis() {
  const bin = process.env.TRELLIS_BIN || "target/debug/trellis";
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "trellis-compat-node-"));
  const output = [];
  const servers = [];
  const etcd = process.env.TRELLIS_COMPAT_ETCD;
  if (etcd) {
    const prefix = `/compat-node-${process.pid}-${Date.now()}/`;
    const members = etcd.split(",");
    for (const [n, name] of ["leader", "follower", "data"].entries()) {
      const endpoints = [...members.slice(n % members.length), ...members.slice(0, n % members.length)].join(",");
      const cluster = ["--store", "etcd", "--etcd", endpoints, "--etcd-prefix", prefix, "--etcd-lease-ttl", "2s"];
      servers.push(await spawnServer(bin, [...cluster, "--data-dir", path.join(dataDir, name)], output));
    }
  } else {
    servers.push(await spawnServer(bin, ["--data-dir", path.join(dataDir, "data")], output));
  }
  const addr = servers[servers.length - 1].addr;
  const [host, port] = [addr.slice(0, addr.lastIndexOf(":")), addr.slice(addr.lastIndexOf(":") + 1)];
  return {
    host,
    port,
    url: `http://${addr}`,
    output,
    stop() {
      for (const { child } of servers.reverse()) child.kill("SIGTERM");
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

async function waitUntil(what, probe, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await probe();
    if (last) return last;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}; last seen ${JSON.stringify(last)}`);
}

const ids = (entries) => entries.map((e) => e.Service.ID).sort();

const steps = [];
const step = (name, fn) => steps.push([name, fn]);

step("agent self and status", async (c, t) => {
  const self = await c.agent.self();
  assert.equal(self.Config.Datacenter, "dc1");
  assert.equal(self.Config.NodeName, "compat-node-js");
  const leader = await c.status.leader();
  assert.equal(typeof leader, "string");
  assert.match(leader, /:\d+$/);
  assert.deepEqual(await c.status.peers(), [leader]);
});

step("register services with checks", async (c, t) => {
  await c.agent.service.register({
    name: "web",
    id: "web-1",
    address: "127.0.0.1",
    port: 8080,
    tags: ["v1", "primary"],
    meta: { version: "1.0" },
    checks: [{ ttl: "30s" }, { http: `${t.url}/v1/status/leader`, interval: "1s", timeout: "2s" }],
  });
  await c.agent.service.register({
    name: "web",
    id: "web-2",
    address: "127.0.0.2",
    port: 8081,
    tags: ["v2"],
    check: { ttl: "30s", status: "passing", deregistercriticalserviceafter: "10m" },
  });
  const services = await c.agent.service.list();
  assert.equal(services["web-1"].Port, 8080);
  assert.deepEqual(services["web-1"].Tags, ["v1", "primary"]);
  assert.deepEqual(services["web-1"].Meta, { version: "1.0" });
  const checks = await c.agent.check.list();
  assert.equal(checks["service:web-1:1"].Type, "ttl");
  assert.equal(checks["service:web-1:1"].Status, "critical");
  assert.equal(checks["service:web-1:2"].Type, "http");
  assert.equal(checks["service:web-2"].Status, "passing", "initial Status given at registration");
});

step("ttl pass and passing filter", async (c, t) => {
  await waitUntil("HTTP check passing", async () => (await c.agent.check.list())["service:web-1:2"].Status === "passing");
  assert.deepEqual(ids(await c.health.service({ service: "web", passing: true })), ["web-2"]);
  await c.agent.check.pass({ id: "service:web-1:1", note: "fine" });
  const checks = await c.agent.check.list();
  assert.equal(checks["service:web-1:1"].Status, "passing");
  assert.equal(checks["service:web-1:1"].Output, "fine");
  assert.deepEqual(ids(await c.health.service({ service: "web", passing: true })), ["web-1", "web-2"]);
  assert.deepEqual(ids(await c.health.service({ service: "web", tag: "v2" })), ["web-2"]);
});

step("catalog", async (c, t) => {
  const services = await c.catalog.service.list();
  assert.deepEqual([...services.web].sort(), ["primary", "v1", "v2"]);
  const nodes = await c.catalog.service.nodes("web");
  assert.deepEqual(nodes.map((n) => n.ServiceID).sort(), ["web-1", "web-2"]);
  const web1 = nodes.find((n) => n.ServiceID === "web-1");
  assert.equal(web1.ServicePort, 8080);
  assert.equal(web1.Node, "compat-node-js");
});

step("filter expressions", async (c, t) => {
  // The client passes `filter` through as ?filter= on every endpoint Consul filters.
  assert.deepEqual(Object.keys(await c.agent.service.list({ filter: 'Meta.version == "1.0"' })), ["web-1"]);
  assert.deepEqual(Object.keys(await c.agent.check.list({ filter: "Type == http" })), ["service:web-1:2"]);
  assert.deepEqual(ids(await c.health.service({ service: "web", filter: '"v2" in Service.Tags' })), ["web-2"]);
  assert.deepEqual(ids(await c.health.service({ service: "web", filter: "Service.Port == 1" })), []);
  const checks = await c.health.checks({ service: "web", filter: 'ServiceID == "web-2"' });
  assert.deepEqual(checks.map((ch) => ch.CheckID), ["service:web-2"]);
  const state = await c.health.state({ state: "passing", filter: "CheckID == serfHealth" });
  assert.deepEqual(state.map((ch) => ch.CheckID), ["serfHealth"]);
  const node = await c.health.node({ node: "compat-node-js", filter: "ServiceName is empty" });
  assert.deepEqual(node.map((ch) => ch.CheckID), ["serfHealth"]);
  const services = await c.catalog.service.list({ filter: "ServicePort == 8081" });
  assert.deepEqual(services, { web: ["v2"] });
  const nodes = await c.catalog.service.nodes({ service: "web", filter: "ServiceMeta.version matches `^1\\.`" });
  assert.deepEqual(nodes.map((n) => n.ServiceID), ["web-1"]);
  const catalogNodes = await c.catalog.node.list({ filter: 'Node == "compat-node-js"' });
  assert.deepEqual(catalogNodes.map((n) => n.Node), ["compat-node-js"]);
  const onNode = await c.catalog.node.services({ node: "compat-node-js", filter: "Port == 8080" });
  assert.deepEqual(Object.keys(onNode.Services), ["web-1"]);
  // A bad filter is a 400 that says where it went wrong (papi keeps a long reason in the body).
  await assert.rejects(c.health.service({ service: "web", filter: "Service.Port ==" }), (err) => {
    assert.equal(err.statusCode, 400);
    assert.match(String(err.response.body), /^invalid filter: 1:16: /);
    return true;
  });
});

step("watch (blocking queries)", async (c, t) => {
  const watch = c.watch({ method: c.health.service, options: { service: "web", passing: true, wait: "5s" } });
  const changes = [];
  const errors = [];
  watch.on("change", (data) => changes.push(ids(data)));
  watch.on("error", (err) => errors.push(err));
  try {
    await waitUntil("the first watch answer", () => changes.length >= 1, 5000);
    assert.deepEqual(changes[0], ["web-1", "web-2"]);
    // An unrelated change must not look like a change of "web".
    await c.agent.service.register({ name: "other", id: "other-1", port: 9000 });
    await c.kv.set("compat/unrelated", "x");
    await sleep(700);
    assert.equal(changes.length, 1, `unrelated writes produced changes ${JSON.stringify(changes)}`);
    const started = Date.now();
    await c.agent.check.fail({ id: "service:web-2", note: "down" });
    await waitUntil("the watch to see web-2 fail", () => changes.length >= 2, 4000);
    assert.ok(Date.now() - started < 2000, `watch took ${Date.now() - started} ms to see the change`);
    assert.deepEqual(changes[1], ["web-1"]);
    assert.deepEqual(errors, []);
  } finally {
    watch.end();
  }
  await c.agent.service.deregister("other-1");
  await c.kv.del("compat/unrelated");
});

step("kv", async (c, t) => {
  assert.equal(await c.kv.set("compat/a", "alpha"), true);
  assert.equal(await c.kv.set({ key: "compat/b/c", value: "gamma", flags: 7 }), true);
  const a = await c.kv.get("compat/a");
  assert.equal(a.Key, "compat/a");
  assert.equal(a.Value, "alpha");
  const bc = await c.kv.get("compat/b/c");
  assert.equal(bc.Flags, 7);
  const all = await c.kv.get({ key: "compat/", recurse: true });
  assert.deepEqual(all.map((e) => [e.Key, e.Value]), [["compat/a", "alpha"], ["compat/b/c", "gamma"]]);
  assert.deepEqual(await c.kv.keys({ key: "compat/", separator: "/" }), ["compat/a", "compat/b/"]);
  assert.equal(await c.kv.get("compat/missing"), undefined);
  // A refused CAS is answered `false`, which node-consul 2.0.1 hands back as `undefined` (papi
  // resolves a falsy body to undefined) -- so check for "not true" and that nothing changed.
  assert.notEqual(await c.kv.set({ key: "compat/a", value: "stale", cas: a.ModifyIndex + 1000 }), true);
  assert.equal((await c.kv.get("compat/a")).Value, "alpha");
  assert.equal(await c.kv.set({ key: "compat/a", value: "fresh", cas: a.ModifyIndex }), true);
  assert.equal((await c.kv.get("compat/a")).Value, "fresh");
  const fresh = await c.kv.get("compat/a");
  assert.notEqual(await c.kv.del({ key: "compat/a", cas: fresh.ModifyIndex + 1000 }), true);
  assert.equal((await c.kv.get("compat/a")).Value, "fresh");
  assert.equal(await c.kv.del({ key: "compat/a", cas: fresh.ModifyIndex }), true);
  assert.equal(await c.kv.del({ key: "compat/", recurse: true }), true);
  assert.equal(await c.kv.get({ key: "compat/", recurse: true }), undefined);
});

step("sessions", async (c, t) => {
  const created = await c.session.create({ name: "compat-js", ttl: "15s", lockdelay: "1s" });
  const id = created.ID;
  assert.match(id, /^[0-9a-f-]{36}$/);
  const info = await c.session.info(id);
  assert.equal(info.ID, id);
  assert.equal(info.Name, "compat-js");
  assert.equal(info.TTL, "15s");
  assert.equal(info.LockDelay, 1e9);
  assert.equal(info.Node, "compat-node-js");
  assert.deepEqual(info.NodeChecks, ["serfHealth"]);
  assert.ok((await c.session.list()).some((s) => s.ID === id));
  assert.deepEqual((await c.session.node("compat-node-js")).map((s) => s.ID), [id]);
  const renewed = await c.session.renew(id);
  assert.equal(renewed[0].ID, id);
  await c.session.destroy(id);
  assert.equal(await c.session.info(id), undefined);
  // A lock-delay given as a number below 1000 is seconds, as Consul reads it.
  const numeric = (await c.session.create({ lockdelay: 2, behavior: "delete" })).ID;
  assert.equal((await c.session.get(numeric)).LockDelay, 2e9);
  assert.equal((await c.session.get(numeric)).Behavior, "delete");
  await c.session.destroy(numeric);
});

step("kv locks", async (c, t) => {
  // node-consul leaves a falsy lockdelay out, so these get Consul's default of 15 s.
  const a = (await c.session.create({ name: "a" })).ID;
  const b = (await c.session.create({ name: "b" })).ID;
  assert.equal(await c.kv.set({ key: "compat/lock", value: "a", acquire: a }), true);
  let held = await c.kv.get("compat/lock");
  assert.equal(held.Session, a);
  assert.equal(held.LockIndex, 1);
  // Refused answers are `false`, which node-consul hands back as `undefined`.
  assert.notEqual(await c.kv.set({ key: "compat/lock", value: "b", acquire: b }), true);
  assert.equal((await c.kv.get("compat/lock")).Value, "a");
  assert.equal(await c.kv.set({ key: "compat/lock", value: "free", release: a }), true);
  held = await c.kv.get("compat/lock");
  assert.equal(held.Session, undefined);
  assert.equal(held.LockIndex, 1);
  assert.equal(await c.kv.set({ key: "compat/lock", value: "b", acquire: b }), true);
  assert.equal((await c.kv.get("compat/lock")).LockIndex, 2);
  await c.session.destroy(b);
  assert.equal((await c.kv.get("compat/lock")).Session, undefined);
  // Within b's lock-delay nobody may take the key.
  assert.notEqual(await c.kv.set({ key: "compat/lock", value: "a", acquire: a }), true);
  await assert.rejects(c.kv.set({ key: "compat/other", value: "x", acquire: "no-such-session" }), /invalid session/);
  await c.session.destroy(a);
  assert.equal(await c.kv.del("compat/lock"), true);
});

step("transaction", async (c, t) => {
  const b64 = (text) => Buffer.from(text).toString("base64");
  const done = await c.transaction.create([
    { KV: { Verb: "set", Key: "compat/txn/a", Value: b64("1") } },
    { KV: { Verb: "get", Key: "compat/txn/a" } },
  ]);
  assert.equal(done.Errors, null);
  assert.equal(done.Results[1].KV.Value, b64("1"));
  await assert.rejects(
    c.transaction.create([
      { KV: { Verb: "set", Key: "compat/txn/b", Value: b64("2") } },
      { KV: { Verb: "check-not-exists", Key: "compat/txn/a" } },
    ]),
    (err) => err.statusCode === 409,
  );
  assert.equal(await c.kv.get("compat/txn/b"), undefined);
  assert.equal(await c.kv.del({ key: "compat/txn/", recurse: true }), true);
});

step("events and the consul service", async (c, t) => {
  const fired = await c.event.fire("compat-node-deploy", "v7");
  assert.equal(fired.Name, "compat-node-deploy");
  assert.ok(fired.ID);
  const events = await c.event.list("compat-node-deploy");
  assert.deepEqual(
    events.map((e) => e.Payload.toString()),
    ["v7"],
  );
  const services = await c.catalog.service.list();
  assert.ok(Object.hasOwn(services, "consul"), JSON.stringify(services));
  const [entry] = await c.health.service("consul");
  assert.equal(entry.Service.Port, 8300);
});

step("deregister", async (c, t) => {
  await c.agent.service.deregister("web-1");
  assert.deepEqual(ids(await c.health.service("web")), ["web-2"]);
  assert.ok(!Object.keys(await c.agent.check.list()).some((id) => id.startsWith("service:web-1")));
  await c.agent.service.deregister({ id: "web-2" });
  assert.deepEqual(await c.health.service("web"), []);
  assert.equal((await c.catalog.service.list()).web, undefined);
});

async function main() {
  const version = require("consul/package.json").version;
  console.log(`node consul ${version} (node ${process.version}) against ${process.env.TRELLIS_BIN}`);
  const t = await startTrellis();
  const c = new Consul({ host: t.host, port: t.port });
  let passed = 0;
  let failed = 0;
  try {
    for (const [name, fn] of steps) {
      const started = Date.now();
      try {
        await fn(c, t);
        passed++;
        console.log(`ok   ${name} (${((Date.now() - started) / 1000).toFixed(2)}s)`);
      } catch (err) {
        failed++;
        console.log(`FAIL ${name}\n${err && err.stack ? err.stack : err}`);
      }
    }
    if (failed) console.log("--- trellis output ---\n" + t.output.join(""));
  } finally {
    t.stop();
  }
  console.log(`node-consul: ${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
