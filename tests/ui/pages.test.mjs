// Every page of the dashboard against one server seeded with real data (services, checks,
// traces, KV, a session's lock, transactions): each renders what the APIs hold, with a
// screenshot; the trace waterfall's span tree; aborting a stuck transaction; accessibility.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, seedStandard, launchBrowser, gotoReady, waitNavigated,
  screenshot, waitUntil, txnState, axeSource,
  withPage as withPageOf,
} from './support.mjs';

let server;
let browser;
let seed;

before(async () => {
  server = await startServer();
  seed = await seedStandard(server);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await seed?.participant.close();
  await server?.stop();
});

/** A fresh page that must report no console error, exception or dialog. */
const withPage = (body, options) => withPageOf(browser, server, body, options);

const text = (page, selector) => page.locator(selector).innerText();

/** The layout every page shares; `title` is the page's name, or a RegExp for the part before " — Trellis". */
async function commonLayout(page, title) {
  if (title instanceof RegExp) {
    const t = await page.title();
    assert.match(t, / — Trellis$/, `title ${JSON.stringify(t)}`);
    assert.match(t.replace(/ — Trellis$/, ''), title, `title ${JSON.stringify(t)}`);
  } else {
    assert.equal(await page.title(), `${title} — Trellis`);
  }
  assert.equal(await page.locator('h1').count(), 1, 'one <h1> per page');
  assert.equal(await page.locator('main#main').count(), 1);
  const nav = page.locator('nav[aria-label="Main"]');
  for (const link of ['Overview', 'Services', 'Topology', 'Traces', 'Transactions', 'Key/Value', 'Sessions']) {
    assert.equal(await nav.getByRole('link', { name: link, exact: true }).count(), 1, `nav link ${link}`);
  }
  await waitUntil('the live indicator to say "live"', async () => (await text(page, '[data-testid=live]')).trim().toLowerCase() === 'live');
}

async function activeNav(page) {
  return (await page.locator('nav[aria-label="Main"] [aria-current="page"]').innerText()).trim();
}

test('Overview renders the registry, transaction and error counts', () => withPage(async (page) => {
  await gotoReady(page, '/ui/');
  await commonLayout(page, 'Overview');
  assert.equal(await activeNav(page), 'Overview');
  // Expected from the registry's own summary (it includes the server's own `consul` service):
  // instances by their worst check. Each seeded instance has one service check, so counting
  // service checks instead would give the same warning and critical numbers.
  const summary = await server.api.get('/v1/internal/ui/services');
  const sum = (field) => String(summary.reduce((n, s) => n + s[field], 0));
  const counts = {
    services: String(summary.length), instances: sum('InstanceCount'), passing: sum('InstancesPassing'),
    warning: sum('InstancesWarning'), critical: sum('InstancesCritical'), 'txn-inflight': '1',
  };
  assert.deepEqual([counts.warning, counts.critical], ['1', '1']);
  for (const [name, expected] of Object.entries(counts)) {
    await waitUntil(`count-${name} = ${expected}`, async () => (await text(page, `[data-testid=count-${name}]`)).trim() === expected);
  }
  const errors = page.locator('[data-testid=recent-errors]');
  // The critical db check and the failing checkout trace, newest first.
  await waitUntil('recent-errors to list the db check and the error trace', async () => {
    const t = await errors.innerText();
    return t.includes('db') && (await errors.locator(`a[href="/ui/traces/${seed.errorTrace.traceId}"]`).count()) >= 1;
  });
  assert.equal(await errors.locator(`a[href="/ui/traces/${seed.okTrace.traceId}"]`).count(), 0, 'a trace without errors is not an error');
  // Newest first: the check transitions (seconds ago) before the error trace (a minute ago).
  const entries = await errors.locator('li, tr').evaluateAll((items, traceId) => items.map((item) => ({
    trace: !!item.querySelector(`a[href="/ui/traces/${traceId}"]`), db: /\bdb\b/.test(item.textContent),
  })), seed.errorTrace.traceId);
  const traceAt = entries.findIndex((e) => e.trace);
  const dbAt = entries.findIndex((e) => e.db && !e.trace);
  assert.ok(dbAt >= 0 && traceAt > dbAt, `newest first: db's transition before the older error trace (${JSON.stringify(entries)})`);
  await screenshot(page, 'overview');
}));

