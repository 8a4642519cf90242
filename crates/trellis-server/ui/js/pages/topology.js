// Topology page: service graph laid out in JS (layers by longest path, barycentre ordering) plus an edge table.
import { h, s, patchList } from '../dom.js';
import { watch, poll, get, withQuery, childController } from '../api.js';
import { rate, pct, durMs, errClass, lookbackSeconds } from '../format.js';
import { errorSlot, table, emptyRow } from '../ui.js';
import { serviceHealth } from './services.js';

const NW = 160, NH = 46, COL = 380, ROW = 74, MARGIN = 40;
const LOOKBACKS = [['5m', 'Last 5 minutes'], ['15m', 'Last 15 minutes'], ['1h', 'Last hour']];

/**
 * Layered layout: cycles broken by a DFS from the roots, layer = longest path from a root,
 * order within a layer from a few barycentre sweeps. Returns {pos: Map name -> {x, y, layer}, width, height, back: Set}.
 */
export function layoutGraph(names, edges) {
  const out = new Map(names.map((n) => [n, []]));
  const inc = new Map(names.map((n) => [n, []]));
  for (const e of edges) {
    if (e.parent === e.child) continue;
    out.get(e.parent).push(e.child);
    inc.get(e.child).push(e.parent);
  }
  for (const l of out.values()) l.sort();
  const state = new Map();
  const dag = new Map(names.map((n) => [n, []]));
  const back = new Set();
  const dfs = (start) => {
    state.set(start, 1);
    const stack = [[start, 0]];
    while (stack.length) {
      const top = stack[stack.length - 1];
      const kids = out.get(top[0]);
      if (top[1] < kids.length) {
        const k = kids[top[1]++];
        const st = state.get(k) || 0;
        if (st === 1) back.add(top[0] + '->' + k);
        else {
          dag.get(top[0]).push(k);
          if (st === 0) { state.set(k, 1); stack.push([k, 0]); }
        }
      } else { state.set(top[0], 2); stack.pop(); }
    }
  };
  for (const n of names) if (!inc.get(n).length && !state.get(n)) dfs(n);
  for (const n of names) if (!state.get(n)) dfs(n);
  // longest path from the roots, in topological order (Kahn)
  const indeg = new Map(names.map((n) => [n, 0]));
  for (const l of dag.values()) for (const k of l) indeg.set(k, indeg.get(k) + 1);
  const queue = names.filter((n) => indeg.get(n) === 0);
  const layer = new Map(names.map((n) => [n, 0]));
  for (let i = 0; i < queue.length; i++) {
    const u = queue[i];
    for (const v of dag.get(u)) {
      layer.set(v, Math.max(layer.get(v), layer.get(u) + 1));
      indeg.set(v, indeg.get(v) - 1);
      if (indeg.get(v) === 0) queue.push(v);
    }
  }
  const nLayers = names.length ? Math.max(...layer.values()) + 1 : 0;
  const layers = Array.from({ length: nLayers }, () => []);
  for (const n of names) layers[layer.get(n)].push(n);
  const maxCount = Math.max(1, ...layers.map((l) => l.length));
  const yOf = new Map();
  const place = (l) => {
    const off = (maxCount - layers[l].length) / 2;
    layers[l].forEach((n, i) => yOf.set(n, (off + i) * ROW));
  };
  for (let l = 0; l < nLayers; l++) place(l);
  const dagIn = new Map(names.map((n) => [n, []]));
  for (const [u, l] of dag) for (const v of l) dagIn.get(v).push(u);
  const sweep = (l, neighbours) => {
    const bary = new Map();
    for (const n of layers[l]) {
      const ns = neighbours.get(n);
      bary.set(n, ns.length ? ns.reduce((a, m) => a + yOf.get(m), 0) / ns.length : yOf.get(n));
    }
    layers[l].sort((a, b) => bary.get(a) - bary.get(b) || yOf.get(a) - yOf.get(b));
    place(l);
  };
  for (let iter = 0; iter < 3; iter++) {
    for (let l = 1; l < nLayers; l++) sweep(l, dagIn);
    for (let l = nLayers - 2; l >= 0; l--) sweep(l, dag);
  }
  const pos = new Map();
  const selfLoops = edges.some((e) => e.parent === e.child);
  const top = MARGIN + (selfLoops ? 40 : 0);
  for (const n of names) pos.set(n, { x: MARGIN + layer.get(n) * COL, y: top + yOf.get(n), layer: layer.get(n) });
  const width = nLayers ? MARGIN * 2 + (nLayers - 1) * COL + NW : 200;
  const height = top + maxCount * ROW - (ROW - NH) + MARGIN + (back.size ? 70 : 0);
  return { pos, width, height, back };
}

