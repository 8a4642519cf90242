// Service page: instances with checks, maintenance and deregister actions, traffic stats and check history.
import { h, fill, patchList } from '../dom.js';
import { watch, poll, get, put, withQuery } from '../api.js';
import { rate, pct, durMs, worstOf, timeAgo, errClass } from '../format.js';
import { badge, healthCounts, tagList, metaList, errorSlot, pager, table, emptyRow, confirm, announce } from '../ui.js';

const maintId = (id) => `_service_maintenance:${id}`;

export function mount(ctx) {
  const name = ctx.params[0];
  ctx.title(name);
  const { signal } = ctx;
  const enc = encodeURIComponent(name);
  const err = errorSlot(), actErr = errorSlot(), histErr = errorSlot();
  const counts = h('p', { class: 'sub' }, 'Loading…');
  const stats = h('dl', { class: 'stats', 'aria-label': 'Traffic over the last 15 minutes' });
  const pg = pager('Instance pages', (p) => { ctx.setQuery({ page: p > 1 ? p : null }); render(); });
  pg.page = ctx.query.get('page') || 1;
  const inst = table({ dataset: { testid: 'instances-table' } }, '!Instances',
    ['Instance', 'Health', 'Address', 'Tags', 'Meta', 'Checks', 'Actions']);
  const hist = table({ dataset: { testid: 'check-history' } }, '!Check history, newest first',
    ['Time', 'Instance', 'Check', 'Change', 'Output']);
  ctx.main.append(
    h('div', { class: 'page-head' },
      h('div', null, h('h1', null, name), counts),
      h('div', { class: 'actions' },
        h('a', { class: 'btn', href: '/ui/traces?service=' + enc }, `Traces of ${name}`),
        h('a', { class: 'btn', href: '/ui/topology' }, 'Topology'))),
    err.el,
    stats,
    h('section', { class: 'section', 'aria-labelledby': 'inst-title' },
      h('div', { class: 'section-head' }, h('h2', { id: 'inst-title' }, 'Instances')),
      actErr.el, h('div', { class: 'table-wrap' }, inst.el), pg.el),
    h('section', { class: 'section', 'aria-labelledby': 'hist-title' },
      h('div', { class: 'section-head' }, h('h2', { id: 'hist-title' }, 'Check history'), h('span', { class: 'muted' }, 'status changes, newest first')),
      histErr.el, h('div', { class: 'table-wrap' }, hist.el)));

  let entries = null;
  const busy = new Set();

  async function act(id, label, fn) {
    busy.add(id);
    render();
    actErr.clear();
    try {
      await fn();
      announce(label);
    } catch (e) {
      actErr.show(e, `Instance ${id}`);
    } finally {
      busy.delete(id);
      render();
    }
  }

  async function toggleMaintenance(id, inMaint) {
    if (!inMaint) {
      const ok = await confirm(`Put instance ${id} of ${name} into maintenance? It will be reported critical and taken out of service discovery until maintenance is disabled.`, 'Enable maintenance', 'Enable maintenance?');
      if (!ok) return;
      await act(id, `Maintenance enabled on ${id}`, () => put(withQuery('/v1/agent/service/maintenance/' + encodeURIComponent(id), { enable: 'true', reason: 'Set from the Trellis dashboard' })));
    } else {
      const ok = await confirm(`Take instance ${id} of ${name} out of maintenance? It returns to service discovery as soon as its checks pass.`, 'Disable maintenance', 'Disable maintenance?');
      if (!ok) return;
      await act(id, `Maintenance disabled on ${id}`, () => put(withQuery('/v1/agent/service/maintenance/' + encodeURIComponent(id), { enable: 'false' })));
    }
  }

  async function deregister(id) {
    const ok = await confirm(`Deregister instance ${id} of ${name}? It is removed from the registry with its checks.`, 'Deregister', 'Deregister instance?');
    if (!ok) return;
    await act(id, `Deregistered ${id}`, () => put('/v1/agent/service/deregister/' + encodeURIComponent(id)));
  }

  function render() {
    if (!entries) return;
    const list = pg.slice(entries);
    if (!list.length) {
      patchList(inst.tbody, [emptyRow(7, `No instances of ${name} are registered.`)]);
      return;
    }
    patchList(inst.tbody, list.map((e) => {
      const svc = e.Service || {};
      const id = svc.ID || svc.Service;
      const checks = e.Checks || [];
      const hl = worstOf(checks.map((c) => c.Status));
      const inMaint = checks.some((c) => c.CheckID === maintId(id));
      const addr = svc.Address || (e.Node && e.Node.Address) || '';
      return h('tr', { key: id, dataset: { instance: id, health: hl } },
        h('td', null, h('div', { class: 'mono wrap-anywhere' }, id), h('div', { class: 'muted' }, 'node ', (e.Node && e.Node.Node) || '?')),
        h('td', null, badge(hl), inMaint ? h('div', null, badge('maintenance')) : null),
        h('td', { class: 'mono nowrap' }, svc.Port ? `${addr}:${svc.Port}` : addr || '—'),
        h('td', null, tagList(svc.Tags)),
        h('td', null, metaList(svc.Meta)),
        h('td', null, checks.length ? h('ul', { class: 'checks' }, checks.map((c) => h('li', { class: 'check', dataset: { check: c.CheckID, status: c.Status } },
          h('div', { class: 'check-head' }, badge(c.Status), h('span', null, c.Name || c.CheckID), c.Type ? h('span', { class: 'muted' }, `(${c.Type})`) : null),
          c.Output ? h('pre', null, c.Output) : null))) : h('span', { class: 'muted' }, 'no checks')),
        h('td', null, h('div', { class: 'row-actions' },
          h('button', { type: 'button', class: 'btn btn-small', dataset: { testid: 'maintenance-toggle' }, disabled: busy.has(id), onclick: () => toggleMaintenance(id, inMaint) },
            inMaint ? 'Disable maintenance' : 'Enable maintenance'),
          h('button', { type: 'button', class: 'btn btn-small btn-danger', dataset: { testid: 'deregister' }, disabled: busy.has(id), onclick: () => deregister(id) }, 'Deregister'))));
    }));
  }

  watch('/v1/health/service/' + enc, (data) => {
    err.clear();
    entries = (Array.isArray(data) ? data : []).slice().sort((a, b) => {
      const x = (a.Service && a.Service.ID) || '', y = (b.Service && b.Service.ID) || '';
      return x < y ? -1 : x > y ? 1 : 0;
    });
    let p = 0, w = 0, c = 0;
    for (const e of entries) {
      const st = worstOf((e.Checks || []).map((x) => x.Status));
      if (st === 'critical') c++; else if (st === 'warning') w++; else p++;
    }
    fill(counts, `${entries.length} instance${entries.length === 1 ? '' : 's'} `, healthCounts(p, w, c));
    render();
    ctx.ready();
  }, { signal, onError: (e) => { err.show(e, 'Instances'); if (!entries) { counts.textContent = ''; patchList(inst.tbody, [emptyRow(7, 'Could not load the instances.')]); ctx.ready(); } } });

  watch(withQuery('/v1/trellis/checks/history', { service: name, limit: 50 }), (data) => {
    histErr.clear();
    const ts = (data && data.transitions) || [];
    if (!ts.length) { patchList(hist.tbody, [emptyRow(5, 'No status changes recorded.')]); return; }
    patchList(hist.tbody, ts.map((t) => h('tr', { key: `${t.index}-${t.checkId}-${t.serviceId}-${t.time}` },
      h('td', { class: 'nowrap' }, timeAgo(t.time)),
      h('td', { class: 'mono wrap-anywhere' }, t.serviceId || '—'),
      h('td', { class: 'wrap-anywhere' }, t.name || t.checkId),
      h('td', { class: 'nowrap' }, t.from ? badge(t.from) : h('span', { class: 'muted' }, 'new'), ' → ', badge(t.to)),
      h('td', null, t.output ? h('pre', null, t.output) : h('span', { class: 'muted' }, '—')))));
  }, { signal, onError: (e) => histErr.show(e, 'Check history') });

  poll(async (sig) => {
    const res = await get('/v1/trellis/traces/services?lookback=15m', { signal: sig });
    const st = ((res && res.services) || []).find((s) => s.service === name);
    const item = (label, value, cls) => h('div', null, h('dt', null, label), h('dd', { class: cls }, value));
    fill(stats, st ? [
      item('Requests / s (15 min)', rate(st.ratePerSec)),
      item('Requests', String(st.callCount)),
      item('Errors', `${st.errorCount} (${pct(st.errorRate)})`, 'err-' + errClass(st.errorRate)),
      item('p50', durMs(st.p50Ms)),
      item('p99', durMs(st.p99Ms)),
    ] : [item('Requests (15 min)', 'no traffic traced')]);
  }, 1000, { signal });
}
