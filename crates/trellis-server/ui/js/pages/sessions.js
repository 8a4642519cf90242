// Sessions page: every session with its settings and the KV keys it currently locks.
import { h, patchList } from '../dom.js';
import { watch, encodePath } from '../api.js';
import { durUs } from '../format.js';
import { errorSlot, pager, table, emptyRow, tagList } from '../ui.js';

export function mount(ctx) {
  ctx.title('Sessions');
  const { signal } = ctx;
  const err = errorSlot(), lockErr = errorSlot();
  const pg = pager('Session pages', (p) => { ctx.setQuery({ page: p > 1 ? p : null }); render(); });
  pg.page = ctx.query.get('page') || 1;
  const summary = h('p', { class: 'sub' }, 'Loading…');
  const tbl = table({ dataset: { testid: 'sessions-table' } }, '!Sessions',
    ['Session', 'Name', 'Node', 'Behavior', 'TTL', 'Lock delay', 'Checks', 'Locks']);
  ctx.main.append(
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'Sessions'), summary)),
    err.el, lockErr.el, h('div', { class: 'table-wrap' }, tbl.el), pg.el);

  let sessions = null;
  let locks = new Map(); // session ID -> [keys]

  function render() {
    if (!sessions) return;
    const page = pg.slice(sessions);
    const nLocks = [...locks.values()].reduce((n, l) => n + l.length, 0);
    summary.textContent = `${sessions.length} session${sessions.length === 1 ? '' : 's'}, ${nLocks} lock${nLocks === 1 ? '' : 's'} held`;
    if (!page.length) { patchList(tbl.tbody, [emptyRow(8, 'No sessions.')]); return; }
    patchList(tbl.tbody, page.map((s) => {
      const held = locks.get(s.ID) || [];
      const checks = [...(s.NodeChecks || s.Checks || []), ...((s.ServiceChecks || []).map((c) => c.ID || c))];
      return h('tr', { key: s.ID, dataset: { session: s.ID } },
        h('td', { class: 'mono wrap-anywhere' }, s.ID),
        h('td', { class: 'wrap-anywhere' }, s.Name || h('span', { class: 'muted' }, '—')),
        h('td', null, s.Node || '—'),
        h('td', null, s.Behavior || 'release'),
        h('td', { class: 'nowrap' }, s.TTL || h('span', { class: 'muted' }, 'none')),
        h('td', { class: 'nowrap' }, s.LockDelay ? (typeof s.LockDelay === 'number' ? durUs(s.LockDelay / 1000) : String(s.LockDelay)) : '—'),
        h('td', null, tagList(checks.map(String))),
        h('td', null, held.length
          ? h('ul', { class: 'checks' }, held.map((k) => h('li', null, h('a', { class: 'mono', href: '/ui/kv/' + encodePath(k), dataset: { lock: k } }, k))))
          : h('span', { class: 'muted' }, 'none')));
    }));
  }

  watch('/v1/session/list', (data) => {
    err.clear();
    sessions = (Array.isArray(data) ? data : []).slice().sort((a, b) => (a.CreateIndex || 0) - (b.CreateIndex || 0));
    render();
    ctx.ready();
  }, { signal, onError: (e) => { err.show(e, 'Sessions'); if (!sessions) { summary.textContent = ''; patchList(tbl.tbody, [emptyRow(8, 'Could not load the sessions.')]); ctx.ready(); } } });

  watch('/v1/kv/?recurse', (data) => {
    lockErr.clear();
    const next = new Map();
    for (const e of Array.isArray(data) ? data : []) {
      if (!e.Session) continue;
      if (!next.has(e.Session)) next.set(e.Session, []);
      next.get(e.Session).push(e.Key);
    }
    locks = next;
    render();
  }, { signal, allow404: true, onError: (e) => lockErr.show(e, 'Locks') });
}
