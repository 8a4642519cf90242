// Live updates without reload, a check's colour change, hostile names kept inert, and keyboard
// use, against one server.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchBrowser, gotoReady, waitNavigated, waitUntil, registerService,
  setCheck, kvPut, holdLock, postSpans, hexId, startParticipant, submitTxn, txnState, colours, encodePath,
  screenshot,
  withPage as withPageOf,
} from './support.mjs';

let server;
let browser;
let participant;

before(async () => {
  server = await startServer();
  await registerService(server, { name: 'gateway', id: 'gateway-1', port: 8080, tags: ['http'] });
  await registerService(server, { name: 'gateway', id: 'gateway-2', port: 8081, tags: ['http'] });
  await registerService(server, { name: 'users', id: 'users-1', port: 9001 });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await participant?.close();
  await server?.stop();
});

/** A fresh page that must report no console error, exception or dialog. */
const withPage = (body, options) => withPageOf(browser, server, body, options);

/** Marks the document, to tell later whether it was reloaded. */
const markDocument = (page) => page.evaluate(() => { window.__notReloaded = true; });
const assertNotReloaded = async (page) => assert.equal(await page.evaluate(() => window.__notReloaded), true, 'the page was reloaded');

test('a registration appears on the open Services page without reload', () => withPage(async (page) => {
  await gotoReady(page, '/ui/services');
  const table = page.locator('table[data-testid=services-table]');
  assert.equal(await table.locator('tr[data-service="payments"]').count(), 0);
  await markDocument(page);
  const registered = Date.now();
  await registerService(server, { name: 'payments', id: 'payments-1', port: 9300, tags: ['pci'] });
  await table.locator('tr[data-service="payments"]').waitFor({ timeout: 2_500 });
  console.log(`registration → row shown: ${Date.now() - registered} ms`);
  // Registered with its TTL check critical, then passed at once: the row follows.
  await waitUntil('payments to show passing', async () => (await table.locator('tr[data-service="payments"]').getAttribute('data-health')) === 'passing', { timeout: 2_500 });
  await assertNotReloaded(page);

  // And it goes as live when deregistered.
  await server.api.put('/v1/agent/service/deregister/payments-1');
  await waitUntil('the payments row to go', async () => (await table.locator('tr[data-service="payments"]').count()) === 0, { timeout: 2_500 });

  // The overview's counters follow too.
  await gotoReady(page, '/ui/');
  await markDocument(page);
  const count = async () => (await page.locator('[data-testid=count-services]').innerText()).trim();
  const services = (await server.api.get('/v1/internal/ui/services')).length; // gateway, users and consul itself
  await waitUntil(`count-services = ${services}`, async () => (await count()) === String(services));
  await registerService(server, { name: 'payments', id: 'payments-1', port: 9300 });
  await waitUntil(`count-services = ${services + 1} without reload`, async () => (await count()) === String(services + 1), { timeout: 2_500 });
  await assertNotReloaded(page);
}));

test('a check turning critical changes the instance\'s health and colour', () => withPage(async (page) => {
  await gotoReady(page, '/ui/services/gateway');
  const row = page.locator('tr[data-instance="gateway-1"]');
  const check = row.locator('[data-check="gateway-1:ttl"]');
  assert.equal(await row.getAttribute('data-health'), 'passing');
  assert.equal(await check.getAttribute('data-status'), 'passing');
  const badge = 'tr[data-instance="gateway-1"] [data-check="gateway-1:ttl"]';
  const rowOwn = async () => row.evaluate((el) => { const s = getComputedStyle(el); return [s.color, s.backgroundColor, s.borderLeftColor].join(' '); });
  const before = { badge: await colours(page, badge), row: await rowOwn() };
  await markDocument(page);

  await setCheck(server, 'gateway-1:ttl', 'critical', 'disk full');
  await waitUntil('gateway-1 to turn critical', async () => (await row.getAttribute('data-health')) === 'critical'
    && (await check.getAttribute('data-status')) === 'critical', { timeout: 2_500 });
  await waitUntil('the check output to show', async () => /disk full/.test(await check.innerText()), { timeout: 2_500 });
  // Give a CSS transition time to end before reading the colours.
  await page.waitForTimeout(400);
  const afterCritical = { badge: await colours(page, badge), row: await rowOwn() };
  assert.notDeepEqual(afterCritical.badge, before.badge, `the check badge's colours did not change: ${JSON.stringify(before.badge)}`);
  // Not only that the output's text appeared: a colour the passing badge had is gone.
  assert.ok(before.badge.some((c) => !afterCritical.badge.includes(c)), `the badge kept all its passing colours: ${JSON.stringify(afterCritical.badge)}`);
  await screenshot(page, 'service-critical');
  // The other instance is untouched.
  assert.equal(await page.locator('tr[data-instance="gateway-2"]').getAttribute('data-health'), 'passing');

  await setCheck(server, 'gateway-1:ttl', 'passing', 'ok again');
  await waitUntil('gateway-1 to pass again', async () => (await row.getAttribute('data-health')) === 'passing', { timeout: 2_500 });
  await page.waitForTimeout(400);
  assert.deepEqual(await colours(page, badge), before.badge, 'passing looks as it did (the same colours)');
  await assertNotReloaded(page);

  // Both transitions are in the check history.
  const history = page.locator('[data-testid=check-history]');
  await waitUntil('the history to show the critical transition with its output', async () => {
    const t = await history.innerText();
    return /critical/.test(t) && /disk full/.test(t);
  }, { timeout: 2_500 });
}));