function truncate(str, n) {
  return str.length > n ? str.slice(0, n - 1) + '…' : str;
}

function edgeGeometry(a, b, backEdge, self) {
  if (self) {
    const x1 = a.x + NW * 0.65, x2 = a.x + NW * 0.35, y = a.y;
    return { d: `M${x1},${y} C${x1 + 30},${y - 55} ${x2 - 30},${y - 55} ${x2},${y}`, lx: a.x + NW / 2, ly: y - 44 };
  }
  if (backEdge || b.x <= a.x) {
    const sx = a.x + NW / 2, sy = a.y + NH, tx = b.x + NW / 2, ty = b.y + NH;
    const d = 55 + Math.abs(sx - tx) * 0.12;
    const c1 = [sx, sy + d], c2 = [tx, ty + d];
    return { d: `M${sx},${sy} C${c1[0]},${c1[1]} ${c2[0]},${c2[1]} ${tx},${ty}`, lx: (sx + 3 * c1[0] + 3 * c2[0] + tx) / 8, ly: (sy + 3 * c1[1] + 3 * c2[1] + ty) / 8 + 4 };
  }
  const sx = a.x + NW, sy = a.y + NH / 2, tx = b.x - 2, ty = b.y + NH / 2;
  const dx = Math.max(40, (tx - sx) / 2);
  const c1 = [sx + dx, sy], c2 = [tx - dx, ty];
  // label near the start of long edges so it stays in the gap next to its caller
  const span = tx - sx;
  const t = span > COL ? Math.min(0.5, (COL - NW) / 2 / span + 0.05) : 0.5;
  const mt = 1 - t;
  const lx = mt ** 3 * sx + 3 * mt * mt * t * c1[0] + 3 * mt * t * t * c2[0] + t ** 3 * tx;
  const ly = mt ** 3 * sy + 3 * mt * mt * t * c1[1] + 3 * mt * t * t * c2[1] + t ** 3 * ty;
  return { d: `M${sx},${sy} C${c1[0]},${c1[1]} ${c2[0]},${c2[1]} ${tx},${ty}`, lx, ly: ly - 6 };
}

