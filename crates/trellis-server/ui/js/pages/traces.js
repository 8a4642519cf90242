// Traces page: Jaeger-style search form (service, operation, durations, lookback, errors) and live results.
import { h, patchList } from '../dom.js';
import { get, request, poll, withQuery, childController } from '../api.js';
import { timeAgo, durUs, iso } from '../format.js';
import { badge, errorSlot, table, emptyRow } from '../ui.js';

const LOOKBACKS = [['5m', 'Last 5 minutes'], ['15m', 'Last 15 minutes'], ['1h', 'Last hour'], ['6h', 'Last 6 hours'],
  ['24h', 'Last 24 hours'], ['2d', 'Last 2 days'], ['7d', 'Last 7 days']];

export function isErrorSpan(span) {
  for (const t of span.tags || []) {
    if (t.key === 'error' && (t.value === true || t.value === 'true')) return true;
    if (t.key === 'otel.status_code' && String(t.value).toUpperCase() === 'ERROR') return true;
  }
  return false;
}

/** The parent span ID named by a span's references ('' for none). */
export function parentOf(span) {
  for (const r of span.references || []) {
    if ((r.refType === 'CHILD_OF' || r.refType === 'FOLLOWS_FROM') && (!r.traceID || r.traceID === span.traceID)) return r.spanID || '';
  }
  return '';
}

/** Root operation, services, span count, start (µs), duration (µs) and error count of a Jaeger trace. */
export function traceSummary(t) {
  const spans = t.spans || [];
  const ids = new Set(spans.map((s) => s.spanID));
  const procs = t.processes || {};
  let root = null, start = Infinity, end = -Infinity, errors = 0;
  const services = new Map();
  for (const s of spans) {
    start = Math.min(start, s.startTime);
    end = Math.max(end, s.startTime + s.duration);
    if (isErrorSpan(s)) errors++;
    const svc = (procs[s.processID] && procs[s.processID].serviceName) || s.processID || '?';
    services.set(svc, (services.get(svc) || 0) + 1);
    const p = parentOf(s);
    const isRoot = !p || !ids.has(p);
    if (isRoot && (!root || s.startTime < root.startTime)) root = s;
  }
  if (!root && spans.length) root = spans[0];
  const rootProc = root && procs[root.processID];
  return {
    traceID: t.traceID,
    start: Number.isFinite(start) ? start : 0,
    duration: Number.isFinite(end - start) ? end - start : 0,
    spans: spans.length,
    errors,
    services: [...services.entries()].sort((a, b) => a[0].localeCompare(b[0])),
    rootService: (rootProc && rootProc.serviceName) || '?',
    rootOp: root ? root.operationName : '?',
  };
}

function field(label, control, inline = false) {
  return h('div', { class: ['field', inline && 'field-inline'] }, inline ? [control, label] : [label, control]);
}