// --- hostile names -----------------------------------------------------------------------------

const IMG = '<img src=x onerror=alert(1)>';
const SCRIPT = '"><script>alert(1)</script>';

/** Records every <img>, <script>, <iframe> and on* attribute that appears in the document. */
const RECORD_INSERTIONS = () => {
  window.__inserted = [];
  const watch = (node) => {
    if (node.nodeType !== 1) return;
    for (const el of [node, ...node.querySelectorAll('*')]) {
      const tag = el.tagName.toLowerCase();
      // The dashboard's own images and modules come from /ui/assets/; nothing else may appear.
      const own = (el.getAttribute('src') ?? '').startsWith('/ui/assets/');
      if (['iframe', 'object', 'embed', 'frame'].includes(tag) || (['img', 'script'].includes(tag) && !own)) {
        window.__inserted.push(el.outerHTML.slice(0, 200));
      }
      for (const a of el.attributes) if (/^on/i.test(a.name)) window.__inserted.push(`${tag}[${a.name}]`);
    }
  };
  new MutationObserver((records) => {
    for (const r of records) {
      r.addedNodes.forEach(watch);
      if (r.type === 'attributes' && /^on/i.test(r.attributeName)) window.__inserted.push(`[${r.attributeName}] set`);
    }
  }).observe(document, { childList: true, subtree: true, attributes: true });
};

