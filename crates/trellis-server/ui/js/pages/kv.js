// Key/value page: folder browser with breadcrumb, and an editor that saves with check-and-set and shows conflicts.
import { h, fill, patchList } from '../dom.js';
import { watch, request, get, encodePath, withQuery } from '../api.js';
import { errorSlot, pager, confirm, announce } from '../ui.js';

const kvUrl = (key) => '/ui/kv/' + encodePath(key);
const apiUrl = (key) => '/v1/kv/' + encodePath(key);

/** base64 → {text} for UTF-8 values, or {binary: byteLength}. */
export function decodeValue(b64) {
  if (b64 === null || b64 === undefined) return { text: '', bytes: 0 };
  let bin;
  try { bin = atob(b64); } catch { return { binary: 0 }; }
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  try {
    return { text: new TextDecoder('utf-8', { fatal: true }).decode(bytes), bytes: bytes.length };
  } catch {
    return { binary: bytes.length };
  }
}

function parentOf(key) {
  const trimmed = key.endsWith('/') ? key.slice(0, -1) : key;
  const i = trimmed.lastIndexOf('/');
  return i < 0 ? '' : trimmed.slice(0, i + 1);
}

function breadcrumb(path, current) {
  const parts = path.split('/').filter((p, i, a) => p !== '' || i < a.length - 1);
  const items = [h('li', null, current === '' && path === '' ? h('span', { 'aria-current': 'page' }, 'Key/Value') : h('a', { href: '/ui/kv/' }, 'Key/Value'))];
  let acc = '';
  const folders = path.endsWith('/') || path === '' ? parts : parts.slice(0, -1);
  folders.forEach((seg, i) => {
    acc += seg + '/';
    const last = i === folders.length - 1 && (path.endsWith('/')) && !current;
    items.push(h('li', null, last ? h('span', { 'aria-current': 'page' }, seg || '(empty)') : h('a', { href: kvUrl(acc) }, seg || '(empty)')));
  });
  if (current) items.push(h('li', null, h('span', { 'aria-current': 'page', class: 'mono' }, current)));
  return h('nav', { class: 'breadcrumb', 'aria-label': 'Breadcrumb' }, h('ol', null, items));
}

export function mount(ctx) {
  const raw = ctx.rawParams[0] || '';
  const path = raw.split('/').map((seg) => { try { return decodeURIComponent(seg); } catch { return seg; } }).join('/');
  const isNew = ctx.query.has('new');
  if (path === '' || path.endsWith('/')) {
    if (isNew) return editor(ctx, path, true);
    return folder(ctx, path);
  }
  return editor(ctx, path, isNew);
}

function folder(ctx, prefix) {
  ctx.title(prefix ? `Key/Value: ${prefix}` : 'Key/Value');
  const { signal } = ctx;
  const err = errorSlot();
  const list = h('ul', { class: 'kv-list', dataset: { testid: 'kv-list' }, 'aria-label': prefix ? `Keys in ${prefix}` : 'Keys' });
  const pg = pager('Key pages', (p) => { ctx.setQuery({ page: p > 1 ? p : null }); render(); });
  pg.page = ctx.query.get('page') || 1;
  const count = h('p', { class: 'sub' });
  ctx.main.append(
    breadcrumb(prefix, ''),
    h('div', { class: 'page-head' },
      h('div', null, h('h1', null, prefix ? h('span', { class: 'mono' }, prefix) : 'Key/Value'), count),
      h('div', { class: 'actions' }, h('a', { class: 'btn btn-primary', href: kvUrl(prefix) + '?new', dataset: { testid: 'kv-new' } }, 'Create key'))),
    err.el, list, pg.el);

  let keys = null;
  function render() {
    if (!keys) return;
    const page = pg.slice(keys);
    count.textContent = `${keys.length} entr${keys.length === 1 ? 'y' : 'ies'}`;
    if (!page.length) {
      patchList(list, [h('li', { class: 'empty', key: '__empty' }, prefix ? 'This folder is empty.' : 'There are no keys yet.')]);
      return;
    }
    patchList(list, page.map((k) => {
      const isFolder = k.endsWith('/');
      const name = k.slice(prefix.length) || k;
      return h('li', { key: k, dataset: { key: k } },
        h('a', { href: kvUrl(k) }, h('span', { class: 'kind' }, isFolder ? 'folder' : 'key'), h('span', null, name)));
    }));
  }

  watch(withQuery(apiUrl(prefix), { keys: true, separator: '/' }), (data) => {
    err.clear();
    const all = (Array.isArray(data) ? data : []).filter((k) => k !== prefix);
    keys = all.sort((a, b) => {
      const fa = a.endsWith('/'), fb = b.endsWith('/');
      if (fa !== fb) return fa ? -1 : 1;
      return a < b ? -1 : a > b ? 1 : 0;
    });
    render();
    ctx.ready();
  }, { signal, allow404: true, onError: (e) => { err.show(e, 'Keys'); ctx.ready(); } });
}

