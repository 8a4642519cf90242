// Shared harness of the dashboard's browser tests: a real `trellis server` on free loopback
// ports, seeding through its public APIs, and Debian's Chromium driven by playwright-core.
//
// Environment (tests/ui/run.sh sets them; defaults suit a run from the repository root):
//   TRELLIS_BIN        the trellis binary (default <target>/debug/trellis)
//   TRELLIS_UI_DIR     serve the dashboard from this directory (`--ui-dir`) instead of the copy
//                      built into the binary: to test a working copy without rebuilding
//   UI_NODE_DIR        where package.json's packages are installed (default <target>/ui-node)
//   UI_SCREENSHOT_DIR  where screenshots go (default <target>/ui-screenshots)
//   CHROMIUM_BIN       default /usr/bin/chromium

import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, '../..');
const targetDir = (() => {
  const dir = process.env.CARGO_TARGET_DIR || 'target';
  return path.isAbsolute(dir) ? dir : path.join(root, dir);
})();
const nodeDir = process.env.UI_NODE_DIR || path.join(targetDir, 'ui-node');
export const screenshotDir = process.env.UI_SCREENSHOT_DIR || path.join(targetDir, 'ui-screenshots');
const chromiumBin = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

// The packages live outside the source tree (run.sh installs them under target/), so they are
// resolved from there rather than from a node_modules next to this file.
export const requireInstalled = createRequire(path.join(nodeDir, 'package.json'));
const { chromium } = requireInstalled('playwright-core');

/** The text of axe-core's browser build, evaluated in a page by the accessibility test. */
export function axeSource() {
  return readFileSync(requireInstalled.resolve('axe-core/axe.min.js'), 'utf8');
}

export const VIEWPORT = { width: 1280, height: 900 };
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns something truthy; fails naming `what` after `timeout` ms. */
export async function waitUntil(what, probe, { timeout = 10_000, interval = 100 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; last seen: ${String(last?.stack ?? JSON.stringify(last))}`);
    }
    await sleep(interval);
  }
}

// --- the server --------------------------------------------------------------------------------

const LISTEN_RE = /trellis server: (.+?) listening on (?:http:\/\/)?(\S+)/;
const started = new Set();
// A crashed or interrupted test file must not leave servers behind.
process.on('exit', () => {
  for (const child of started) {
    try {
      child.kill('SIGKILL');
    } catch {}
  }
});

/**
 * Starts `trellis server --dev` on free loopback ports (HTTP API and OTLP/HTTP; no DNS, no
 * OTLP/gRPC) and resolves once it has printed its addresses, as tests/compat/trellis_proc.py
 * learns them: the "X listening on ADDR" lines, then "... instances restored".
 */
export async function startServer({ nodeName = 'ui-node' } = {}) {
  const binary = process.env.TRELLIS_BIN || path.join(targetDir, 'debug', 'trellis');
  const args = ['server', '--dev', '--node-name', nodeName, '--http', '127.0.0.1:0', '--dns', 'off',
    '--otlp', '127.0.0.1:0', '--otlp-grpc', 'off'];
  if (process.env.TRELLIS_UI_DIR) args.push('--ui-dir', path.resolve(root, process.env.TRELLIS_UI_DIR));
  const child = spawn(binary, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, TRELLIS_LOG: process.env.TRELLIS_LOG || 'warn' },
  });
  started.add(child);
  const output = [];
  const listeners = {};
  const ready = new Promise((resolve, reject) => {
    let buffered = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      buffered += chunk;
      let newline;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        output.push(line);
        const m = LISTEN_RE.exec(line);
        if (m) listeners[m[1]] = m[2];
        if (line.includes('instances restored')) resolve();
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => output.push(...chunk.trimEnd().split('\n')));
    child.on('error', reject);
    child.on('exit', (code, signal) => reject(new Error(`trellis exited (${code ?? signal}) before it was ready:\n${output.join('\n')}`)));
  });
  let timer;
  try {
    await Promise.race([ready, new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`trellis did not report its addresses within 30 s:\n${output.join('\n')}`)), 30_000);
    })]);
  } catch (error) {
    child.kill('SIGKILL');
    started.delete(child);
    throw error;
  } finally {
    clearTimeout(timer);
  }
  assert.ok(listeners['HTTP API'] && listeners.OTLP, `listen addresses not found in:\n${output.join('\n')}`);
  const server = {
    url: `http://${listeners['HTTP API']}`,
    otlpUrl: `http://${listeners.OTLP}`,
    nodeName,
    output,
    pid: child.pid,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) {
        started.delete(child);
        return;
      }
      const exited = new Promise((resolve) => child.once('exit', resolve));
      process.kill(child.pid, 'SIGTERM');
      const timeout = sleep(10_000).then(() => 'timeout');
      if ((await Promise.race([exited, timeout])) === 'timeout') {
        process.kill(child.pid, 'SIGKILL');
        await exited;
      }
      started.delete(child);
    },
  };
  server.api = makeApi(server.url);
  return server;
}