test('hostile names, tags, meta, outputs and values stay inert text', async () => {
  // The registry accepts both names (it does not restrict service names), so they are used as
  // names and also in every other user-supplied field.
  await registerService(server, {
    name: IMG, id: 'hostile-1', port: 7001, tags: [IMG, SCRIPT], meta: { note: IMG, other: SCRIPT },
    status: 'critical', output: SCRIPT,
  });
  await registerService(server, { name: SCRIPT, id: 'hostile-2', port: 7002, tags: [IMG], meta: { note: SCRIPT }, status: 'warning', output: IMG });
  const key = `hostile/${IMG}`;
  await kvPut(server, key, SCRIPT);
  await kvPut(server, 'hostile/plain', IMG);
  const sessionId = await holdLock(server, { name: IMG, key: 'hostile/plain', value: IMG });
  const traceId = hexId(16);
  const root = hexId(8);
  const child = hexId(8);
  await postSpans(server, traceId, [
    { service: IMG, instance: SCRIPT, name: SCRIPT, spanId: root, start: 0, duration: 20, attributes: { note: IMG, [IMG]: SCRIPT } },
    { service: SCRIPT, instance: IMG, name: IMG, spanId: child, parentId: root, start: 2, duration: 10, error: IMG,
      events: [{ name: IMG, attributes: { message: SCRIPT } }] },
  ]);
  participant = await startParticipant({ hostile: { prepare: { status: 409, body: IMG } } });
  await submitTxn(server, 'hostile-txn', participant.url('hostile'), { payload: { note: SCRIPT } });
  await waitUntil('hostile-txn aborted', async () => (await txnState(server, 'hostile-txn')) === 'aborted');

  const pages = [
    ['/ui/', [IMG]],
    ['/ui/services', [IMG, SCRIPT]],
    [`/ui/services/${encodeURIComponent(IMG)}`, [IMG, SCRIPT]],
    [`/ui/services/${encodeURIComponent(SCRIPT)}`, [IMG, SCRIPT]],
    ['/ui/kv/hostile/', [IMG]],
    [`/ui/kv/${encodePath(key)}`, [SCRIPT]],
    ['/ui/kv/hostile/plain', [IMG]],
    ['/ui/sessions', [IMG]],
    [`/ui/traces?service=${encodeURIComponent(IMG)}`, [SCRIPT]],
    [`/ui/traces/${traceId}`, [IMG, SCRIPT]],
    ['/ui/topology', [IMG, SCRIPT]],
    ['/ui/transactions', ['hostile-txn']],
    ['/ui/transactions/hostile-txn', [IMG]],
  ];
  const missing = [];
  await withPage(async (page) => {
    await page.addInitScript(RECORD_INSERTIONS);
    for (const [url, literals] of pages) {
      await gotoReady(page, url);
      if (url === `/ui/traces/${traceId}`) {
        // Open both spans' details too: attributes, events, resource tags.
        for (const id of [root, child]) {
          await page.locator(`[data-span="${id}"]`).click();
          await page.locator('[data-testid=span-details]').waitFor();
          await page.waitForTimeout(200);
          const details = await page.locator('[data-testid=span-details]').innerText();
          if (!details.includes(IMG) || !details.includes(SCRIPT)) missing.push(`${url} span ${id} details: ${IMG} and ${SCRIPT}`);
        }
      }
      await page.waitForTimeout(300);
      const shown = await page.locator('main').innerText();
      const value = await page.locator('textarea[data-testid=kv-value]').count() ? await page.locator('textarea[data-testid=kv-value]').inputValue() : '';
      for (const literal of literals) {
        if (!shown.includes(literal) && !value.includes(literal)) missing.push(`${url}: ${literal}`);
      }
      const inserted = await page.evaluate(() => window.__inserted);
      assert.deepEqual(inserted, [], `${url}: markup from data became elements`);
      assert.equal(await page.locator('img[src="x"], [onerror], [onclick], [onload]').count(), 0, `${url}: injected element`);
      if (url === `/ui/services/${encodeURIComponent(IMG)}`) await screenshot(page, 'hostile');
    }
    assert.equal(await page.evaluate(() => typeof window.__hostileRan), 'undefined');
  });
  assert.deepEqual(missing, [], 'hostile text shown literally');
  await server.api.put(`/v1/session/destroy/${sessionId}`);
});

// --- keyboard ----------------------------------------------------------------------------------

const focused = (page) => page.evaluate(() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const s = getComputedStyle(el);
  const r = el.getBoundingClientRect();
  return {
    tag: el.tagName.toLowerCase(),
    text: (el.innerText || el.getAttribute('aria-label') || '').trim(),
    href: el.getAttribute('href'),
    inNav: !!el.closest('nav[aria-label="Main"]'),
    inMain: !!el.closest('main'),
    // A focus indicator: an outline (Chromium's own is `auto`) or a box shadow.
    indicator: (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== 'none',
    onScreen: r.width > 1 && r.height > 1 && r.bottom > 0 && r.right > 0 && r.top < innerHeight && r.left < innerWidth,
  };
});