test('Services lists every service with its worst health', () => withPage(async (page) => {
  await gotoReady(page, '/ui/services');
  await commonLayout(page, 'Services');
  assert.equal(await activeNav(page), 'Services');
  const table = page.locator('table[data-testid=services-table]');
  const expected = { gateway: 'passing', users: 'passing', orders: 'warning', db: 'critical' };
  // The four seeded and the server's own `consul`, as Consul lists itself.
  const names = (await server.api.get('/v1/internal/ui/services')).map((s) => s.Name);
  assert.deepEqual(names, ['consul', 'db', 'gateway', 'orders', 'users']);
  assert.deepEqual(await table.locator('tr[data-service]').evaluateAll((rows) => rows.map((r) => r.dataset.service)), names, 'sorted by name');
  for (const [name, health] of Object.entries(expected)) {
    const row = table.locator(`tr[data-service="${name}"]`);
    assert.equal(await row.getAttribute('data-health'), health, `${name} health`);
    assert.equal(await row.locator(`a[href="/ui/services/${name}"]`).count(), 1, `${name} links to its page`);
  }
  assert.match(await table.locator('tr[data-service="gateway"]').innerText(), /edge/, 'tags shown');
  assert.equal(await page.getByLabel('Search services').count(), 1, 'the search box is labelled');
  assert.match(await text(page, '[data-testid=pager-status]'), /1\s*[–-]\s*5 of 5/);
  await screenshot(page, 'services');

  // Search and health filter narrow the list and land in the URL.
  await page.fill('input[data-testid=services-search]', 'ord');
  await waitUntil('search for "ord" to leave orders only', async () => (await table.locator('tr[data-service]').count()) === 1
    && (await table.locator('tr[data-service="orders"]').count()) === 1);
  await page.waitForURL((u) => u.searchParams.get('q') === 'ord');
  await page.fill('input[data-testid=services-search]', '');
  await page.selectOption('select[data-testid=services-health]', 'critical');
  await waitUntil('health=critical to leave db only', async () => (await table.locator('tr[data-service]').count()) === 1
    && (await table.locator('tr[data-service="db"]').count()) === 1);
  await page.waitForURL((u) => u.searchParams.get('health') === 'critical');

  // The link goes to the service page without reloading the document, and data-ready goes
  // "false" while the next page loads its data, then "true".
  await page.evaluate(() => {
    window.__sameDocument = true;
    window.__readyValues = [];
    const main = document.querySelector('main');
    new MutationObserver(() => window.__readyValues.push(main.dataset.ready)).observe(main, { attributes: true, attributeFilter: ['data-ready'] });
  });
  await table.locator('a[href="/ui/services/db"]').click();
  await waitNavigated(page, '/ui/services/db');
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'in-app navigation (History API), no reload');
  const readyValues = await page.evaluate(() => window.__readyValues);
  assert.ok(readyValues.indexOf('false') >= 0 && readyValues.lastIndexOf('true') > readyValues.indexOf('false'),
    `data-ready reset to "false" on navigation, then "true": ${JSON.stringify(readyValues)}`);
  assert.equal((await text(page, 'h1')).trim(), 'db');
  // The browser's Back returns to the filtered list.
  await page.goBack();
  await waitNavigated(page, '/ui/services');
  assert.equal(new URL(page.url()).searchParams.get('health'), 'critical');
  await waitUntil('the filtered list again', async () => (await table.locator('tr[data-service]').count()) === 1);
  assert.equal(await page.locator('select[data-testid=services-health]').inputValue(), 'critical', 'the filter shows the URL\'s choice');
}));

