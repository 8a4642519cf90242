// Topology page: service graph laid out in JS (layers by longest path, barycentre ordering) plus an edge table.
import { h, s, patchList } from '../dom.js';
import { watch, poll, get, withQuery, childController } from '../api.js';
import { rate, pct, durMs, errClass, lookbackSeconds } from '../format.js';
import { errorSlot, table, emptyRow } from '../ui.js';
import { serviceHealth } from './services.js';

const NW = 150, NH = 46, COL = 330, ROW = 74, MARGIN = 30;
const LOOKBACKS = [['5m', 'Last 5 minutes'], ['15m', 'Last 15 minutes'], ['1h', 'Last hour']];

/**
 * Layered layout (Sugiyama style): cycles broken by a DFS from the roots, layer = longest path
 * from a root, long edges get a placeholder in every layer they cross, order within a layer from
 * a few barycentre sweeps. Returns {pos: Map name -> {x, y, layer}, routes: Map edge -> [{x, y}]
 * (placeholders crossed), width, height, back: Set of edges drawn backwards}.
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
  // chain graph: real nodes plus one placeholder per crossed layer of a long edge
  const up = new Map(names.map((n) => [n, []]));
  const down = new Map(names.map((n) => [n, []]));
  const chains = new Map();
  for (const [u, vs] of dag) {
    for (const v of vs) {
      let prev = u;
      const chain = [];
      for (let l = layer.get(u) + 1; l < layer.get(v); l++) {
        const d = `\u0000${u}->${v}#${l}`;
        layers[l].push(d);
        up.set(d, []);
        down.set(d, []);
        chain.push(d);
        down.get(prev).push(d);
        up.get(d).push(prev);
        prev = d;
      }
      down.get(prev).push(v);
      up.get(v).push(prev);
      if (chain.length) chains.set(`${u}->${v}`, chain);
    }
  }
  const maxCount = Math.max(1, ...layers.map((l) => l.length));
  const yOf = new Map();
  const place = (l) => {
    const off = (maxCount - layers[l].length) / 2;
    layers[l].forEach((n, i) => yOf.set(n, (off + i) * ROW));
  };
  for (let l = 0; l < nLayers; l++) place(l);
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
    for (let l = 1; l < nLayers; l++) sweep(l, up);
    for (let l = nLayers - 2; l >= 0; l--) sweep(l, down);
  }
  const selfLoops = edges.some((e) => e.parent === e.child);
  const top = MARGIN + (selfLoops ? 40 : 0);
  const at = (n, l) => ({ x: MARGIN + l * COL, y: top + yOf.get(n), layer: l });
  const pos = new Map();
  for (const n of names) pos.set(n, at(n, layer.get(n)));
  const routes = new Map();
  for (const [key, chain] of chains) routes.set(key, chain.map((d) => at(d, Number(d.slice(d.lastIndexOf('#') + 1)))));
  const width = nLayers ? MARGIN * 2 + (nLayers - 1) * COL + NW : 200;
  const height = top + maxCount * ROW - (ROW - NH) + MARGIN + (back.size ? 70 : 0);
  return { pos, routes, width, height, back };
}

function truncate(str, n) {
  return str.length > n ? str.slice(0, n - 1) + '…' : str;
}

/** Point at t on a cubic Bézier. */
function bez(p0, p1, p2, p3, t) {
  const m = 1 - t;
  return [0, 1].map((i) => m ** 3 * p0[i] + 3 * m * m * t * p1[i] + 3 * m * t * t * p2[i] + t ** 3 * p3[i]);
}

function edgeGeometry(a, b, backEdge, self, via = []) {
  if (self) {
    const x1 = a.x + NW * 0.65, x2 = a.x + NW * 0.35, y = a.y;
    return { d: `M${x1},${y} C${x1 + 30},${y - 55} ${x2 - 30},${y - 55} ${x2},${y}`, lx: a.x + NW / 2, ly: y - 44 };
  }
  if (backEdge || b.x <= a.x) {
    const s = [a.x + NW / 2, a.y + NH], t = [b.x + NW / 2, b.y + NH];
    const dy = 55 + Math.abs(s[0] - t[0]) * 0.12;
    const c1 = [s[0], s[1] + dy], c2 = [t[0], t[1] + dy];
    const [lx, ly] = bez(s, c1, c2, t, 0.5);
    return { d: `M${s} C${c1} ${c2} ${t}`, lx, ly: ly + 4 };
  }
  // through the placeholders of the layers it crosses: curves between columns, straight across them
  const pts = [[a.x + NW, a.y + NH / 2]];
  for (const p of via) pts.push([p.x, p.y + NH / 2], [p.x + NW, p.y + NH / 2]);
  pts.push([b.x - 2, b.y + NH / 2]);
  let d = `M${pts[0]}`;
  let label = null;
  for (let i = 0; i + 1 < pts.length; i += 2) {
    const s = pts[i], t = pts[i + 1];
    const dx = Math.max(30, (t[0] - s[0]) / 2);
    const c1 = [s[0] + dx, s[1]], c2 = [t[0] - dx, t[1]];
    d += ` C${c1} ${c2} ${t}`;
    if (!label) label = bez(s, c1, c2, t, 0.5);
    if (i + 2 < pts.length) d += ` L${pts[i + 2]}`;
  }
  return { d, lx: label[0], ly: label[1] - 6 };
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
    const { pos, routes, width, height, back } = layoutGraph(names, edges);
    svg.setAttribute('width', width);
    svg.setAttribute('height', height);
    svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    status.textContent = edges.length ? `${names.length} services, ${edges.length} call paths in the last ${lookback}.` : `No calls between services were traced in the last ${lookback}.`;
    patchList(gEdges, edges.map((e) => {
      const key = `${e.parent}->${e.child}`;
      const cls = errClass(e.errorRate);
      const g = edgeGeometry(pos.get(e.parent), pos.get(e.child), back.has(key), e.parent === e.child, routes.get(key));
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
        s('a', { href: '/ui/services/' + encodeURIComponent(n) },
          s('title', null, `${n} — ${sub}`),
          s('rect', { x: p.x, y: p.y, width: NW, height: NH, rx: 6 }),
          s('text', { x: p.x + 10, y: p.y + 19 }, truncate(n, 19)),
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
