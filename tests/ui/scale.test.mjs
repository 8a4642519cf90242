// Scale: 1,000 services × 10 instances. Render time (navigation start → main[data-ready=true])
// and transferred weight of Overview, Services (page 1, page 2, a search) and a Service page,
// printed as a table (and written to <target>/ui-scale.md). Weight is asserted (≤ 200 KB per
// page, gzip), time only loosely: the machine is small and noisy.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  startServer, launchBrowser, openPage, assertClean, waitUntil, screenshot, screenshotDir,
} from './support.mjs';

const SERVICES = 1_000;
const PER_SERVICE = 10;
const PARALLEL = 32;
const WEIGHT_LIMIT = 200 * 1024;
const TIME_LIMIT_MS = 10_000;

let server;
let browser;
const rows = [];

const serviceName = (s) => `svc-${String(s).padStart(4, '0')}`;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Every instance on the server's node through the catalog, PARALLEL requests at a time. */
async function seed() {
  const total = SERVICES * PER_SERVICE;
  let next = 0;
  const worker = async () => {
    while (next < total) {
      const i = next++;
      const s = Math.floor(i / PER_SERVICE);
      const k = i % PER_SERVICE;
      const name = serviceName(s);
      const id = `${name}-${k}`;
      // Some instances critical (every 50th service's first), some warning (every 7th's second).
      const status = s % 50 === 0 && k === 0 ? 'critical' : s % 7 === 0 && k === 1 ? 'warning' : 'passing';
      const body = {
        Node: server.nodeName, Address: '127.0.0.1',
        Service: { ID: id, Service: name, Address: `127.0.1.${k + 1}`, Port: 8000 + k, Tags: ['v1', `zone-${k % 3}`], Meta: { version: `1.${k}.0` } },
        Checks: [{ CheckID: `service:${id}`, Name: 'http probe', Status: status, ServiceID: id, Output: `HTTP GET /health: ${status}` }],
      };
      const response = await fetch(`${server.url}/v1/catalog/register`, { method: 'PUT', body: JSON.stringify(body) });
      const text = await response.text();
      assert.equal(response.status, 200, `register ${id}: ${text}`);
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
}

/**
 * Records, through the DevTools protocol, every response that finishes while `action` runs:
 * body bytes as transferred, and as they would be gzip-compressed (a response already sent
 * compressed counts as sent; one sent plain is compressed here to see what it would weigh).
 */
async function measure(page, action) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  const seen = new Map();
  const finished = [];
  let recording = true;
  cdp.on('Network.requestWillBeSent', (e) => { if (recording) seen.set(e.requestId, { url: e.request.url }); });
  cdp.on('Network.responseReceived', (e) => {
    const r = seen.get(e.requestId);
    if (!r) return;
    const headers = Object.fromEntries(Object.entries(e.response.headers).map(([k, v]) => [k.toLowerCase(), v]));
    r.headerBytes = e.response.encodedDataLength ?? 0;
    r.encoding = headers['content-encoding'] ?? '';
    r.status = e.response.status;
  });
  cdp.on('Network.loadingFinished', (e) => {
    const r = seen.get(e.requestId);
    if (!r || !recording) return;
    r.transferred = Math.max(0, e.encodedDataLength - (r.headerBytes ?? 0));
    r.requestId = e.requestId;
    finished.push(r);
  });
  const started = Date.now();
  const renderMs = await action();
  const wallMs = Date.now() - started;
  recording = false;
  let transferred = 0;
  let gzipped = 0;
  let assets = 0;
  const detail = [];
  for (const r of finished) {
    let gz = r.transferred;
    if (!r.encoding && r.status === 200) {
      try {
        const { body, base64Encoded } = await cdp.send('Network.getResponseBody', { requestId: r.requestId });
        gz = gzipSync(Buffer.from(body, base64Encoded ? 'base64' : 'utf8')).length;
      } catch {}
    }
    transferred += r.transferred;
    gzipped += gz;
    if (new URL(r.url).pathname.startsWith('/ui/')) assets += gz;
    detail.push(`${new URL(r.url).pathname}${new URL(r.url).search} ${r.status} ${r.transferred} B${r.encoding ? ` (${r.encoding})` : ''}, ${gz} B gzip`);
  }
  await cdp.detach();
  return { renderMs, wallMs, transferred, gzipped, assets, requests: finished.length, detail };
}

/** Navigates (a fresh context: nothing cached) and answers performance.now() at data-ready. */
async function navigate(page, url) {
  await page.goto(url, { waitUntil: 'commit' });
  const handle = await page.waitForFunction(() => document.querySelector('main[data-ready="true"]') && performance.now(), null, { timeout: 60_000, polling: 50 });
  return Math.round(await handle.jsonValue());
}

const kb = (n) => `${(n / 1024).toFixed(1)} KB`;

function record(name, m) {
  rows.push({ name, ...m });
  console.log(`${name}: ${m.renderMs} ms to ready (wall ${m.wallMs} ms), ${kb(m.transferred)} transferred, ${kb(m.gzipped)} gzip (assets ${kb(m.assets)}), ${m.requests} requests`);
  for (const line of m.detail) console.log(`    ${line}`);
}

function check(name, m) {
  assert.ok(m.renderMs < TIME_LIMIT_MS, `${name} took ${m.renderMs} ms to render`);
  assert.ok(m.gzipped <= WEIGHT_LIMIT, `${name} weighs ${kb(m.gzipped)} gzip-compressed (limit ${kb(WEIGHT_LIMIT)})`);
}

test(`${SERVICES} services × ${PER_SERVICE} instances: render times and page weights`, async () => {
  const t0 = Date.now();
  await seed();
  const seedMs = Date.now() - t0;
  console.log(`seeded ${SERVICES * PER_SERVICE} instances of ${SERVICES} services in ${seedMs} ms (${PARALLEL} requests at a time)`);
  assert.ok(seedMs < 90_000, `seeding took ${seedMs} ms`);
  const problems = [];
  const failures = [];
  const attempt = async (name, fn) => {
    try {
      await fn();
    } catch (error) {
      failures.push(`${name}: ${error.message}`);
    }
  };

  // Overview.
  await attempt('Overview', async () => {
    const page = await openPage(browser, server);
    try {
      const m = await measure(page, () => navigate(page, '/ui/'));
      record('Overview', m);
      // Plus the server's own `consul` service and instance. A thousands separator is allowed.
      const count = async (name) => Number((await page.locator(`[data-testid=count-${name}]`).innerText()).replace(/[\s,.\u202f\u00a0]/g, ''));
      await waitUntil(`count-services = ${SERVICES + 1}`, async () => (await count('services')) === SERVICES + 1);
      assert.equal(await count('instances'), SERVICES * PER_SERVICE + 1);
      assert.equal(await count('critical'), SERVICES / 50);
      await screenshot(page, 'scale-overview');
      check('Overview', m);
      problems.push(...page.problems);
    } finally {
      await page.close();
    }
  });

  // Services: page 1, page 2, a search.
  await attempt('Services', async () => {
    const page = await openPage(browser, server);
    try {
      const table = page.locator('table[data-testid=services-table]');
      const m = await measure(page, () => navigate(page, '/ui/services'));
      record('Services (page 1)', m);
      assert.equal(await table.locator('tr[data-service]').count(), 50, '50 rows a page');
      assert.match(await page.locator('[data-testid=pager-status]').innerText(), /1\s*[–-]\s*50 of 1[,.\s\u202f\u00a0]?001/, 'with consul');
      assert.equal(await table.locator(`tr[data-service="${serviceName(0)}"]`).getAttribute('data-health'), 'critical');
      assert.equal(await table.locator(`tr[data-service="${serviceName(7)}"]`).getAttribute('data-health'), 'warning');
      assert.equal(await table.locator(`tr[data-service="${serviceName(1)}"]`).getAttribute('data-health'), 'passing');
      await screenshot(page, 'scale-services');
      check('Services (page 1)', m);

      const m2 = await measure(page, async () => {
        const t = await page.evaluate(() => performance.now());
        await page.click('[data-testid=pager-next]');
        const handle = await page.waitForFunction((name) => /51\s*[–-]\s*100/.test(document.querySelector('[data-testid=pager-status]')?.textContent ?? '')
          && document.querySelector(`tr[data-service="${name}"]`) && document.querySelector('main[data-ready="true"]') && performance.now(),
        serviceName(50), { timeout: 60_000, polling: 50 });
        return Math.round((await handle.jsonValue()) - t);
      });
      record('Services (page 2)', m2);
      assert.equal(await table.locator('tr[data-service]').count(), 50);
      await page.waitForURL((u) => u.searchParams.get('page') === '2');
      check('Services (page 2)', m2);

      const m3 = await measure(page, async () => {
        const t = await page.evaluate(() => performance.now());
        await page.fill('input[data-testid=services-search]', serviceName(999));
        const handle = await page.waitForFunction((name) => {
          const rowsNow = document.querySelectorAll('table[data-testid=services-table] tr[data-service]');
          return rowsNow.length === 1 && rowsNow[0].dataset.service === name && performance.now();
        }, serviceName(999), { timeout: 60_000, polling: 50 });
        return Math.round((await handle.jsonValue()) - t);
      });
      record(`Services (search "${serviceName(999)}")`, m3);
      check('Services (search)', m3);
      problems.push(...page.problems);
    } finally {
      await page.close();
    }
  });

  // One service of 10 instances.
  await attempt('Service', async () => {
    const page = await openPage(browser, server);
    try {
      const name = serviceName(500);
      const m = await measure(page, () => navigate(page, `/ui/services/${name}`));
      record(`Service (${name})`, m);
      assert.equal(await page.locator('table[data-testid=instances-table] tr[data-instance]').count(), PER_SERVICE);
      assert.equal(await page.locator(`tr[data-instance="${name}-0"]`).getAttribute('data-health'), 'critical');
      check('Service', m);
      problems.push(...page.problems);
    } finally {
      await page.close();
    }
  });

  // A service of 120 instances: its instances page 50 at a time.
  await attempt('Service instances paging', async () => {
    await Promise.all(Array.from({ length: 4 }, async (_, w) => {
      for (let k = w; k < 120; k += 4) {
        await server.api.put('/v1/catalog/register', {
          Node: server.nodeName, Address: '127.0.0.1',
          Service: { ID: `big-${String(k).padStart(3, '0')}`, Service: 'big', Address: '127.0.2.1', Port: 10_000 + k },
        });
      }
    }));
    const page = await openPage(browser, server);
    try {
      const m = await measure(page, () => navigate(page, '/ui/services/big'));
      record('Service (big: 120 instances)', m);
      const instances = page.locator('table[data-testid=instances-table] tr[data-instance]');
      assert.equal(await instances.count(), 50, '50 instances a page');
      assert.match(await page.locator('[data-testid=pager-status]').innerText(), /1\s*[–-]\s*50 of 120/);
      await page.click('[data-testid=pager-next]');
      await waitUntil('instances 51–100', async () => /51\s*[–-]\s*100 of 120/.test(await page.locator('[data-testid=pager-status]').innerText()));
      await page.click('[data-testid=pager-next]');
      await waitUntil('instances 101–120', async () => /101\s*[–-]\s*120 of 120/.test(await page.locator('[data-testid=pager-status]').innerText())
        && (await instances.count()) === 20);
      await page.click('[data-testid=pager-prev]');
      await waitUntil('back to 51–100', async () => /51\s*[–-]\s*100 of 120/.test(await page.locator('[data-testid=pager-status]').innerText())
        && (await instances.count()) === 50);
      check('Service (big)', m);
      problems.push(...page.problems);
    } finally {
      await page.close();
    }
  });

  const table = [
    `| ${SERVICES} services × ${PER_SERVICE} instances | render (ms) | transferred | gzip weight | of which UI assets | requests |`,
    '|---|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.name} | ${r.renderMs} | ${kb(r.transferred)} | ${kb(r.gzipped)} | ${kb(r.assets)} | ${r.requests} |`),
  ].join('\n');
  const notes = `Seeded in ${seedMs} ms. Render: navigation start (or the click / keystroke) to main[data-ready=true] `
    + '(for page 2 and search: to the new rows). Weight: response bodies that finished by then; "gzip" counts a plain '
    + `response as it would weigh gzip-compressed.${process.env.TRELLIS_UI_DIR ? ' UI served with --ui-dir (uncompressed).' : ''}`;
  console.log(`\n${table}\n${notes}\n`);
  writeFileSync(path.join(path.dirname(screenshotDir), 'ui-scale.md'), `${table}\n\n${notes}\n`);
  assert.deepEqual(failures, [], failures.join('\n'));
  assert.deepEqual(problems, [], problems.join('\n'));
});