test('Service shows its instances, checks, check history and links', () => withPage(async (page) => {
  await gotoReady(page, '/ui/services/orders');
  await commonLayout(page, /orders/);
  assert.equal((await text(page, 'h1')).trim(), 'orders');
  const table = page.locator('table[data-testid=instances-table]');
  assert.equal(await table.locator('tr[data-instance]').count(), 2);
  const one = table.locator('tr[data-instance="orders-1"]');
  const two = table.locator('tr[data-instance="orders-2"]');
  assert.equal(await one.getAttribute('data-health'), 'passing');
  assert.equal(await two.getAttribute('data-health'), 'warning');
  assert.match(await one.innerText(), /9101/);
  assert.match(await two.innerText(), /9102/);
  assert.match(await two.innerText(), /canary/, 'tags');
  assert.match(await two.innerText(), /2\.1\.0-rc1/, 'meta');
  const check = two.locator('[data-check="orders-2:ttl"]');
  assert.equal(await check.getAttribute('data-status'), 'warning');
  assert.match(await check.innerText(), /p99 latency above 500ms/, 'check output');
  for (const row of [one, two]) {
    assert.equal(await row.locator('button[data-testid=maintenance-toggle]').count(), 1);
    assert.match(await row.locator('button[data-testid=maintenance-toggle]').innerText(), /Enable maintenance/);
    assert.equal(await row.locator('button[data-testid=deregister]').count(), 1);
  }
  // orders-2 went critical (registered) → warning; orders-1 critical → passing.
  const history = page.locator('[data-testid=check-history]');
  await waitUntil('check history to show the warning transition', async () => /warning/.test(await history.innerText()));
  assert.equal(await page.locator('a[href="/ui/traces?service=orders"]').count() >= 1, true, 'link to the service\'s traces');
  await screenshot(page, 'service');
}));

test('Topology draws the service graph from the traces', () => withPage(async (page) => {
  await gotoReady(page, '/ui/topology');
  await commonLayout(page, 'Topology');
  const svg = page.locator('svg[data-testid=topology-graph]');
  const nodes = { gateway: 'node-passing', users: 'node-passing', orders: 'node-warning', db: 'node-critical' };
  for (const [name, cls] of Object.entries(nodes)) {
    const node = svg.locator(`g[data-node="${name}"]`);
    await node.waitFor();
    assert.match(await node.getAttribute('class') ?? '', new RegExp(`\\b${cls}\\b`), `${name} is ${cls}`);
  }
  const edges = {
    'gateway->users': { rate: 0, calls: 2, cls: 'edge-ok' },
    'gateway->orders': { rate: 0, calls: 2, cls: 'edge-ok' },
    'orders->db': { rate: 0.5, calls: 2, cls: 'edge-bad' },
  };
  assert.equal(await svg.locator('[data-edge]').count(), 3);
  const table = page.locator('table[data-testid=topology-table]');
  assert.equal(await table.locator('tr[data-edge]').count(), 3);
  for (const [edge, want] of Object.entries(edges)) {
    const e = svg.locator(`[data-edge="${edge}"]`);
    assert.equal(Number(await e.getAttribute('data-error-rate')), want.rate, `${edge} error rate`);
    assert.equal(Number(await e.getAttribute('data-calls')), want.calls, `${edge} calls`);
    assert.ok(Number(await e.getAttribute('data-p99-ms')) > 0, `${edge} p99`);
    assert.match(await e.getAttribute('class') ?? '', new RegExp(`\\b${want.cls}\\b`), `${edge} is ${want.cls}`);
    assert.equal(await table.locator(`tr[data-edge="${edge}"]`).count(), 1, `${edge} in the table`);
  }
  await screenshot(page, 'topology');
  await svg.locator('g[data-node="db"]').click();
  await waitNavigated(page, '/ui/services/db');
}));

