// Services page: the registry's services with search, health filter, paging and traffic stats from traces.
import { h, patchList } from '../dom.js';
import { watch, poll, get } from '../api.js';
import { rate, pct, durMs, errClass } from '../format.js';
import { badge, healthCounts, tagList, errorSlot, pager, table, emptyRow } from '../ui.js';

/** Worst instance health of a /v1/internal/ui/services entry. */
export function serviceHealth(s) {
  if (s.InstancesCritical > 0) return 'critical';
  if (s.InstancesWarning > 0) return 'warning';
  return 'passing';
}

export function mount(ctx) {
  ctx.title('Services');
  const { signal } = ctx;
  const err = errorSlot(), statsErr = errorSlot();
  const search = h('input', { id: 'svc-search', type: 'search', dataset: { testid: 'services-search' }, placeholder: 'name or tag', value: ctx.query.get('q') || '', autocomplete: 'off' });
  const health = h('select', { id: 'svc-health', dataset: { testid: 'services-health' } },
    ['all', 'passing', 'warning', 'critical'].map((v) => h('option', { value: v }, v === 'all' ? 'All' : v)));
  health.value = ['passing', 'warning', 'critical'].includes(ctx.query.get('health')) ? ctx.query.get('health') : 'all';
  const pg = pager('Services pages', (p) => { ctx.setQuery({ page: p > 1 ? p : null }); render(); });
  pg.page = ctx.query.get('page') || 1;
  const { el: tableEl, tbody } = table({ dataset: { testid: 'services-table' } }, '!Services',
    ['Service', 'Health', 'Instances', 'Tags', { label: 'Req/s', class: 'num' }, { label: 'Error %', class: 'num' }, { label: 'p99', class: 'num' }]);
  const summary = h('p', { class: 'sub' }, '');
  ctx.main.append(
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'Services'), summary)),
    h('form', { class: 'toolbar', role: 'search', onsubmit: (e) => e.preventDefault() },
      h('div', { class: 'field' }, h('label', { for: 'svc-search' }, 'Search services'), search),
      h('div', { class: 'field' }, h('label', { for: 'svc-health' }, 'Health'), health),
      h('span', { class: 'muted' }, 'Traffic over the last 15 minutes, from traces.')),
    err.el, statsErr.el, h('div', { class: 'table-wrap' }, tableEl), pg.el);

  let services = null;
  let stats = new Map();

  function filtered() {
    const q = search.value.trim().toLowerCase();
    const want = health.value;
    return services.filter((s) => {
      if (want !== 'all' && serviceHealth(s) !== want) return false;
      if (!q) return true;
      if (s.Name.toLowerCase().includes(q)) return true;
      return (s.Tags || []).some((t) => String(t).toLowerCase().includes(q));
    });
  }

  function render() {
    if (!services) return;
    const list = filtered();
    const page = pg.slice(list);
    summary.textContent = `${services.length} service${services.length === 1 ? '' : 's'}` + (list.length !== services.length ? `, ${list.length} shown` : '');
    if (!page.length) {
      patchList(tbody, [emptyRow(7, services.length ? 'No services match.' : 'No services are registered.')]);
      return;
    }
    patchList(tbody, page.map((s) => {
      const hl = serviceHealth(s);
      const st = stats.get(s.Name);
      return h('tr', { key: s.Name, dataset: { service: s.Name, health: hl } },
        h('td', { class: 'wrap-anywhere' }, h('a', { href: '/ui/services/' + encodeURIComponent(s.Name) }, s.Name)),
        h('td', null, badge(hl)),
        h('td', null, h('span', { class: 'muted' }, `${s.InstanceCount || 0} · `), healthCounts(s.InstancesPassing, s.InstancesWarning, s.InstancesCritical)),
        h('td', null, tagList(s.Tags)),
        h('td', { class: 'num' }, st ? rate(st.ratePerSec) : '—'),
        h('td', { class: ['num', st && 'err-' + errClass(st.errorRate)] }, st ? pct(st.errorRate) : '—'),
        h('td', { class: 'num' }, st ? durMs(st.p99Ms) : '—'));
    }));
  }

  search.addEventListener('input', () => { pg.page = 1; ctx.setQuery({ q: search.value || null, page: null }); render(); });
  health.addEventListener('change', () => { pg.page = 1; ctx.setQuery({ health: health.value === 'all' ? null : health.value, page: null }); render(); });

  watch('/v1/internal/ui/services', (data) => {
    err.clear();
    services = Array.isArray(data) ? data.slice().sort((a, b) => (a.Name < b.Name ? -1 : a.Name > b.Name ? 1 : 0)) : [];
    render();
    ctx.ready();
  }, { signal, onError: (e) => { err.show(e, 'Services'); if (!services) { patchList(tbody, [emptyRow(7, 'Could not load the services.')]); ctx.ready(); } } });

  poll(async (sig) => {
    const res = await get('/v1/trellis/traces/services?lookback=15m', { signal: sig });
    statsErr.clear();
    const next = new Map(((res && res.services) || []).map((s) => [s.service, s]));
    stats = next;
    render();
  }, 1000, { signal, onError: (e) => statsErr.show(e, 'Traffic stats') });
}
