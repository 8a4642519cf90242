// Transactions page: two-phase-commit transactions filtered by state, newest first, paged, updated live.
import { h, patchList } from '../dom.js';
import { watch, get, withQuery } from '../api.js';
import { timeAgo, durMs, asText } from '../format.js';
import { badge, errorSlot, pager, table, emptyRow } from '../ui.js';

export const TXN_STATES = ['open', 'preparing', 'committing', 'aborting', 'committed', 'aborted'];
const MAX_PAGES = 20;

function branchSummary(branches) {
  const by = new Map();
  for (const b of branches || []) by.set(b.state, (by.get(b.state) || 0) + 1);
  return [...by].map(([st, n]) => `${n} ${st}`).join(', ');
}

export function mount(ctx) {
  ctx.title('Transactions');
  const { signal } = ctx;
  const err = errorSlot();
  const initial = TXN_STATES.includes(ctx.query.get('state')) ? ctx.query.get('state') : '';
  const sel = h('select', { id: 'txn-state', dataset: { testid: 'txn-state' } },
    h('option', { value: '' }, 'All states'), TXN_STATES.map((st) => h('option', { value: st }, st)));
  sel.value = initial;
  const pg = pager('Transaction pages', (p) => { ctx.setQuery({ page: p > 1 ? p : null }); render(); });
  pg.page = ctx.query.get('page') || 1;
  const summary = h('p', { class: 'sub' }, 'Loading…');
  const tbl = table({ dataset: { testid: 'txn-table' } }, '!Transactions, newest first',
    ['Transaction', 'State', 'Branches', 'Created', { label: 'Duration', class: 'num' }, { label: 'Timeout', class: 'num' }, 'Cause']);
  ctx.main.append(
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'Transactions'), summary)),
    h('div', { class: 'toolbar' }, h('div', { class: 'field' }, h('label', { for: 'txn-state' }, 'State'), sel)),
    err.el, h('div', { class: 'table-wrap' }, tbl.el), pg.el);

  let txns = null, truncated = false, gen = 0, loop = null;

  function render() {
    if (!txns) return;
    const list = pg.slice(txns);
    summary.textContent = `${txns.length}${truncated ? '+' : ''} transaction${txns.length === 1 ? '' : 's'}${sel.value ? ` ${sel.value}` : ''}, newest first`;
    if (!list.length) { patchList(tbl.tbody, [emptyRow(7, 'No transactions.')]); return; }
    patchList(tbl.tbody, list.map((t) => h('tr', { key: t.gid, dataset: { gid: t.gid, state: t.state } },
      h('td', { class: 'mono wrap-anywhere' }, h('a', { href: '/ui/transactions/' + encodeURIComponent(t.gid) }, t.gid)),
      h('td', null, badge(t.state)),
      h('td', null, `${(t.branches || []).length}`, (t.branches || []).length ? h('span', { class: 'muted' }, ` (${branchSummary(t.branches)})`) : null),
      h('td', { class: 'nowrap' }, timeAgo(t.created_at)),
      h('td', { class: 'num' }, t.finished_at ? durMs(t.finished_at - t.created_at) : h('span', { class: 'muted' }, 'running')),
      h('td', { class: 'num' }, durMs(t.timeout_ms)),
      h('td', { class: 'wrap-anywhere' }, t.cause ? asText(t.cause) : h('span', { class: 'muted' }, '—')))));
  }

  function start() {
    if (loop) loop.abort();
    loop = new AbortController();
    signal.addEventListener('abort', () => loop.abort(), { once: true });
    const sig = loop.signal;
    const state = sel.value || null;
    watch(withQuery('/v1/trellis/txn', { state, limit: 1000 }), async (data) => {
      const my = ++gen;
      const all = (data && data.transactions) || [];
      let next = data && data.next, pages = 1;
      try {
        while (next !== null && next !== undefined && pages < MAX_PAGES) {
          const more = await get(withQuery('/v1/trellis/txn', { state, limit: 1000, after: next }), { signal: sig });
          all.push(...(more.transactions || []));
          next = more.next;
          pages++;
        }
      } catch (e) {
        if (e.name === 'AbortError') return;
        err.show(e, 'Transactions');
      }
      if (my !== gen || sig.aborted) return;
      err.clear();
      truncated = next !== null && next !== undefined;
      txns = all.sort((a, b) => (b.create_index || 0) - (a.create_index || 0) || (b.created_at || 0) - (a.created_at || 0));
      render();
      ctx.ready();
    }, { signal: sig, onError: (e) => { err.show(e, 'Transactions'); if (!txns) { summary.textContent = ''; patchList(tbl.tbody, [emptyRow(7, 'Could not load the transactions.')]); ctx.ready(); } } });
  }
  sel.addEventListener('change', () => {
    pg.page = 1;
    ctx.setQuery({ state: sel.value || null, page: null });
    txns = null;
    start();
  });
  start();
}