test('Traces finds the checkout traces and filters errors', () => withPage(async (page) => {
  await gotoReady(page, '/ui/traces?service=gateway');
  await commonLayout(page, 'Traces');
  const form = page.locator('form[data-testid=trace-search]');
  for (const field of ['select[name=service]', 'select[name=operation]', 'input[name=minDuration]', 'input[name=maxDuration]',
    'select[name=lookback]', 'input[type=checkbox][name=error]', 'input[name=limit]']) {
    assert.equal(await form.locator(field).count(), 1, `search form has ${field}`);
  }
  await waitUntil('the service select to show the URL\'s service', async () => (await form.locator('select[name=service]').inputValue()) === 'gateway', { timeout: 5_000 });
  const results = page.locator('table[data-testid=trace-results]');
  for (const trace of [seed.okTrace, seed.errorTrace]) {
    const row = results.locator(`tr[data-trace="${trace.traceId}"]`);
    await row.waitFor();
    assert.equal(await row.locator(`a[href="/ui/traces/${trace.traceId}"]`).count(), 1);
    assert.match(await row.innerText(), /GET \/checkout/);
  }
  await screenshot(page, 'traces');
  // The error is on db's span: search db's traces with errors only.
  await form.locator('select[name=service]').selectOption('db');
  await form.locator('input[type=checkbox][name=error]').check();
  await form.evaluate((f) => f.requestSubmit());
  await page.waitForURL((u) => u.searchParams.get('error') === '1' && u.searchParams.get('service') === 'db');
  await waitUntil('only the error trace to remain', async () => (await results.locator('tr[data-trace]').count()) === 1
    && (await results.locator(`tr[data-trace="${seed.errorTrace.traceId}"]`).count()) === 1);
}));

test('Trace waterfall shows the span tree, the error span, and span details', () => withPage(async (page) => {
  const { traceId, spans } = seed.errorTrace;
  await gotoReady(page, `/ui/traces/${traceId}`);
  await commonLayout(page, /Trace|GET \/checkout/);
  const waterfall = page.locator('[data-testid=waterfall]');
  assert.equal(await waterfall.locator('[data-span]').count(), 4);
  for (const [key, span] of Object.entries(spans)) {
    const row = waterfall.locator(`[data-span="${span.spanId}"]`);
    assert.equal(await row.getAttribute('data-parent'), span.parentId, `${key} parent`);
    assert.equal(await row.getAttribute('data-depth'), String(span.depth), `${key} depth`);
    assert.equal(await row.getAttribute('data-service'), span.service, `${key} service`);
    assert.equal(await row.getAttribute('data-error') === 'true', key === 'db', `${key} error mark`);
    const focusable = await row.evaluate((el) => el.matches('a[href], button, [tabindex]') || !!el.querySelector('a[href], button, [tabindex]'));
    assert.ok(focusable, `${key} row is keyboard-focusable`);
  }
  // Children come after their parent, in start order.
  const order = await waterfall.locator('[data-span]').evaluateAll((rows) => rows.map((r) => r.dataset.span));
  assert.deepEqual(order, [spans.root.spanId, spans.users.spanId, spans.orders.spanId, spans.db.spanId]);

  await waterfall.locator(`[data-span="${spans.db.spanId}"]`).click();
  const details = page.locator('[data-testid=span-details]');
  await details.waitFor();
  await waitUntil('details of the db span', async () => (await details.innerText()).includes('INSERT orders'));
  assert.match(await details.locator('[data-attr="db.system"]').innerText(), /postgresql/);
  assert.match(await details.locator('[data-attr="db.statement"]').innerText(), /INSERT INTO orders VALUES/);
  const shown = await details.innerText();
  assert.match(shown, /deadlock detected/, 'the exception event (log)');
  assert.match(shown, /ui-test-host/, 'the resource tags');
  assert.match(shown, /db-1/, 'served by the instance');
  assert.ok(await details.locator('a[href^="/ui/services/db"]').count() >= 1, 'served-by links to the service page');
  await screenshot(page, 'trace');

  await waterfall.locator(`[data-span="${spans.root.spanId}"]`).click();
  await waitUntil('details of the root span', async () => (await details.innerText()).includes('gateway-1'));
  assert.match(await details.locator('[data-attr="http.route"]').innerText(), /\/checkout/);
  assert.ok(await details.locator('a[href^="/ui/services/gateway"]').count() >= 1);
}));

