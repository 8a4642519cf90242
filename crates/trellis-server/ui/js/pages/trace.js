// Trace page: span waterfall (indented by depth, bars placed on the trace's time axis) and a span details panel.
import { h, fill, patchList } from '../dom.js';
import { get, poll } from '../api.js';
import { timeAgo, durUs, iso } from '../format.js';
import { badge, errorSlot } from '../ui.js';
import { isErrorSpan, parentOf, traceSummary } from './traces.js';

function tagValue(tags, key) {
  const t = (tags || []).find((x) => x.key === key);
  return t ? t.value : undefined;
}

function show(v) {
  if (v === null || v === undefined) return '';
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

function tagTable(tags, label, attrKey = false) {
  if (!tags || !tags.length) return h('p', { class: 'muted' }, 'None.');
  return h('table', { class: 'kv-table', 'aria-label': label },
    h('tbody', null, tags.map((t) => h('tr', { dataset: attrKey ? { attr: t.key } : null },
      h('th', { scope: 'row' }, t.key), h('td', null, show(t.value))))));
}

/** Orders spans depth-first by start time; returns [{span, depth, parent}]. */
function layout(spans) {
  const byId = new Map(spans.map((s) => [s.spanID, s]));
  const children = new Map();
  const roots = [];
  for (const s of spans) {
    const p = parentOf(s);
    if (p && byId.has(p) && p !== s.spanID) {
      if (!children.has(p)) children.set(p, []);
      children.get(p).push(s);
    } else roots.push(s);
  }
  const byStart = (a, b) => a.startTime - b.startTime || a.spanID.localeCompare(b.spanID);
  roots.sort(byStart);
  for (const list of children.values()) list.sort(byStart);
  const out = [];
  const seen = new Set();
  const stack = roots.slice().reverse().map((s) => [s, 0]);
  while (stack.length) {
    const [s, depth] = stack.pop();
    if (seen.has(s.spanID)) continue;
    seen.add(s.spanID);
    const p = parentOf(s);
    out.push({ span: s, depth, parent: p && byId.has(p) && p !== s.spanID ? p : '' });
    const kids = children.get(s.spanID) || [];
    for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], depth + 1]);
  }
  for (const s of spans) if (!seen.has(s.spanID)) out.push({ span: s, depth: 0, parent: '' }); // cycles
  return out;
}