// --- the APIs ----------------------------------------------------------------------------------

/** Path segments percent-encoded one by one, as the dashboard's URLs are. */
export const encodePath = (name) => name.split('/').map(encodeURIComponent).join('/');

function makeApi(base) {
  async function call(method, url, body, { expect = [200], raw = false } = {}) {
    const init = { method, headers: {} };
    if (body !== undefined) {
      init.body = typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body);
      if (typeof body !== 'string') init.headers['content-type'] = 'application/json';
    }
    const response = await fetch(base + url, init);
    const text = await response.text();
    if (!expect.includes(response.status)) {
      throw new Error(`${method} ${url} answered ${response.status}: ${text.slice(0, 500)}`);
    }
    if (raw) return { status: response.status, text, headers: response.headers };
    return text === '' ? null : JSON.parse(text);
  }
  return {
    call,
    get: (url, opts) => call('GET', url, undefined, opts),
    put: (url, body, opts) => call('PUT', url, body, opts),
    post: (url, body, opts) => call('POST', url, body, opts),
    del: (url, opts) => call('DELETE', url, undefined, opts),
  };
}

/** Registers an instance on the agent with a TTL check `<id>:ttl`, left passing unless `status` says otherwise. */
export async function registerService(server, { name, id, port = 8080, address = '127.0.0.1', tags = [], meta = {},
  status = 'passing', output = '' }) {
  const checkId = `${id}:ttl`;
  await server.api.put('/v1/agent/service/register', {
    Name: name, ID: id, Address: address, Port: port, Tags: tags, Meta: meta,
    Check: { CheckID: checkId, Name: `${name} heartbeat`, TTL: '10m' },
  });
  await setCheck(server, checkId, status, output);
  return { id, checkId };
}

/** Sets a TTL check: status passing, warning or critical (the agent's pass/warn/fail). */
export async function setCheck(server, checkId, status, output = '') {
  const verb = { passing: 'pass', warning: 'warn', critical: 'fail' }[status];
  assert.ok(verb, `unknown status ${status}`);
  const note = output ? `?note=${encodeURIComponent(output)}` : '';
  await server.api.put(`/v1/agent/check/${verb}/${encodeURIComponent(checkId)}${note}`);
}
export const passCheck = (server, checkId, output) => setCheck(server, checkId, 'passing', output);
export const failCheck = (server, checkId, output) => setCheck(server, checkId, 'critical', output);

export const kvPut = (server, key, value, query = '') => server.api.put(`/v1/kv/${encodePath(key)}${query}`, value);

/** The value of `key` as text, or null when absent. */
export async function kvGet(server, key) {
  const answer = await server.api.call('GET', `/v1/kv/${encodePath(key)}`, undefined, { expect: [200, 404], raw: true });
  if (answer.status === 404) return null;
  const [entry] = JSON.parse(answer.text);
  return entry.Value === null ? '' : Buffer.from(entry.Value, 'base64').toString('utf8');
}

/** A session named `name` holding the lock on `key` (value `value`); answers the session ID. */
export async function holdLock(server, { name, key, value }) {
  const { ID } = await server.api.put('/v1/session/create', { Name: name, TTL: '600s', Behavior: 'release' });
  const acquired = await kvPut(server, key, value, `?acquire=${ID}`);
  assert.equal(acquired, true, `lock ${key} not acquired`);
  return ID;
}

// --- traces ------------------------------------------------------------------------------------

export const hexId = (bytes) => randomBytes(bytes).toString('hex');
const attr = (key, value) => (typeof value === 'number'
  ? { key, value: Number.isInteger(value) ? { intValue: String(value) } : { doubleValue: value } }
  : typeof value === 'boolean' ? { key, value: { boolValue: value } } : { key, value: { stringValue: String(value) } });