test('keyboard: skip link, nav links in order, Enter navigates, focus visible, Escape cancels', () => withPage(async (page) => {
  await gotoReady(page, '/ui/');
  await page.keyboard.press('Tab');
  const skip = await focused(page);
  assert.ok(skip, 'Tab focuses something');
  assert.match(skip.text, /skip to content/i, `first Tab stop is the skip link, got ${JSON.stringify(skip)}`);
  assert.equal(skip.href, '#main');
  assert.ok(skip.onScreen, 'the skip link is visible when focused');
  assert.ok(skip.indicator, 'the skip link shows focus');

  // At most one stop (the product name's link) between the skip link and the nav.
  let at;
  for (let i = 0; i < 2; i++) {
    await page.keyboard.press('Tab');
    at = await focused(page);
    if (at?.inNav) break;
  }
  assert.ok(at?.inNav, `Tab reaches the main nav, got ${JSON.stringify(at)}`);
  const order = ['Overview', 'Services', 'Topology', 'Traces', 'Transactions', 'Key/Value', 'Sessions'];
  for (const [i, name] of order.entries()) {
    if (i > 0) {
      await page.keyboard.press('Tab');
      at = await focused(page);
    }
    assert.equal(at?.inNav && at.text, name, `nav link ${i + 1}`);
    assert.ok(at.indicator, `${name} shows focus`);
  }

  // Enter on a nav link navigates.
  await page.locator('nav[aria-label="Main"] a', { hasText: /^Services$/ }).focus();
  await page.keyboard.press('Enter');
  await waitNavigated(page, '/ui/services');
  assert.equal((await page.locator('h1').innerText()).trim(), 'Services');
  assert.equal((await page.locator('nav[aria-label="Main"] [aria-current="page"]').innerText()).trim(), 'Services');

  // The skip link moves on to the page's content.
  await gotoReady(page, '/ui/services');
  await page.keyboard.press('Tab');
  await page.keyboard.press('Enter');
  await page.keyboard.press('Tab');
  at = await focused(page);
  assert.ok(at?.inMain, `after the skip link, Tab goes into <main>, got ${JSON.stringify(at)}`);

  // The confirm dialog cancels with Escape and nothing happens.
  await gotoReady(page, '/ui/services/gateway');
  const toggle = page.locator('tr[data-instance="gateway-2"] button[data-testid=maintenance-toggle]');
  await toggle.focus();
  await page.keyboard.press('Enter');
  const dialog = page.locator('dialog[data-testid=confirm]');
  await dialog.waitFor();
  assert.equal(await dialog.evaluate((d) => d.open), true);
  assert.ok(await page.evaluate(() => !!document.activeElement?.closest('dialog[data-testid=confirm]')), 'focus moves into the dialog');
  await page.keyboard.press('Escape');
  await waitUntil('the dialog to close', async () => !(await dialog.evaluate((d) => d.open)));
  const focusBack = await page.evaluate(() => document.activeElement?.dataset?.testid);
  assert.equal(focusBack, 'maintenance-toggle', 'focus returns to the button');
  await page.waitForTimeout(300);
  const checks = await server.api.get('/v1/health/checks/gateway');
  assert.ok(!checks.some((c) => c.CheckID === '_service_maintenance:gateway-2'), 'Escape did not enable maintenance');

  // ... and confirms with the yes button (the toggle then reads "Disable maintenance").
  await toggle.focus();
  await page.keyboard.press('Enter');
  await dialog.locator('button[data-testid=confirm-yes]').click();
  await waitUntil('maintenance on in the API', async () => (await server.api.get('/v1/health/checks/gateway'))
    .some((c) => c.CheckID === '_service_maintenance:gateway-2'));
  await waitUntil('the toggle to offer disabling', async () => /Disable maintenance/.test(await toggle.innerText()));
  assert.equal(await page.locator('tr[data-instance="gateway-2"]').getAttribute('data-health'), 'critical');
}));

// --- instance actions, token, offline ----------------------------------------------------------

/** Waits (briefly) for the confirm dialog to be open; fails saying what did not ask. */
async function confirmOpens(page, what) {
  const dialog = page.locator('dialog[data-testid=confirm]');
  await waitUntil(`${what} to ask first in dialog[data-testid=confirm]`, async () => dialog.evaluate((d) => d.open), { timeout: 3_000 });
  return dialog;
}

test('maintenance on and off, each confirmed, act on the API', () => withPage(async (page) => {
  await registerService(server, { name: 'users', id: 'users-3', port: 9003 });
  await gotoReady(page, '/ui/services/users');
  const row = page.locator('tr[data-instance="users-3"]');
  await row.waitFor();
  const toggle = row.locator('button[data-testid=maintenance-toggle]');
  const maintenance = async () => (await server.api.get('/v1/health/checks/users')).some((c) => c.CheckID === '_service_maintenance:users-3');

  await toggle.click();
  let dialog = await confirmOpens(page, '"Enable maintenance"');
  await dialog.locator('button[data-testid=confirm-yes]').click();
  await waitUntil('maintenance on', maintenance);
  await waitUntil('the row to turn critical', async () => (await row.getAttribute('data-health')) === 'critical');
  await waitUntil('the toggle to read "Disable maintenance"', async () => /Disable maintenance/.test(await toggle.innerText()));

  // The contract: both buttons ask first.
  await toggle.click();
  dialog = await confirmOpens(page, '"Disable maintenance"');
  assert.equal(await maintenance(), true, 'nothing happens before confirming');
  await dialog.locator('button[data-testid=confirm-yes]').click();
  await waitUntil('maintenance off', async () => !(await maintenance()));
  await waitUntil('the row to pass again', async () => (await row.getAttribute('data-health')) === 'passing');
}));