export function mount(ctx) {
  ctx.title('Topology');
  const { signal } = ctx;
  let lookback = LOOKBACKS.some(([v]) => v === ctx.query.get('lookback')) ? ctx.query.get('lookback') : '15m';
  const err = errorSlot(), regErr = errorSlot();
  const lbSel = h('select', { id: 'topo-lookback' }, LOOKBACKS.map(([v, l]) => h('option', { value: v }, l)));
  lbSel.value = lookback;
  const status = h('p', { class: 'muted' });
  const defs = s('defs', null, ['ok', 'warn', 'bad'].map((c) => s('marker', {
    id: 'arrow-' + c, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 10, markerHeight: 10, markerUnits: 'userSpaceOnUse', orient: 'auto',
  }, s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'marker-' + c }))));
  const gEdges = s('g', { class: 'edges' }), gNodes = s('g', { class: 'nodes' });
  const svg = s('svg', { class: 'topology', dataset: { testid: 'topology-graph' }, 'aria-label': 'Service dependency graph; the same calls are listed in the table below', width: 200, height: 100 },
    defs, gEdges, gNodes);
  const tbl = table({ dataset: { testid: 'topology-table' } }, 'Calls between services',
    ['Caller', 'Callee', { label: 'Calls', class: 'num' }, { label: 'Req/s', class: 'num' }, { label: 'Errors', class: 'num' }, { label: 'Error %', class: 'num' }, { label: 'p50', class: 'num' }, { label: 'p99', class: 'num' }]);
  ctx.main.append(
    h('div', { class: 'page-head' },
      h('div', null, h('h1', null, 'Topology'), h('p', { class: 'sub' }, 'Who calls whom, from traces. Edge colour: error rate; node colour: instance health.')),
      h('div', { class: 'actions' }, h('div', { class: 'field' }, h('label', { for: 'topo-lookback' }, 'Lookback'), lbSel))),
    err.el, regErr.el,
    h('div', { class: 'legend', 'aria-hidden': 'true' },
      h('span', null, h('span', { class: 'swatch ok' }), 'errors < 1%'), h('span', null, h('span', { class: 'swatch warn' }), '< 5%'), h('span', null, h('span', { class: 'swatch bad' }), '≥ 5%')),
    status,
    h('div', { class: 'graph-wrap' }, svg),
    h('section', { class: 'section' }, h('div', { class: 'table-wrap' }, tbl.el)));

  let deps = null, health = new Map(), lastSig = '';

  function render() {
    if (!deps) return;
    const sig = JSON.stringify(deps) + '|' + [...health.values()].map((x) => `${x.Name}:${serviceHealth(x)}:${x.InstanceCount}`).join(',');
    if (sig === lastSig) return;
    lastSig = sig;
    const secs = lookbackSeconds(lookback);
    const edges = deps.slice().sort((a, b) => (a.parent + '\u0000' + a.child).localeCompare(b.parent + '\u0000' + b.child));
    const names = [...new Set(edges.flatMap((e) => [e.parent, e.child]))].sort();
    const { pos, width, height, back } = layoutGraph(names, edges);
    svg.setAttribute('width', width);
    svg.setAttribute('height', height);
    svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    status.textContent = edges.length ? `${names.length} services, ${edges.length} call paths in the last ${lookback}.` : `No calls between services were traced in the last ${lookback}.`;
    patchList(gEdges, edges.map((e) => {
      const key = `${e.parent}->${e.child}`;
      const cls = errClass(e.errorRate);
      const g = edgeGeometry(pos.get(e.parent), pos.get(e.child), back.has(key), e.parent === e.child);
      const label = `${rate(e.callCount / secs)} req/s · ${pct(e.errorRate)} · p99 ${durMs(e.p99Ms)}`;
      return s('g', { key, class: `edge edge-${cls}`, dataset: { edge: key, errorRate: Number(e.errorRate) || 0, calls: e.callCount, p99Ms: e.p99Ms } },
        s('title', null, `${e.parent} → ${e.child}: ${e.callCount} calls, ${e.errorCount} errors, ${label}`),
        s('path', { d: g.d, 'marker-end': `url(#arrow-${cls})` }),
        s('text', { x: g.lx.toFixed(1), y: g.ly.toFixed(1), 'text-anchor': 'middle' }, label));
    }));
    patchList(gNodes, names.map((n) => {
      const p = pos.get(n);
      const entry = health.get(n);
      const hl = entry ? serviceHealth(entry) : 'unknown';
      const sub = entry ? `${entry.InstanceCount} inst. · ${hl}` : 'not registered';
      return s('g', { key: n, class: `node node-${hl}`, dataset: { node: n, health: hl } },
        s('a', { href: '/ui/services/' + encodeURIComponent(n), 'aria-label': `${n}: ${sub}` },
          s('title', null, `${n} — ${sub}`),
          s('rect', { x: p.x, y: p.y, width: NW, height: NH, rx: 6 }),
          s('text', { x: p.x + 10, y: p.y + 19 }, truncate(n, 20)),
          s('text', { x: p.x + 10, y: p.y + 36, class: 'node-sub' }, sub)));
    }));
    if (!edges.length) patchList(tbl.tbody, [emptyRow(8, 'No calls traced.')]);
    else patchList(tbl.tbody, edges.map((e) => {
      const key = `${e.parent}->${e.child}`;
      const cls = errClass(e.errorRate);
      return h('tr', { key, dataset: { edge: key } },
        h('td', { class: 'wrap-anywhere' }, h('a', { href: '/ui/services/' + encodeURIComponent(e.parent) }, e.parent)),
        h('td', { class: 'wrap-anywhere' }, h('a', { href: '/ui/services/' + encodeURIComponent(e.child) }, e.child)),
        h('td', { class: 'num' }, String(e.callCount)),
        h('td', { class: 'num' }, rate(e.callCount / secs)),
        h('td', { class: 'num' }, String(e.errorCount)),
        h('td', { class: 'num' }, h('span', { class: 'err-' + cls }, pct(e.errorRate))),
        h('td', { class: 'num' }, durMs(e.p50Ms)),
        h('td', { class: 'num' }, durMs(e.p99Ms)));
    }));
  }

  let loop = null;
  function start() {
    if (loop) loop.abort();
    loop = childController(signal);
    poll(async (sig) => {
      const res = await get(withQuery('/v1/trellis/traces/dependencies', { lookback }), { signal: sig });
      err.clear();
      deps = (res && res.dependencies) || [];
      render();
      ctx.ready();
    }, 1000, { signal: loop.signal, onError: (e) => { err.show(e, 'Dependencies'); if (!deps) { deps = []; render(); } ctx.ready(); } });
  }
  lbSel.addEventListener('change', () => {
    lookback = lbSel.value;
    ctx.setQuery({ lookback: lookback === '15m' ? null : lookback });
    lastSig = '';
    start();
  });

  watch('/v1/internal/ui/services', (data) => {
    regErr.clear();
    health = new Map((Array.isArray(data) ? data : []).map((x) => [x.Name, x]));
    render();
  }, { signal, onError: (e) => regErr.show(e, 'Instance health') });
  start();
}