function editor(ctx, path, isNew) {
  const { signal } = ctx;
  const folderPrefix = isNew ? (path.endsWith('/') || path === '' ? path : parentOf(path)) : parentOf(path);
  ctx.title(isNew ? 'Create key' : `Key/Value: ${path}`);
  const err = errorSlot(), actErr = errorSlot();
  const conflictSlot = h('div');
  const notice = h('div', { 'aria-live': 'polite' });
  const meta = h('div', { class: 'editor-meta' });
  const keyPreview = h('span', { class: 'muted mono' });
  const keyInput = isNew ? h('input', {
    id: 'kv-key', type: 'text', dataset: { testid: 'kv-key' }, autocomplete: 'off', spellcheck: 'false',
    value: isNew && !(path === '' || path.endsWith('/')) ? path.slice(folderPrefix.length) : '', required: true,
  }) : null;
  const valueSlot = h('div', { class: 'field' });
  let textarea = null;
  const save = h('button', { type: 'submit', class: 'btn btn-primary', dataset: { testid: 'kv-save' } }, isNew ? 'Create' : 'Save');
  const del = isNew ? null : h('button', { type: 'button', class: 'btn btn-danger', dataset: { testid: 'kv-delete' } }, 'Delete');
  const form = h('form', { class: 'editor panel', 'aria-label': isNew ? 'New key' : `Edit ${path}` },
    isNew ? h('div', { class: 'field' }, h('label', { for: 'kv-key' }, 'Key'),
      h('div', { class: 'key-input' }, folderPrefix ? h('span', { class: 'mono muted' }, folderPrefix) : null, keyInput), keyPreview) : null,
    valueSlot, meta,
    h('div', { class: 'editor-actions' }, save, h('a', { class: 'btn', href: kvUrl(folderPrefix) }, 'Cancel'), h('span', { class: 'spacer' }), del));
  ctx.main.append(
    breadcrumb(isNew ? folderPrefix : path, isNew ? 'new key' : path.slice(parentOf(path).length)),
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, isNew ? 'Create key' : h('span', { class: 'mono' }, path)))),
    err.el, actErr.el, notice, conflictSlot, form);

  let loaded = null; // {ModifyIndex, ...entry} of what the editor shows; null when absent
  let loadedIndex = 0;

  function fullKey() {
    if (!isNew) return path;
    let k = keyInput.value.trim();
    if (folderPrefix && k.startsWith(folderPrefix)) k = k.slice(folderPrefix.length);
    return folderPrefix + k;
  }
  if (keyInput) {
    const upd = () => { keyPreview.textContent = keyInput.value.trim() ? `Full key: ${fullKey()}` : ''; };
    keyInput.addEventListener('input', upd);
    upd();
  }

  function showValue(entry) {
    const v = entry ? decodeValue(entry.Value) : { text: '' };
    if (v.binary !== undefined) {
      textarea = null;
      fill(valueSlot, h('span', { class: 'label' }, 'Value'), h('p', { class: 'notice' }, `binary, ${v.binary} bytes — it cannot be edited as text here.`));
      save.disabled = true;
    } else {
      if (!textarea) {
        textarea = h('textarea', { id: 'kv-value', dataset: { testid: 'kv-value' }, spellcheck: 'false' });
        valueSlot.replaceChildren(h('label', { for: 'kv-value' }, 'Value'), textarea);
      }
      textarea.value = v.text;
      save.disabled = false;
    }
    if (entry) {
      fill(meta,
        h('span', null, `ModifyIndex ${entry.ModifyIndex}`), h('span', null, `CreateIndex ${entry.CreateIndex}`),
        h('span', null, `Flags ${entry.Flags || 0}`), h('span', null, `LockIndex ${entry.LockIndex || 0}`),
        entry.Session ? h('span', { dataset: { testid: 'kv-session' } }, 'Locked by session ', h('a', { class: 'mono', href: '/ui/sessions' }, entry.Session)) : h('span', null, 'not locked'));
    } else fill(meta, isNew ? h('span', null, 'Created only if no key of that name exists.') : null);
  }

  async function current(key) {
    try {
      const res = await get(apiUrl(key), { signal });
      return (Array.isArray(res) && res[0]) || null;
    } catch (e) {
      if (e.status === 404) return null;
      throw e;
    }
  }

  function showConflict(key, theirs, what) {
    fill(notice);
    const v = theirs ? decodeValue(theirs.Value) : null;
    fill(conflictSlot, h('div', { class: 'conflict', dataset: { testid: 'kv-conflict' }, role: 'alert' },
      h('h2', null, 'Conflict: nothing was saved'),
      h('p', null, what),
      theirs
        ? [h('p', null, `Value stored now (ModifyIndex ${theirs.ModifyIndex}):`),
          v.binary !== undefined ? h('p', null, `binary, ${v.binary} bytes`) : h('pre', { dataset: { testid: 'kv-conflict-value' } }, v.text)]
        : h('p', null, 'The key does not exist any more.'),
      h('div', { class: 'editor-actions' },
        h('button', { type: 'button', class: 'btn', dataset: { testid: 'kv-conflict-reload' }, onclick: () => takeTheirs(key, theirs) }, 'Load their version'),
        h('button', { type: 'button', class: 'btn btn-danger', dataset: { testid: 'kv-conflict-overwrite' }, onclick: () => overwrite(key, theirs) }, 'Overwrite with mine'))));
    const btn = conflictSlot.querySelector('[data-testid=kv-conflict-reload]');
    if (btn) btn.focus();
  }

  function takeTheirs(key, theirs) {
    fill(conflictSlot);
    if (isNew) {
      if (theirs) ctx.navigate(kvUrl(key), { replace: true });
      return;
    }
    loaded = theirs;
    loadedIndex = theirs ? theirs.ModifyIndex : 0;
    showValue(theirs);
    fill(notice);
    announce(theirs ? 'Loaded the stored value' : 'The key was deleted; saving will create it again');
  }

  async function write(key, cas) {
    const value = textarea ? textarea.value : '';
    const res = await request(withQuery(apiUrl(key), { cas }), { method: 'PUT', body: value });
    return res.data === true || res.data === 'true';
  }

  async function afterSave(key) {
    fill(conflictSlot);
    announce(`Saved ${key}`);
    if (isNew) { ctx.navigate(kvUrl(key), { replace: true }); return; }
    const now = await current(key);
    loaded = now;
    loadedIndex = now ? now.ModifyIndex : 0;
    fill(notice);
    if (now) showValueMeta(now);
  }

  function showValueMeta(entry) {
    // refresh the meta line without touching the text the user may keep editing
    const ta = textarea, val = ta && ta.value;
    showValue(entry);
    if (ta && textarea === ta) ta.value = val;
  }

  async function overwrite(key, theirs) {
    actErr.clear();
    try {
      const ok = await write(key, theirs ? theirs.ModifyIndex : 0);
      if (ok) await afterSave(key);
      else showConflict(key, await current(key), 'It changed again while you were deciding.');
    } catch (e) { actErr.show(e, 'Save'); }
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    actErr.clear();
    const key = fullKey();
    if (isNew && (!keyInput.value.trim() || key === folderPrefix)) { actErr.show(new Error('Enter a key name.')); keyInput.focus(); return; }
    save.disabled = true;
    try {
      const ok = await write(key, isNew ? 0 : loadedIndex);
      if (ok) await afterSave(key);
      else {
        const theirs = await current(key);
        showConflict(key, theirs, isNew ? `A key named ${key} already exists.` : `${key} was changed by someone else since you loaded it (you loaded ModifyIndex ${loadedIndex}).`);
      }
    } catch (e2) {
      actErr.show(e2, 'Save');
    } finally {
      save.disabled = !textarea;
    }
  });

  if (del) {
    del.addEventListener('click', async () => {
      const ok = await confirm(`Delete the key ${path}?`, 'Delete', 'Delete key?');
      if (!ok) return;
      actErr.clear();
      try {
        const res = await request(withQuery(apiUrl(path), { cas: loadedIndex }), { method: 'DELETE' });
        if (res.data === true || res.data === 'true') {
          announce(`Deleted ${path}`);
          ctx.navigate(kvUrl(parentOf(path)), { replace: true });
        } else {
          showConflict(path, await current(path), `${path} was changed since you loaded it, so it was not deleted.`);
        }
      } catch (e) { actErr.show(e, 'Delete'); }
    });
  }

  if (isNew) {
    showValue(null);
    ctx.ready();
    (keyInput.value ? textarea : keyInput).focus();
    return;
  }

  let first = true;
  watch(apiUrl(path), (data) => {
    const entry = (Array.isArray(data) && data[0]) || null;
    if (first) {
      first = false;
      err.clear();
      loaded = entry;
      loadedIndex = entry ? entry.ModifyIndex : 0;
      showValue(entry);
      if (!entry) fill(notice, h('p', { class: 'notice' }, `There is no key ${path}. Saving creates it.`));
      ctx.ready();
      return;
    }
    const idx = entry ? entry.ModifyIndex : 0;
    if (idx === loadedIndex) { fill(notice); return; }
    fill(notice, h('div', { class: 'warning-box' },
      entry ? `This key was changed on the server (ModifyIndex ${idx}) since you loaded it. ` : 'This key was deleted on the server since you loaded it. ',
      'Saving will ask before overwriting. ',
      h('button', { type: 'button', class: 'btn btn-small', onclick: () => takeTheirs(path, entry) }, 'Load the stored value')));
  }, { signal, allow404: true, onError: (e) => { if (first) { err.show(e, 'Key'); ctx.ready(); } } });
}