test('Transactions lists both transactions and filters by state', () => withPage(async (page) => {
  await gotoReady(page, '/ui/transactions');
  await commonLayout(page, 'Transactions');
  const table = page.locator('table[data-testid=txn-table]');
  assert.equal(await table.locator('tr[data-gid="stuck-1"]').getAttribute('data-state'), 'preparing');
  assert.equal(await table.locator('tr[data-gid="done-1"]').getAttribute('data-state'), 'committed');
  assert.equal(await table.locator('a[href="/ui/transactions/stuck-1"]').count(), 1);
  await screenshot(page, 'transactions');
  await page.selectOption('select[data-testid=txn-state]', 'committed');
  await page.waitForURL((u) => u.searchParams.get('state') === 'committed');
  await waitUntil('only done-1 to remain', async () => (await table.locator('tr[data-gid]').count()) === 1
    && (await table.locator('tr[data-gid="done-1"]').count()) === 1);
}));

test('Transaction shows its state, timeline and branches', () => withPage(async (page) => {
  await gotoReady(page, '/ui/transactions/done-1');
  await commonLayout(page, /Transaction|done-1/);
  assert.equal((await text(page, '[data-testid=txn-state-badge]')).trim(), 'committed');
  assert.equal(await page.locator('tr[data-branch="b1"]').getAttribute('data-state'), 'committed');
  assert.equal(await page.locator('button[data-testid=txn-abort]').count(), 0, 'no abort once decided');
  assert.match(await text(page, '[data-testid=txn-timeline]'), /created/i);

  await gotoReady(page, '/ui/transactions/stuck-1');
  assert.equal((await text(page, '[data-testid=txn-state-badge]')).trim(), 'preparing');
  const branch = page.locator('tr[data-branch="b1"]');
  assert.equal(await branch.getAttribute('data-state'), 'preparing');
  assert.match(await branch.innerText(), /425/, 'the last error');
  await page.locator('button[data-testid=txn-abort]').waitFor();
  await screenshot(page, 'transaction');
}));

test('Aborting a stuck transaction (confirmed) aborts it in the UI and the API', () => withPage(async (page) => {
  await gotoReady(page, '/ui/transactions/stuck-1');
  assert.equal((await text(page, '[data-testid=txn-state-badge]')).trim(), 'preparing');
  await page.click('button[data-testid=txn-abort]');
  const dialog = page.locator('dialog[data-testid=confirm]');
  await dialog.waitFor();
  assert.equal(await dialog.evaluate((d) => d.open), true);
  assert.equal(await txnState(server, 'stuck-1'), 'preparing', 'nothing happens before confirming');
  await dialog.locator('button[data-testid=confirm-yes]').click();
  await waitUntil('the badge to say aborted', async () => (await text(page, '[data-testid=txn-state-badge]')).trim() === 'aborted');
  assert.equal(await txnState(server, 'stuck-1'), 'aborted');
  await waitUntil('the abort button to go', async () => (await page.locator('button[data-testid=txn-abort]').count()) === 0
    || !(await page.locator('button[data-testid=txn-abort]').isVisible()));
  assert.ok(seed.participant.calls.some((c) => c.base === 'stuck' && c.phase === 'abort'), 'the participant was told to abort');
}));

