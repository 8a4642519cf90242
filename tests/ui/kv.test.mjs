// The key/value editor: create, read back, edit and delete through the UI, checked through the
// API; a change made by someone else while the editor is open is detected, never overwritten
// silently, and can then be taken or overwritten explicitly.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchBrowser, gotoReady, waitNavigated, waitUntil, kvPut, kvGet,
  screenshot,
  withPage as withPageOf,
} from './support.mjs';

let server;
let browser;

before(async () => {
  server = await startServer();
  await kvPut(server, 'app/existing', 'x');
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A fresh page that must report no console error, exception or dialog. */
const withPage = (body, options) => withPageOf(browser, server, body, options);

const KEY = 'app/ui-test/greeting';

test('create, read back, edit and delete a key through the editor', () => withPage(async (page) => {
  // Create from the root folder's "new" link (the key field then holds the whole key).
  await gotoReady(page, '/ui/kv/');
  await page.click('[data-testid=kv-new]');
  await page.waitForURL((u) => u.pathname === '/ui/kv/' && u.searchParams.has('new'));
  await page.locator('main[data-ready="true"] input[data-testid=kv-key]').waitFor();
  await page.fill('input[data-testid=kv-key]', KEY);
  await page.fill('textarea[data-testid=kv-value]', 'hello, world\nline two');
  await page.click('button[data-testid=kv-save]');
  await waitUntil('the key in the API', async () => (await kvGet(server, KEY)) === 'hello, world\nline two');
  // The editor moves on to the key's own URL.
  await waitNavigated(page, `/ui/kv/${KEY}`);
  assert.equal(await page.locator('textarea[data-testid=kv-value]').inputValue(), 'hello, world\nline two');

  // Creating it again (cas=0) must not overwrite the existing key.
  await gotoReady(page, '/ui/kv/?new');
  await page.fill('input[data-testid=kv-key]', KEY);
  await page.fill('textarea[data-testid=kv-value]', 'clobbered');
  await page.click('button[data-testid=kv-save]');
  await page.locator('[data-testid=kv-conflict]').waitFor({ timeout: 5_000 });
  assert.equal(await kvGet(server, KEY), 'hello, world\nline two', 'creating over an existing key overwrote it');

  // Edit.
  await gotoReady(page, `/ui/kv/${KEY}`);
  assert.equal(await page.locator('input[data-testid=kv-key]').count(), 0, 'an existing key is not renamed in the editor');
  await page.fill('textarea[data-testid=kv-value]', 'edited ✓');
  await page.click('button[data-testid=kv-save]');
  await waitUntil('the edit in the API', async () => (await kvGet(server, KEY)) === 'edited ✓');
  await page.waitForTimeout(300);
  assert.equal(await page.locator('[data-testid=kv-conflict]').count(), 0, 'no conflict for a plain edit');

  // A second edit from the same editor works too (it took the new ModifyIndex after saving).
  await page.fill('textarea[data-testid=kv-value]', 'edited twice');
  await page.click('button[data-testid=kv-save]');
  await waitUntil('the second edit in the API', async () => (await kvGet(server, KEY)) === 'edited twice');
  assert.equal(await page.locator('[data-testid=kv-conflict]').count(), 0, 'no conflict for a second edit');

  // Delete: cancelled first, then confirmed.
  await page.click('button[data-testid=kv-delete]');
  const dialog = page.locator('dialog[data-testid=confirm]');
  await dialog.waitFor();
  await dialog.locator('button[data-testid=confirm-no]').click();
  await waitUntil('the dialog to close', async () => !(await dialog.evaluate((d) => d.open)));
  assert.equal(await kvGet(server, KEY), 'edited twice', 'cancelled delete kept the key');
  await page.click('button[data-testid=kv-delete]');
  await dialog.waitFor();
  await dialog.locator('button[data-testid=confirm-yes]').click();
  await waitUntil('the key gone from the API', async () => (await kvGet(server, KEY)) === null);
  // Back in the folder, the key is not listed.
  await waitUntil('the folder without the key', async () => {
    const url = new URL(page.url());
    return url.pathname.endsWith('/') && (await page.locator(`li[data-key="${KEY}"]`).count()) === 0;
  });
}));

test('a concurrent change is detected, shown, and only overwritten on request', () => withPage(async (page) => {
  const key = 'app/ui-test/conflict';
  await kvPut(server, key, 'original');
  await gotoReady(page, `/ui/kv/${key}`);
  const value = page.locator('textarea[data-testid=kv-value]');
  assert.equal(await value.inputValue(), 'original');

  // Someone edits the key while this editor is open with unsaved changes.
  await value.fill('mine');
  await kvPut(server, key, 'theirs');
  await page.waitForTimeout(1_500); // time for a live update to arrive
  await page.click('button[data-testid=kv-save]');
  const conflict = page.locator('[data-testid=kv-conflict]');
  await conflict.waitFor({ timeout: 5_000 });
  await waitUntil('the conflict to show the value now stored', async () => (await conflict.innerText()).includes('theirs'));
  assert.equal(await kvGet(server, key), 'theirs', 'the other change was overwritten silently');
  await screenshot(page, 'kv-conflict');

  // Overwrite explicitly.
  await conflict.locator('button[data-testid=kv-conflict-overwrite]').click();
  await waitUntil('mine saved', async () => (await kvGet(server, key)) === 'mine');
  await waitUntil('the conflict to go', async () => (await conflict.count()) === 0 || !(await conflict.isVisible()));

  // Another concurrent change; this time take theirs.
  await value.fill('mine again');
  await kvPut(server, key, 'theirs again');
  await page.waitForTimeout(1_500);
  await page.click('button[data-testid=kv-save]');
  await conflict.waitFor({ timeout: 5_000 });
  await waitUntil('the conflict to show theirs again', async () => (await conflict.innerText()).includes('theirs again'));
  await conflict.locator('button[data-testid=kv-conflict-reload]').click();
  await waitUntil('the editor to hold theirs', async () => (await value.inputValue()) === 'theirs again');
  assert.equal(await kvGet(server, key), 'theirs again');

  // Deleted meanwhile: saving does not resurrect it silently either.
  await value.fill('after delete');
  await server.api.del(`/v1/kv/${key}`);
  await page.waitForTimeout(1_500);
  await page.click('button[data-testid=kv-save]');
  await page.waitForTimeout(1_000);
  assert.equal(await kvGet(server, key), null, 'a key deleted by someone else was written again silently');
}));

test('a binary value is shown as such and not editable as text', () => withPage(async (page) => {
  const key = 'app/ui-test/binary';
  await server.api.put(`/v1/kv/${key}`, new Uint8Array([0xff, 0xfe, 0x00, 0x80, 0xc3]));
  await gotoReady(page, `/ui/kv/${key}`);
  assert.match(await page.locator('main').innerText(), /binary,?\s*5 bytes/i);
  const textarea = page.locator('textarea[data-testid=kv-value]');
  if (await textarea.count()) {
    assert.ok(await textarea.evaluate((t) => t.disabled || t.readOnly), 'a binary value\'s textarea is not editable');
  }
  const save = page.locator('button[data-testid=kv-save]');
  if (await save.count() && await save.isEnabled() && await save.isVisible()) {
    await save.click();
    await page.waitForTimeout(500);
  }
  const [entry] = await server.api.get(`/v1/kv/${key}`);
  assert.deepEqual([...Buffer.from(entry.Value, 'base64')], [0xff, 0xfe, 0x00, 0x80, 0xc3], 'the bytes are unchanged');
  // It can still be deleted.
  await page.click('button[data-testid=kv-delete]');
  await page.locator('dialog[data-testid=confirm] button[data-testid=confirm-yes]').click();
  await waitUntil('the binary key gone', async () => (await kvGet(server, key)) === null);
}));
