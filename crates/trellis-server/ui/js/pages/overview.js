// Overview page: registry counts, transactions in flight and recent errors (critical checks and error traces).
import { h, fill, patchList } from '../dom.js';
import { watch, poll, get, request, withQuery } from '../api.js';
import { timeAgo, durUs } from '../format.js';
import { badge, errorSlot } from '../ui.js';
import { traceSummary } from './traces.js';

const INFLIGHT = ['open', 'preparing', 'committing', 'aborting'];

function card(label, testid, tone, href) {
  const value = h(href ? 'a' : 'span', { class: 'value', href, dataset: { testid } }, '…');
  return { el: h('div', { class: ['card', tone && 'card-' + tone] }, h('span', { class: 'label' }, label), value), value };
}

/** Counts transactions in the in-flight states, paging through `next`. */
async function countInflight(signal) {
  const counts = {};
  for (const state of INFLIGHT) {
    let n = 0, after = null;
    for (let pages = 0; pages < 100; pages++) {
      const page = await get(withQuery('/v1/trellis/txn', { state, limit: 1000, after }), { signal });
      n += (page.transactions || []).length;
      if (page.next === null || page.next === undefined) break;
      after = page.next;
    }
    counts[state] = n;
  }
  return counts;
}

export function mount(ctx) {
  ctx.title('Overview');
  const { signal } = ctx;
  const c = {
    services: card('Services', 'count-services', 'info', '/ui/services'),
    instances: card('Instances', 'count-instances', 'info'),
    passing: card('Passing instances', 'count-passing', 'ok', '/ui/services?health=passing'),
    warning: card('Warning instances', 'count-warning', 'warn', '/ui/services?health=warning'),
    critical: card('Critical instances', 'count-critical', 'bad', '/ui/services?health=critical'),
    txn: card('Transactions in flight', 'count-txn-inflight', 'info', '/ui/transactions'),
  };
  const txnDetail = h('p', { class: 'muted' });
  const regErr = errorSlot(), txnErr = errorSlot(), evErr = errorSlot();
  const list = h('ul', { class: 'events', dataset: { testid: 'recent-errors' }, 'aria-label': 'Recent errors' });
  ctx.main.append(
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'Overview'), h('p', { class: 'sub' }, 'Registry health, transactions and recent errors, updated live.'))),
    regErr.el,
    h('section', { 'aria-label': 'Counts' }, h('div', { class: 'cards' }, Object.values(c).map((x) => x.el))),
    txnErr.el, txnDetail,
    h('section', { class: 'section', 'aria-labelledby': 'recent-title' },
      h('div', { class: 'section-head' }, h('h2', { id: 'recent-title' }, 'Recent errors'),
        h('span', { class: 'muted' }, 'critical check transitions and error traces of the last 15 min, newest first')),
      evErr.el, list),
  );

  let checkEvents = [], traceEvents = [];
  function renderEvents() {
    const items = [...checkEvents, ...traceEvents].sort((a, b) => b.time - a.time).slice(0, 20);
    if (!items.length) {
      patchList(list, [h('li', { class: 'empty', key: 'empty' }, 'No recent errors.')]);
      return;
    }
    patchList(list, items.map((it) => it.node));
  }
  renderEvents();

  watch('/v1/internal/ui/services', (data) => {
    regErr.clear();
    const svcs = Array.isArray(data) ? data : [];
    let inst = 0, p = 0, w = 0, cr = 0;
    for (const s of svcs) {
      inst += s.InstanceCount || 0;
      p += s.InstancesPassing || 0;
      w += s.InstancesWarning || 0;
      cr += s.InstancesCritical || 0;
    }
    c.services.value.textContent = String(svcs.length);
    c.instances.value.textContent = String(inst);
    c.passing.value.textContent = String(p);
    c.warning.value.textContent = String(w);
    c.critical.value.textContent = String(cr);
    ctx.ready();
  }, { signal, onError: (e) => { regErr.show(e, 'Services'); ctx.ready(); } });

  let counting = false, again = false;
  async function recount() {
    if (counting) { again = true; return; }
    counting = true;
    try {
      do {
        again = false;
        const counts = await countInflight(signal);
        const total = INFLIGHT.reduce((n, st) => n + counts[st], 0);
        c.txn.value.textContent = String(total);
        fill(txnDetail, INFLIGHT.map((st) => `${counts[st]} ${st}`).join(' · '));
        txnErr.clear();
      } while (again && !signal.aborted);
    } catch (e) {
      if (!signal.aborted && e.name !== 'AbortError') txnErr.show(e, 'Transactions');
    } finally {
      counting = false;
    }
  }
  watch('/v1/trellis/txn?limit=1', () => recount(), { signal, onError: (e) => txnErr.show(e, 'Transactions') });

  watch('/v1/trellis/checks/history?limit=100', (data) => {
    evErr.clear();
    const ts = (data && data.transitions) || [];
    // A check that starts critical (a TTL check before its first heartbeat) and has changed
    // since is no error: only a new check still critical is. The list is newest first.
    const changedSince = new Set();
    const errors = ts.filter((t) => {
      const keep = t.to === 'critical' && (t.from || !changedSince.has(t.checkId));
      changedSince.add(t.checkId);
      return keep;
    });
    checkEvents = errors.slice(0, 20).map((t) => ({
      time: Number(t.time),
      node: h('li', { key: `c${t.index}-${t.checkId}-${t.serviceId}` },
        timeAgo(t.time), badge('critical'),
        h('span', { class: 'what' },
          t.serviceName ? h('a', { href: '/ui/services/' + encodeURIComponent(t.serviceName) }, t.serviceName) : 'Node',
          t.serviceId ? h('span', { class: 'mono muted' }, ` ${t.serviceId}`) : null,
          `: check ${t.name || t.checkId} went ${t.from || 'new'} → critical`,
          t.output ? h('span', { class: 'output' }, ' — ' + t.output) : null)),
    }));
    renderEvents();
  }, { signal, onError: (e) => evErr.show(e, 'Check history') });

  // error traces: only asked again when a service's error count changes
  let lastSig = '';
  poll(async (sig) => {
    const stats = await get('/v1/trellis/traces/services?lookback=15m', { signal: sig });
    const bad = ((stats && stats.services) || []).filter((s) => s.errorCount > 0)
      .sort((a, b) => b.errorCount - a.errorCount).slice(0, 5);
    const key = bad.map((s) => `${s.service}:${s.errorCount}`).join(',');
    if (key === lastSig) return;
    lastSig = key;
    const found = new Map();
    for (const s of bad) {
      const url = withQuery('/api/traces', { service: s.service, tags: '{"error":"true"}', lookback: '15m', limit: 5 });
      const res = await request(url, { signal: sig }).catch(() => null);
      for (const t of (res && res.data && res.data.data) || []) found.set(t.traceID, t);
    }
    traceEvents = [...found.values()].map(traceSummary).map((t) => ({
      time: t.start / 1000,
      node: h('li', { key: 't' + t.traceID },
        timeAgo(t.start / 1000), badge('error'),
        h('span', { class: 'what' }, 'Error trace ',
          h('a', { href: '/ui/traces/' + encodeURIComponent(t.traceID) }, `${t.rootService}: ${t.rootOp}`),
          h('span', { class: 'output' }, ` — ${t.errors} error span${t.errors === 1 ? '' : 's'}, ${durUs(t.duration)}`))),
    }));
    renderEvents();
  }, 1000, { signal });
}