test('Key/value folders, editor and lock holder render', () => withPage(async (page) => {
  await gotoReady(page, '/ui/kv/');
  await commonLayout(page, /Key\/Value|KV/);
  const list = page.locator('ul[data-testid=kv-list]');
  for (const key of ['config/', 'flags/', 'locks/']) assert.equal(await list.locator(`li[data-key="${key}"]`).count(), 1, key);
  assert.equal(await page.locator('[data-testid=kv-new]').count(), 1);
  await screenshot(page, 'kv');

  await list.locator('li[data-key="config/"] a').first().click();
  await waitNavigated(page, '/ui/kv/config/');
  assert.equal(await page.locator('li[data-key="config/app/"]').count(), 1);
  assert.equal(await page.locator('li[data-key="config/db/"]').count(), 1);

  await gotoReady(page, '/ui/kv/config/app/name');
  assert.equal(await page.locator('textarea[data-testid=kv-value]').inputValue(), 'trellis');
  await screenshot(page, 'kv-editor');

  await gotoReady(page, '/ui/kv/locks/leader');
  assert.equal(await page.locator('textarea[data-testid=kv-value]').inputValue(), 'gateway-1');
  const shown = await text(page, 'main');
  assert.ok(shown.includes(seed.sessionId) || shown.includes('leader-election'), 'the session holding the key is shown');
}));

test('Sessions lists the session and the lock it holds', () => withPage(async (page) => {
  await gotoReady(page, '/ui/sessions');
  await commonLayout(page, 'Sessions');
  const row = page.locator(`table[data-testid=sessions-table] tr[data-session="${seed.sessionId}"]`);
  const shown = await row.innerText();
  for (const part of ['leader-election', 'ui-node', 'release']) assert.match(shown, new RegExp(part));
  const lock = row.locator('[data-lock="locks/leader"]');
  assert.equal(await lock.count(), 1);
  const href = await lock.evaluate((el) => (el.matches('a') ? el : el.querySelector('a'))?.getAttribute('href'));
  assert.equal(href, '/ui/kv/locks/leader');
  await screenshot(page, 'sessions');
}));

// --- accessibility -----------------------------------------------------------------------------

const A11Y_PAGES = () => [
  ['overview', '/ui/'],
  ['services', '/ui/services'],
  ['service', '/ui/services/orders'],
  ['topology', '/ui/topology'],
  ['traces', '/ui/traces?service=gateway'],
  ['trace', `/ui/traces/${seed.errorTrace.traceId}`],
  ['transactions', '/ui/transactions'],
  ['transaction', '/ui/transactions/done-1'],
  ['kv', '/ui/kv/'],
  ['kv-editor', '/ui/kv/config/app/name'],
  ['kv-new', '/ui/kv/?new'],
  ['sessions', '/ui/sessions'],
];

test('axe-core finds no serious or critical violation on any page', async () => {
  const source = axeSource();
  const found = [];
  // axe is injected past the page's CSP (script-src 'self'), in this context only.
  await withPage(async (page) => {
    const states = [...A11Y_PAGES().map(([name, url]) => [name, url, null]),
      // The dialogs, open.
      ['confirm dialog', '/ui/services/orders', () => page.click('tr[data-instance="orders-1"] button[data-testid=deregister]')],
      ['token dialog', '/ui/', () => page.click('[data-testid=token-button]')]];
    for (const [name, url, open] of states) {
      await gotoReady(page, url);
      if (open) {
        await open();
        await page.waitForTimeout(300);
      }
      await page.evaluate(source);
      const violations = await page.evaluate(async () => {
        const result = await window.axe.run(document, { resultTypes: ['violations'] });
        return result.violations.map((v) => ({
          id: v.id, impact: v.impact, help: v.help,
          nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(' ')}: ${n.failureSummary?.split('\n').slice(1).join('; ')}`),
        }));
      });
      for (const v of violations) {
        const line = `${name} (${url}): [${v.impact}] ${v.id}: ${v.help}\n      ${v.nodes.join('\n      ')}`;
        if (v.impact === 'serious' || v.impact === 'critical') found.push(line);
        else console.log(`axe (${v.impact}, not failing): ${line}`);
      }
    }
  }, { contextOptions: { bypassCSP: true } });
  assert.deepEqual(found, [], `axe-core violations:\n${found.join('\n')}`);
});