/**
 * Posts spans as OTLP/JSON to the OTLP/HTTP receiver. Each span: {service, instance, name,
 * spanId, parentId?, start (ms after `base`), duration (ms), kind, attributes, error?, events?}.
 */
export async function postSpans(server, traceId, spans, { base = Date.now() - 5_000 } = {}) {
  const byResource = new Map();
  for (const s of spans) {
    const key = `${s.service}\u0000${s.instance}`;
    if (!byResource.has(key)) byResource.set(key, { service: s.service, instance: s.instance, spans: [] });
    const startNs = BigInt(Math.round((base + s.start) * 1000)) * 1000n;
    const endNs = startNs + BigInt(Math.round(s.duration * 1000)) * 1000n;
    byResource.get(key).spans.push({
      traceId,
      spanId: s.spanId,
      parentSpanId: s.parentId ?? '',
      name: s.name,
      kind: s.kind ?? 2,
      startTimeUnixNano: String(startNs),
      endTimeUnixNano: String(endNs),
      attributes: Object.entries(s.attributes ?? {}).map(([k, v]) => attr(k, v)),
      events: (s.events ?? []).map((e) => ({
        timeUnixNano: String(startNs + BigInt(Math.round((e.at ?? 0) * 1000)) * 1000n),
        name: e.name,
        attributes: Object.entries(e.attributes ?? {}).map(([k, v]) => attr(k, v)),
      })),
      status: s.error ? { code: 2, message: s.error } : { code: 1 },
    });
  }
  const body = {
    resourceSpans: [...byResource.values()].map((r) => ({
      resource: { attributes: [attr('service.name', r.service), attr('service.instance.id', r.instance), attr('host.name', 'ui-test-host')] },
      scopeSpans: [{ scope: { name: 'trellis-ui-test', version: '1' }, spans: r.spans }],
    })),
  };
  const response = await fetch(`${server.otlpUrl}/v1/traces`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  assert.equal(response.status, 200, `OTLP export answered ${response.status}: ${await response.text()}`);
}

/**
 * The checkout trace: gateway → users, gateway → orders → db; with `error`, the db span fails.
 * Answers {traceId, spans: {root, users, orders, db}} (each {spanId, parentId, depth, service}).
 */
export async function postCheckoutTrace(server, { error = false, base } = {}) {
  const traceId = hexId(16);
  const ids = { root: hexId(8), users: hexId(8), orders: hexId(8), db: hexId(8) };
  const spans = [
    { key: 'root', service: 'gateway', instance: 'gateway-1', name: 'GET /checkout', spanId: ids.root, start: 0, duration: 120,
      attributes: { 'http.request.method': 'GET', 'http.route': '/checkout', 'http.response.status_code': error ? 500 : 200 } },
    { key: 'users', service: 'users', instance: 'users-1', name: 'GET /users/{id}', spanId: ids.users, parentId: ids.root, start: 5, duration: 30,
      attributes: { 'http.request.method': 'GET', 'http.route': '/users/{id}', 'user.id': 42 } },
    { key: 'orders', service: 'orders', instance: 'orders-1', name: 'POST /orders', spanId: ids.orders, parentId: ids.root, start: 40, duration: 75,
      attributes: { 'http.request.method': 'POST', 'http.route': '/orders', 'order.items': 3 } },
    { key: 'db', service: 'db', instance: 'db-1', name: 'INSERT orders', spanId: ids.db, parentId: ids.orders, start: 50, duration: 60,
      attributes: { 'db.system': 'postgresql', 'db.statement': 'INSERT INTO orders VALUES ($1, $2)' },
      error: error ? 'deadlock detected' : undefined,
      events: error ? [{ name: 'exception', at: 55, attributes: { 'exception.type': 'DeadlockError', 'exception.message': 'deadlock detected' } }] : [] },
  ];
  await postSpans(server, traceId, spans, { base });
  const depth = { root: 0, users: 1, orders: 1, db: 2 };
  const tree = {};
  for (const s of spans) tree[s.key] = { spanId: s.spanId, parentId: s.parentId ?? '', depth: depth[s.key], service: s.service, instance: s.instance, name: s.name, attributes: s.attributes };
  return { traceId, spans: tree };
}

// --- transactions ------------------------------------------------------------------------------

/**
 * A tiny participant on a free loopback port: `POST /<path>/prepare|commit|abort`. `answers`
 * maps a path to {prepare: status, body?}; by default everything answers 200. Answers
 * {url(path), calls, close()}.
 */
export async function startParticipant(answers = {}) {
  const calls = [];
  const http = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const [, base, phase] = /^\/(.*)\/([a-z]+)$/.exec(req.url) ?? [];
      calls.push({ base, phase, body });
      const answer = answers[base]?.[phase] ?? { status: 200 };
      res.writeHead(answer.status, { 'content-type': 'text/plain' });
      res.end(answer.body ?? '');
    });
  });
  await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve));
  const { port } = http.address();
  return {
    url: (base) => `http://127.0.0.1:${port}/${base}`,
    calls,
    close: () => new Promise((resolve) => { http.closeAllConnections?.(); http.close(resolve); }),
  };
}