export function mount(ctx) {
  ctx.title('Traces');
  const { signal } = ctx;
  const q = ctx.query;
  const err = errorSlot();
  const svcSel = h('select', { id: 'tr-service', name: 'service' }, h('option', { value: '' }, 'Choose a service…'));
  const opSel = h('select', { id: 'tr-operation', name: 'operation' }, h('option', { value: '' }, 'All operations'));
  const minIn = h('input', { id: 'tr-min', name: 'minDuration', type: 'text', placeholder: 'e.g. 10ms', value: q.get('minDuration') || '' });
  const maxIn = h('input', { id: 'tr-max', name: 'maxDuration', type: 'text', placeholder: 'e.g. 2s', value: q.get('maxDuration') || '' });
  const lookback = q.get('lookback') || '1h';
  const lbSel = h('select', { id: 'tr-lookback', name: 'lookback' },
    LOOKBACKS.map(([v, l]) => h('option', { value: v }, l)),
    (!LOOKBACKS.some(([v]) => v === lookback)) ? h('option', { value: lookback }, lookback === 'custom' ? 'Custom window' : lookback) : null);
  lbSel.value = lookback;
  const errIn = h('input', { id: 'tr-error', name: 'error', type: 'checkbox', value: '1', checked: q.get('error') === '1' || q.get('error') === 'true' });
  const limitIn = h('input', { id: 'tr-limit', name: 'limit', type: 'number', min: 1, max: 1500, value: q.get('limit') || '20' });
  const start = q.get('start'), end = q.get('end');
  const windowNote = (start || end) ? h('p', { class: 'notice' }, 'Showing traces between ',
    h('time', null, start ? iso(Number(start) / 1000) : 'the beginning'), ' and ', h('time', null, end ? iso(Number(end) / 1000) : 'now'),
    '. ', h('a', { href: '/ui/traces?' + new URLSearchParams({ service: q.get('service') || '', lookback: '1h' }) }, 'Search the last hour instead')) : null;

  const form = h('form', { class: 'trace-form', dataset: { testid: 'trace-search' }, 'aria-label': 'Search traces' },
    h('div', { class: 'toolbar' },
      field(h('label', { for: 'tr-service' }, 'Service'), svcSel),
      field(h('label', { for: 'tr-operation' }, 'Operation'), opSel),
      field(h('label', { for: 'tr-min' }, 'Min duration'), minIn),
      field(h('label', { for: 'tr-max' }, 'Max duration'), maxIn),
      field(h('label', { for: 'tr-lookback' }, 'Lookback'), lbSel),
      field(h('label', { for: 'tr-limit' }, 'Limit'), limitIn),
      field(h('label', { for: 'tr-error' }, 'Errors only'), errIn, true),
      h('button', { type: 'submit', class: 'btn btn-primary' }, 'Find traces')));

  const { el: tableEl, tbody } = table({ dataset: { testid: 'trace-results' } }, 'Matching traces, newest first',
    ['Trace', 'Services', { label: 'Spans', class: 'num' }, { label: 'Duration', class: 'num' }, 'Started', 'Errors']);
  const status = h('p', { class: 'muted', 'aria-live': 'polite' });
  ctx.main.append(
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'Traces'), h('p', { class: 'sub' }, 'Search the spans the sidecars and services report.'))),
    ...[form, windowNote, err.el, status, h('div', { class: 'table-wrap' }, tableEl)].filter(Boolean));

  async function loadOperations(service, selected) {
    let names = [];
    if (service) {
      try {
        const res = await get(withQuery('/api/operations', { service }), { signal });
        names = ((res && res.data) || []).map((o) => (typeof o === 'string' ? o : o.name));
      } catch (e) {
        if (e.name !== 'AbortError') err.show(e, 'Operations');
      }
    }
    if (service !== svcSel.value) return; // the choice changed meanwhile
    if (selected) names.push(selected);
    opSel.replaceChildren(h('option', { value: '' }, 'All operations'), ...[...new Set(names)].sort().map((n) => h('option', { value: n }, n)));
    opSel.value = selected || '';
  }

  // the form shows the URL's choices at once; the lists fill in when they arrive
  const svc0 = ctx.query.get('service') || '', op0 = ctx.query.get('operation') || '';
  if (svc0) { svcSel.append(h('option', { value: svc0 }, svc0)); svcSel.value = svc0; }
  if (op0) { opSel.append(h('option', { value: op0 }, op0)); opSel.value = op0; }
  (async () => {
    try {
      const res = await get('/api/services', { signal });
      const names = new Set(((res && res.data) || []).concat(svc0 ? [svc0] : []));
      const chosen = svcSel.value;
      svcSel.replaceChildren(h('option', { value: '' }, 'Choose a service…'), ...[...names].sort().map((n) => h('option', { value: n }, n)));
      svcSel.value = chosen;
    } catch (e) {
      if (e.name !== 'AbortError') err.show(e, 'Services');
    }
    if (svcSel.value === svc0) await loadOperations(svc0, op0);
  })();
  svcSel.addEventListener('change', () => { opSel.value = ''; loadOperations(svcSel.value, ''); });

  let search = null;
  function runSearch() {
    if (search) search.abort();
    search = childController(signal);
    const p = ctx.query;
    const service = p.get('service');
    if (!service) {
      status.textContent = 'Choose a service and press “Find traces”.';
      patchList(tbody, [emptyRow(6, 'No search yet.')]);
      ctx.ready();
      return;
    }
    const params = {
      service,
      operation: p.get('operation') || null,
      minDuration: p.get('minDuration') || null,
      maxDuration: p.get('maxDuration') || null,
      limit: p.get('limit') || 20,
      tags: (p.get('error') === '1' || p.get('error') === 'true') ? '{"error":"true"}' : null,
    };
    if (p.get('start') || p.get('end')) {
      params.start = p.get('start') || null;
      params.end = p.get('end') || null;
    } else params.lookback = p.get('lookback') || '1h';
    const url = withQuery('/api/traces', params);
    const fixed = !!(p.get('start') && p.get('end'));
    status.textContent = 'Searching…';
    const once = async (sig) => {
      const res = await request(url, { signal: sig });
      err.clear();
      const traces = ((res.data && res.data.data) || []).map(traceSummary).sort((a, b) => b.start - a.start);
      status.textContent = `${traces.length} trace${traces.length === 1 ? '' : 's'}${fixed ? '' : ' · updated live'}`;
      render(traces);
      ctx.ready();
    };
    const onError = (e) => { err.show(e, 'Search'); status.textContent = ''; patchList(tbody, [emptyRow(6, 'The search failed.')]); ctx.ready(); };
    if (fixed) once(search.signal).catch((e) => { if (e.name !== 'AbortError' && !search.signal.aborted) onError(e); });
    else poll(once, 1000, { signal: search.signal, onError });
  }

  function render(traces) {
    if (!traces.length) { patchList(tbody, [emptyRow(6, 'No traces match.')]); return; }
    patchList(tbody, traces.map((t) => h('tr', { key: t.traceID, dataset: { trace: t.traceID } },
      h('td', null, h('a', { href: '/ui/traces/' + encodeURIComponent(t.traceID) }, `${t.rootService}: ${t.rootOp}`),
        h('div', { class: 'mono muted' }, t.traceID.slice(0, 16))),
      h('td', null, h('span', { class: 'svc-list' }, t.services.map(([n, c]) => h('span', { class: 'tag' }, `${n} (${c})`)))),
      h('td', { class: 'num' }, String(t.spans)),
      h('td', { class: 'num' }, durUs(t.duration)),
      h('td', { class: 'nowrap' }, timeAgo(t.start / 1000)),
      h('td', null, t.errors ? badge('error', { title: `${t.errors} error spans` }) : h('span', { class: 'muted' }, '—'), t.errors ? ` ${t.errors}` : null))));
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const values = {
      service: svcSel.value, operation: opSel.value, minDuration: minIn.value.trim(), maxDuration: maxIn.value.trim(),
      lookback: lbSel.value === 'custom' ? '1h' : lbSel.value, error: errIn.checked ? '1' : null, limit: limitIn.value || null,
      start: null, end: null,
    };
    if (windowNote) windowNote.remove();
    ctx.setQuery(values, { push: true });
    runSearch();
  });
  runSearch();
}
