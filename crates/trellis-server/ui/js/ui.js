// Shared page pieces: badges, pager, confirm dialog, status announcements, inline errors, tables.
import { h, fill } from './dom.js';

export const PAGE_SIZE = 50;

const STATUS_CLASS = {
  passing: 'ok', warning: 'warn', critical: 'bad',
  committed: 'ok', aborted: 'bad', open: 'info', preparing: 'info', committing: 'warn', aborting: 'warn',
  prepared: 'info', registered: 'none', preparing_failed: 'bad', failed: 'bad', error: 'bad', ok: 'ok', maintenance: 'warn', pending: 'info', unknown: 'none',
};

/** A status shown with its word and a colour, never colour alone. */
export function badge(status, attrs = {}) {
  const st = String(status ?? 'unknown');
  return h('span', { ...attrs, class: ['badge', 'badge-' + (STATUS_CLASS[st] || 'none'), attrs.class] }, st);
}

/** Counts like "3 passing · 1 critical" as small badges; zero counts are left out. */
export function healthCounts(p, w, c) {
  const parts = [];
  if (p) parts.push(h('span', { class: 'count count-ok' }, `${p} passing`));
  if (w) parts.push(h('span', { class: 'count count-warn' }, `${w} warning`));
  if (c) parts.push(h('span', { class: 'count count-bad' }, `${c} critical`));
  if (!parts.length) parts.push(h('span', { class: 'muted' }, 'none'));
  return h('span', { class: 'counts' }, parts);
}

export function tagList(tags) {
  if (!tags || !tags.length) return h('span', { class: 'muted' }, '—');
  return h('span', { class: 'tags' }, tags.map((t) => h('span', { class: 'tag' }, t)));
}

export function metaList(meta) {
  const entries = Object.entries(meta || {});
  if (!entries.length) return h('span', { class: 'muted' }, '—');
  return h('dl', { class: 'meta' }, entries.map(([k, v]) => [h('dt', null, k), h('dd', null, String(v))]));
}

/** Inline error message for a failed request. */
export function errorBox(err, prefix = '') {
  const msg = err && err.message ? err.message : String(err);
  return h('div', { class: 'error', role: 'alert' }, prefix ? `${prefix}: ${msg}` : msg);
}

/** A slot that shows or clears an inline error. */
export function errorSlot() {
  const el = h('div', { class: 'error-slot' });
  return {
    el,
    show(err, prefix) { fill(el, errorBox(err, prefix)); },
    clear() { if (el.firstChild) el.replaceChildren(); },
  };
}

/** Announces a status message to screen readers and shows it briefly. */
export function announce(message) {
  const region = document.getElementById('announcer');
  if (!region) return;
  region.textContent = '';
  region.textContent = message;
  region.classList.add('visible');
  clearTimeout(announce.t);
  announce.t = setTimeout(() => region.classList.remove('visible'), 4000);
}

/**
 * Pager: 50 rows a page. Returns {el, slice(items) -> items of the current page}.
 * onChange(page) is called with the new 1-based page.
 */
export function pager(label, onChange) {
  let page = 1, total = 0;
  const prev = h('button', { type: 'button', class: 'btn btn-small', dataset: { testid: 'pager-prev' }, onclick: () => go(page - 1) }, '‹ Previous');
  const next = h('button', { type: 'button', class: 'btn btn-small', dataset: { testid: 'pager-next' }, onclick: () => go(page + 1) }, 'Next ›');
  const status = h('span', { class: 'pager-status', dataset: { testid: 'pager-status' }, 'aria-live': 'polite' }, '');
  const el = h('nav', { class: 'pager', 'aria-label': label }, prev, status, next);
  function pages() { return Math.max(1, Math.ceil(total / PAGE_SIZE)); }
  function go(p) {
    p = Math.min(Math.max(1, p), pages());
    if (p === page) return;
    page = p;
    onChange(page);
  }
  function update() {
    const start = total ? (page - 1) * PAGE_SIZE + 1 : 0;
    const end = Math.min(total, page * PAGE_SIZE);
    const n = (x) => x.toLocaleString('en-US');
    status.textContent = `${n(start)}–${n(end)} of ${n(total)}`;
    prev.disabled = page <= 1;
    next.disabled = page >= pages();
  }
  return {
    el,
    get page() { return page; },
    set page(p) { page = Math.max(1, Number(p) || 1); },
    slice(items) {
      total = items.length;
      if (page > pages()) page = pages();
      update();
      return items.slice((page - 1) * PAGE_SIZE, page * PAGE_SIZE);
    },
  };
}

/** Asks in the shared <dialog data-testid=confirm>. Resolves true only on confirm-yes. */
export function confirm(message, yesLabel = 'Confirm', title = 'Are you sure?') {
  const dlg = document.querySelector('dialog[data-testid=confirm]');
  if (!dlg) return Promise.resolve(window.confirm(message));
  dlg.querySelector('#confirm-title').textContent = title;
  dlg.querySelector('#confirm-message').textContent = message;
  const yes = dlg.querySelector('[data-testid=confirm-yes]');
  const no = dlg.querySelector('[data-testid=confirm-no]');
  yes.textContent = yesLabel;
  const opener = document.activeElement;
  return new Promise((resolve) => {
    let answered = false;
    const finish = (ok) => {
      if (answered) return;
      answered = true;
      yes.removeEventListener('click', onYes);
      no.removeEventListener('click', onNo);
      dlg.removeEventListener('close', onClose);
      if (dlg.open) dlg.close();
      if (opener && opener.isConnected && opener.focus) opener.focus();
      resolve(ok);
    };
    const onYes = () => finish(true);
    const onNo = () => finish(false);
    const onClose = () => finish(false);
    yes.addEventListener('click', onYes);
    no.addEventListener('click', onNo);
    dlg.addEventListener('close', onClose);
    if (dlg.open) dlg.close();
    dlg.showModal();
    no.focus();
  });
}

/** A table with caption, header row (th scope=col) and an empty tbody to patch. */
export function table(attrs, caption, columns) {
  const tbody = h('tbody');
  const el = h('table', { class: 'grid', ...attrs },
    caption ? h('caption', { class: caption.startsWith('!') ? 'sr-only' : null }, caption.replace(/^!/, '')) : null,
    h('thead', null, h('tr', null, columns.map((c) => h('th', { scope: 'col', class: c.class || null }, c.label || c)))),
    tbody);
  return { el, tbody };
}

/** Empty-state row spanning a table. */
export function emptyRow(cols, message) {
  return h('tr', { class: 'empty', key: '__empty' }, h('td', { colspan: cols }, message));
}

export function sectionTitle(text, ...extra) {
  return h('div', { class: 'section-head' }, h('h2', null, text), ...extra);
}