/** Begins and commits (without waiting) a transaction of one branch at `url`. */
export const submitTxn = (server, gid, url, { timeout = '10m', payload } = {}) => server.api.post('/v1/trellis/txn?wait=false', {
  gid, timeout, commit: true, branches: [{ branch_id: 'b1', url, ...(payload === undefined ? {} : { payload }) }],
}, { expect: [200, 201, 202, 409] });

export const txnState = async (server, gid) => (await server.api.get(`/v1/trellis/txn/${encodeURIComponent(gid)}`)).state;

// --- the standard data set ---------------------------------------------------------------------

/**
 * Seeds what every page shows: four services (gateway ×2 passing, users passing, orders one
 * passing one warning, db critical), two checkout traces (one failing in db), KV folders with a
 * session's lock, a stuck transaction `stuck-1` (its participant answers 425 to prepare) and a
 * committed one `done-1`. Answers the handles the tests check against; close `participant`.
 */
export async function seedStandard(server) {
  const instances = {
    'gateway-1': await registerService(server, { name: 'gateway', id: 'gateway-1', port: 8080, tags: ['http', 'edge'], meta: { version: '1.4.2' } }),
    'gateway-2': await registerService(server, { name: 'gateway', id: 'gateway-2', port: 8081, tags: ['http', 'edge'], meta: { version: '1.4.2' } }),
    'users-1': await registerService(server, { name: 'users', id: 'users-1', port: 9001, tags: ['grpc'], meta: { team: 'identity' } }),
    'orders-1': await registerService(server, { name: 'orders', id: 'orders-1', port: 9101, tags: ['http'], meta: { version: '2.0.0' } }),
    'orders-2': await registerService(server, { name: 'orders', id: 'orders-2', port: 9102, tags: ['http', 'canary'], meta: { version: '2.1.0-rc1' },
      status: 'warning', output: 'p99 latency above 500ms' }),
    'db-1': await registerService(server, { name: 'db', id: 'db-1', port: 5432, tags: ['postgres'], meta: {}, status: 'critical', output: 'connection refused' }),
  };
  const base = Date.now() - 60_000;
  const okTrace = await postCheckoutTrace(server, { error: false, base });
  const errorTrace = await postCheckoutTrace(server, { error: true, base: base + 1_000 });

  await kvPut(server, 'config/app/name', 'trellis');
  await kvPut(server, 'config/app/limits', JSON.stringify({ rps: 100, burst: 20 }));
  await kvPut(server, 'config/db/url', 'postgres://db-1:5432/orders');
  await kvPut(server, 'flags/beta', 'true');
  const sessionId = await holdLock(server, { name: 'leader-election', key: 'locks/leader', value: 'gateway-1' });

  const participant = await startParticipant({ stuck: { prepare: { status: 425, body: 'not ready yet' } } });
  await submitTxn(server, 'stuck-1', participant.url('stuck'), { payload: { order: 1 } });
  await submitTxn(server, 'done-1', participant.url('ok'), { payload: { order: 2 } });
  await waitUntil('done-1 committed', async () => (await txnState(server, 'done-1')) === 'committed');
  await waitUntil('stuck-1 preparing', async () => (await txnState(server, 'stuck-1')) === 'preparing'
    && participant.calls.some((c) => c.base === 'stuck' && c.phase === 'prepare'));
  return { instances, okTrace, errorTrace, sessionId, participant };
}

// --- the browser -------------------------------------------------------------------------------