test('deregister asks first: "no" keeps the instance, "yes" removes it', () => withPage(async (page) => {
  await registerService(server, { name: 'users', id: 'users-2', port: 9002 });
  await gotoReady(page, '/ui/services/users');
  const row = page.locator('tr[data-instance="users-2"]');
  await row.waitFor();
  const registered = async () => (await server.api.get('/v1/health/service/users')).some((e) => e.Service.ID === 'users-2');
  await row.locator('button[data-testid=deregister]').click();
  let dialog = await confirmOpens(page, '"Deregister"');
  await dialog.locator('button[data-testid=confirm-no]').click();
  await waitUntil('the dialog to close', async () => !(await dialog.evaluate((d) => d.open)));
  assert.equal(await registered(), true, '"no" deregistered it');
  await row.locator('button[data-testid=deregister]').click();
  dialog = await confirmOpens(page, '"Deregister"');
  await dialog.locator('button[data-testid=confirm-yes]').click();
  await waitUntil('users-2 gone from the API', async () => !(await registered()));
  await waitUntil('users-2 gone from the table', async () => (await row.count()) === 0);
  assert.equal(await page.locator('tr[data-instance="users-1"]').count(), 1);
}));

test('the token dialog keeps a token and sends it as X-Consul-Token; an unknown or refused token opens it', () => withPage(async (page) => {
  // A real token: the registry's first management token.
  const { SecretID: secret } = await server.api.put('/v1/acl/bootstrap');
  await gotoReady(page, '/ui/services');
  await page.click('[data-testid=token-button]');
  const dialog = page.locator('dialog[data-testid=token-dialog]');
  await dialog.waitFor();
  assert.equal(await dialog.evaluate((d) => d.open), true);
  const input = dialog.locator('input:not([type=hidden]):not([type=checkbox])').first();
  await input.fill(secret);
  await input.press('Enter');
  await waitUntil('the token dialog to close', async () => !(await dialog.evaluate((d) => d.open)));
  const stored = await page.evaluate(() => Object.keys(sessionStorage).map((k) => sessionStorage.getItem(k)));
  assert.ok(stored.includes(secret), `token kept in sessionStorage: ${JSON.stringify(stored)}`);
  // The next API requests carry it (the page's live reads, or the next page's).
  const sent = page.waitForRequest((r) => new URL(r.url()).pathname.startsWith('/v1/') && r.headers()['x-consul-token'] === secret, { timeout: 10_000 });
  await page.locator('nav[aria-label="Main"] a', { hasText: /^Sessions$/ }).click();
  await sent;

  // A token the registry does not know: it answers 403 "ACL not found", and the dialog opens.
  await page.click('[data-testid=token-button]');
  await input.fill('no-such-token');
  await input.press('Enter');
  await waitUntil('the token dialog to open on "ACL not found"', async () => dialog.evaluate((d) => d.open));
  assert.match(await dialog.innerText(), /ACL not found|token/i);
  await input.fill(secret);
  await input.press('Enter');
  await waitUntil('the token dialog to close again', async () => !(await dialog.evaluate((d) => d.open)));

  // An answer 403 "Permission denied" opens the dialog with a message.
  await page.route('**/v1/internal/ui/services*', (route) => route.fulfill({ status: 403, contentType: 'text/plain', body: 'Permission denied: token lacks service:read' }));
  await page.locator('nav[aria-label="Main"] a', { hasText: /^Services$/ }).click();
  await waitUntil('the token dialog to open on 403', async () => dialog.evaluate((d) => d.open));
  assert.match(await dialog.innerText(), /permission denied|token/i);
  await page.keyboard.press('Escape');
  await page.unroute('**/v1/internal/ui/services*');
  // The 403s themselves are logged by the browser as failed resources; those are expected here.
  page.problems = page.problems.filter((p) => !/status of 403/.test(p));
}));

test('the live indicator says "offline" when the server goes away', () => withPage(async (page) => {
  await gotoReady(page, '/ui/services');
  const live = page.locator('[data-testid=live]');
  await waitUntil('"live"', async () => (await live.innerText()).trim().toLowerCase() === 'live');
  await server.stop();
  await waitUntil('"offline"', async () => (await live.innerText()).trim().toLowerCase() === 'offline', { timeout: 15_000 });
  // Failed requests to a stopped server are logged by the browser; nothing else may be.
  page.problems = page.problems.filter((p) => !/Failed to load resource: net::ERR_/.test(p));
}));