export function mount(ctx) {
  const traceID = ctx.params[0];
  ctx.title('Trace ' + traceID.slice(0, 12));
  const { signal } = ctx;
  const err = errorSlot();
  const title = h('h1', null, 'Trace');
  const sub = h('div', { class: 'sub' }, h('span', { class: 'mono' }, traceID));
  const waterfall = h('div', { class: 'waterfall', dataset: { testid: 'waterfall' }, role: 'group', 'aria-label': 'Spans by start time' });
  const details = h('aside', { class: 'details', 'aria-label': 'Span details', hidden: true });
  const grid = h('div', { class: 'trace-layout' }, waterfall, details);
  ctx.main.append(h('div', { class: 'page-head' }, h('div', null, title, sub),
    h('div', { class: 'actions' }, h('a', { href: '/ui/traces' }, '← Search traces'))), err.el, grid);

  let trace = null, rows = [], selected = ctx.query.get('span') || '', t0 = 0, total = 1, lastSig = '';

  function select(spanID, focus = false) {
    selected = spanID;
    ctx.setQuery({ span: spanID || null });
    renderRows();
    renderDetails();
    if (focus) {
      const b = waterfall.querySelector(`[data-span="${CSS.escape(spanID)}"]`);
      if (b) b.focus();
    }
  }

  function onKey(e) {
    if (e.key !== 'ArrowDown' && e.key !== 'ArrowUp' && e.key !== 'Home' && e.key !== 'End') return;
    const buttons = [...waterfall.querySelectorAll('.wf-row')];
    const i = buttons.indexOf(e.currentTarget);
    const j = e.key === 'ArrowDown' ? i + 1 : e.key === 'ArrowUp' ? i - 1 : e.key === 'Home' ? 0 : buttons.length - 1;
    if (buttons[j]) { e.preventDefault(); buttons[j].focus(); }
  }

  function renderRows() {
    const procs = trace.processes || {};
    const ticks = [0, 0.25, 0.5, 0.75, 1];
    const head = h('div', { class: 'wf-head', key: '__head', 'aria-hidden': 'true' },
      h('div', null, 'Service: operation'),
      h('div', { class: 'wf-ticks' }, ticks.map((f) => h('span', { style: { left: f * 100 + '%' } }, durUs(total * f)))));
    const nodes = [head];
    for (const r of rows) {
      const s = r.span;
      const svc = (procs[s.processID] && procs[s.processID].serviceName) || s.processID || '?';
      const error = isErrorSpan(s);
      const left = ((s.startTime - t0) / total) * 100;
      const width = Math.max((s.duration / total) * 100, 0.2);
      let durStyle, inside = false;
      if (left + width < 82) durStyle = { left: `calc(${(left + width).toFixed(3)}% + 4px)` };
      else if (left > 14) durStyle = { right: `calc(${(100 - left).toFixed(3)}% + 4px)` };
      else { durStyle = { right: `calc(${(100 - left - width).toFixed(3)}% + 4px)` }; inside = true; }
      nodes.push(h('button', {
        type: 'button', class: 'wf-row', key: s.spanID,
        dataset: { span: s.spanID, parent: r.parent, depth: r.depth, service: svc, error: error ? 'true' : null },
        'aria-pressed': selected === s.spanID ? 'true' : 'false',
        onclick: () => select(selected === s.spanID ? '' : s.spanID),
        onkeydown: onKey,
      },
      h('span', { class: 'wf-label', style: { paddingLeft: 8 + r.depth * 16 + 'px' }, title: `${svc}: ${s.operationName}` },
        error ? h('span', { class: 'err' }, '! error') : null,
        h('span', { class: 'svc' }, svc), ' ', s.operationName),
      h('span', { class: 'wf-time' },
        h('span', { class: 'wf-bar', style: { left: left.toFixed(3) + '%', width: width.toFixed(3) + '%' } }),
        h('span', { class: ['wf-dur', inside && 'wf-dur-in'], style: durStyle }, durUs(s.duration)))));
    }
    patchList(waterfall, nodes);
  }

  function renderDetails() {
    const r = rows.find((x) => x.span.spanID === selected);
    if (!r) {
      details.hidden = true;
      details.removeAttribute('data-testid');
      grid.classList.remove('with-details');
      return;
    }
    const s = r.span;
    const proc = (trace.processes || {})[s.processID] || { serviceName: s.processID, tags: [] };
    const svc = proc.serviceName || '?';
    const servedBy = tagValue(proc.tags, 'service.instance.id') ?? tagValue(s.tags, 'service.instance.id')
      ?? tagValue(s.tags, 'server.address') ?? tagValue(proc.tags, 'server.address');
    const serviceLink = (text) => h('a', { href: '/ui/services/' + encodeURIComponent(svc) }, text);
    details.hidden = false;
    details.dataset.testid = 'span-details';
    grid.classList.add('with-details');
    fill(details,
      h('div', { class: 'section-head' }, h('h2', null, s.operationName),
        h('button', { type: 'button', class: 'btn btn-small', onclick: () => select('', false) }, 'Close')),
      h('table', { class: 'kv-table', 'aria-label': 'Span' }, h('tbody', null,
        h('tr', null, h('th', { scope: 'row' }, 'service'), h('td', null, serviceLink(svc))),
        h('tr', null, h('th', { scope: 'row' }, 'served by'), h('td', { dataset: { testid: 'served-by' } }, servedBy !== undefined ? serviceLink(show(servedBy)) : h('span', { class: 'muted' }, 'unknown'))),
        h('tr', null, h('th', { scope: 'row' }, 'status'), h('td', null, isErrorSpan(s) ? badge('error') : badge('ok'))),
        h('tr', null, h('th', { scope: 'row' }, 'span ID'), h('td', null, s.spanID)),
        h('tr', null, h('th', { scope: 'row' }, 'parent'), h('td', null, r.parent || parentOf(s) || '—')),
        h('tr', null, h('th', { scope: 'row' }, 'start'), h('td', null, `+${durUs(s.startTime - t0)} · ${iso(s.startTime / 1000)}`)),
        h('tr', null, h('th', { scope: 'row' }, 'duration'), h('td', null, durUs(s.duration))))),
      h('h3', null, 'Attributes'), tagTable(s.tags, 'Attributes', true),
      h('h3', null, `Events (${(s.logs || []).length})`),
      (s.logs && s.logs.length)
        ? h('ol', { class: 'logs' }, s.logs.map((l) => h('li', null, h('div', { class: 'muted' }, `+${durUs(l.timestamp - t0)}`), tagTable(l.fields, 'Event fields'))))
        : h('p', { class: 'muted' }, 'None.'),
      h('h3', null, `Process: ${svc}`), tagTable(proc.tags, 'Process tags'),
      (s.warnings && s.warnings.length) ? [h('h3', null, 'Warnings'), h('ul', null, s.warnings.map((w) => h('li', null, w)))] : null);
  }

  poll(async (sig) => {
    let res;
    try {
      res = await get('/api/traces/' + encodeURIComponent(traceID), { signal: sig });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      if (!trace) {
        err.show(e.status === 404 ? new Error(`Trace ${traceID} was not found (it may not have arrived yet, or it has expired).`) : e);
        ctx.ready();
      }
      throw e;
    }
    const t = res && res.data && res.data[0];
    if (!t) throw new Error('empty answer');
    err.clear();
    const spans = t.spans || [];
    const sig2 = spans.length + ':' + spans.reduce((n, s) => n + s.duration + s.startTime % 1000, 0);
    if (sig2 === lastSig) return;
    lastSig = sig2;
    trace = t;
    const sum = traceSummary(t);
    t0 = sum.start;
    total = Math.max(1, sum.duration);
    rows = layout(spans);
    title.textContent = `${sum.rootService}: ${sum.rootOp}`;
    fill(sub, h('span', { class: 'mono' }, traceID), ' · started ', timeAgo(sum.start / 1000), ` · ${durUs(sum.duration)} · ${sum.spans} spans · ${sum.services.length} services`,
      sum.errors ? [' · ', badge('error'), ` ${sum.errors}`] : null);
    ctx.title(`${sum.rootService}: ${sum.rootOp}`);
    renderRows();
    renderDetails();
    ctx.ready();
  }, 1000, { signal });
}