export async function launchBrowser() {
  try {
    accessSync(chromiumBin, constants.X_OK);
  } catch {
    throw new Error(`Chromium not found at ${chromiumBin} (Debian: apt-get install chromium; or set CHROMIUM_BIN)`);
  }
  return chromium.launch({ executablePath: chromiumBin, headless: true });
}

// The KV API answers 404 for an absent key and for a folder without keys (Consul's API): the
// browser logs that as a failed resource, which is not an error of the page.
const EXPECTED_NETWORK = [{ status: 404, path: /^\/v1\/kv\// }];

/**
 * A page at 1280×900 in a context of its own, which records every console error, uncaught
 * exception and JavaScript dialog (alert/confirm/prompt: the dashboard must use none; a dialog
 * is also how an injected script would show). `page.problems` lists them; `assertClean(page)`
 * fails on any. Options: contextOptions (e.g. {bypassCSP: true}).
 */
export async function openPage(browser, server, { contextOptions = {} } = {}) {
  const context = await browser.newContext({ viewport: VIEWPORT, baseURL: server.url, ...contextOptions });
  const page = await context.newPage();
  page.problems = [];
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    const url = msg.location()?.url ?? '';
    const failed = /^Failed to load resource: the server responded with a status of (\d+)/.exec(text);
    if (failed && url.startsWith(server.url)) {
      const status = Number(failed[1]);
      const p = new URL(url).pathname;
      if (EXPECTED_NETWORK.some((e) => e.status === status && e.path.test(p))) return;
    }
    page.problems.push(`console error: ${text}${url ? ` (${url})` : ''}`);
  });
  page.on('pageerror', (error) => page.problems.push(`uncaught exception: ${error.stack || error.message}`));
  page.on('dialog', (dialog) => {
    page.problems.push(`JavaScript ${dialog.type()} dialog opened: ${JSON.stringify(dialog.message())}`);
    dialog.dismiss().catch(() => {});
  });
  page.on('close', () => context.close().catch(() => {}));
  return page;
}

export function assertClean(page) {
  assert.deepEqual(page.problems, [], `the page reported problems:\n${page.problems.join('\n')}`);
}

/** Runs `body` with a fresh page of `server`; the page must report no console error, exception
 * or dialog. */
export async function withPage(browser, server, body, options) {
  const page = await openPage(browser, server, options);
  try {
    await body(page);
    assertClean(page);
  } finally {
    await page.close();
  }
}

/** Waits until the page at `urlPath` (pathname + search) has rendered its first data. */
export async function waitReady(page, { timeout = 15_000 } = {}) {
  try {
    await page.waitForSelector('main[data-ready="true"]', { state: 'attached', timeout });
  } catch (error) {
    const state = await page.evaluate(() => ({
      url: location.href, ready: document.querySelector('main')?.dataset.ready ?? '(no <main>)',
      text: (document.querySelector('main')?.innerText ?? document.body?.innerText ?? '').slice(0, 300),
    })).catch(() => ({}));
    throw new Error(`main[data-ready=true] did not appear within ${timeout} ms at ${state.url} (data-ready=${state.ready}; `
      + `main says ${JSON.stringify(state.text)}); page problems:\n${page.problems?.join('\n') || '(none)'}`, { cause: error });
  }
}

/** Navigates to `urlPath` and waits for `main[data-ready=true]`; answers the ms it took. */
export async function gotoReady(page, urlPath, { timeout = 15_000 } = {}) {
  const started = Date.now();
  await page.goto(urlPath);
  await waitReady(page, { timeout });
  return Date.now() - started;
}

/** After an in-app navigation (a click) to `pathname`: waits for the new page's data. */
export async function waitNavigated(page, pathname, { timeout = 15_000 } = {}) {
  await page.waitForURL((u) => u.pathname === pathname, { timeout });
  await waitReady(page, { timeout });
}

export async function screenshot(page, name) {
  mkdirSync(screenshotDir, { recursive: true });
  const file = path.join(screenshotDir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  return file;
}

/**
 * The distinct computed colours (text, background, border, fill) of `selector` and of the
 * elements inside it, sorted: a badge's look, whatever text it holds.
 */
export function colours(page, selector) {
  return page.$eval(selector, (el) => [...new Set([el, ...el.querySelectorAll('*')].map((e) => {
    const s = getComputedStyle(e);
    return [s.color, s.backgroundColor, s.borderTopColor, s.fill].join(' ');
  }))].sort());
}
