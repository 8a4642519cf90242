// Client-side router: maps /ui/ URLs to page modules, intercepts same-origin links, mounts and unmounts pages.
import { h } from './dom.js';
import * as overview from './pages/overview.js';
import * as services from './pages/services.js';
import * as service from './pages/service.js';
import * as topology from './pages/topology.js';
import * as traces from './pages/traces.js';
import * as trace from './pages/trace.js';
import * as transactions from './pages/transactions.js';
import * as transaction from './pages/transaction.js';
import * as kv from './pages/kv.js';
import * as sessions from './pages/sessions.js';

const ROUTES = [
  [/^\/ui\/?$/, overview, '/ui/'],
  [/^\/ui\/services\/?$/, services, '/ui/services'],
  [/^\/ui\/services\/(.+)$/, service, '/ui/services'],
  [/^\/ui\/topology\/?$/, topology, '/ui/topology'],
  [/^\/ui\/traces\/?$/, traces, '/ui/traces'],
  [/^\/ui\/traces\/([^/]+)\/?$/, trace, '/ui/traces'],
  [/^\/ui\/transactions\/?$/, transactions, '/ui/transactions'],
  [/^\/ui\/transactions\/([^/]+)\/?$/, transaction, '/ui/transactions'],
  [/^\/ui\/kv(?:\/(.*))?$/, kv, '/ui/kv/'],
  [/^\/ui\/sessions\/?$/, sessions, '/ui/sessions'],
];

const notFound = {
  mount(ctx) {
    ctx.title('Not found');
    ctx.main.append(h('h1', null, 'Page not found'),
      h('p', null, 'There is no dashboard page at ', h('code', null, location.pathname), '. ', h('a', { href: '/ui/' }, 'Go to the overview'), '.'));
    ctx.ready();
  },
};

let current = null; // { controller, path, search }

function decode(seg) {
  try { return decodeURIComponent(seg); } catch { return seg; }
}

function markNav(section) {
  for (const a of document.querySelectorAll('nav[aria-label=Main] a')) {
    if (a.getAttribute('href') === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

/** Mounts the page for the current location. */
export function route({ focus = false } = {}) {
  if (current) current.controller.abort();
  const main = document.getElementById('main');
  const path = location.pathname;
  let mod = notFound, params = [], section = null;
  for (const [re, m, sec] of ROUTES) {
    const match = re.exec(path);
    if (match) {
      mod = m;
      section = sec;
      params = match.slice(1).map((p) => (p === undefined ? '' : p));
      break;
    }
  }
  markNav(section);
  const controller = new AbortController();
  current = { controller, path, search: location.search };
  main.dataset.ready = 'false';
  main.replaceChildren();
  main.removeAttribute('aria-busy');
  const ctx = {
    main,
    rawParams: params,
    params: params.map(decode),
    query: new URLSearchParams(location.search),
    signal: controller.signal,
    title(t) { document.title = `${t} — Trellis`; },
    ready() { if (!controller.signal.aborted) main.dataset.ready = 'true'; },
    /** Rewrites the query string of this page without remounting it. */
    setQuery(values, { push = false } = {}) {
      const q = new URLSearchParams(location.search);
      for (const [k, v] of Object.entries(values)) {
        if (v === null || v === undefined || v === '' || v === false) q.delete(k);
        else q.set(k, v === true ? '1' : String(v));
      }
      const s = q.toString();
      const url = location.pathname + (s ? '?' + s : '');
      if (push) history.pushState(null, '', url);
      else history.replaceState(null, '', url);
      current.search = location.search;
      this.query = q;
    },
    navigate,
  };
  try {
    mod.mount(ctx);
  } catch (e) {
    console.error(e);
    main.append(h('div', { class: 'error', role: 'alert' }, 'This page failed to load: ' + e.message));
    ctx.ready();
  }
  if (focus) {
    window.scrollTo(0, 0);
    main.focus({ preventScroll: true });
  }
}

/** Goes to a /ui/ URL without reloading. */
export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  route({ focus: true });
}

function onClick(e) {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest && e.target.closest('a');
  if (!a) return;
  const href = a.getAttribute('href');
  if (!href || href.startsWith('#') || a.hasAttribute('download') || (a.getAttribute('target') || '_self') !== '_self') return;
  const url = new URL(href, location.href);
  if (url.origin !== location.origin || !(url.pathname === '/ui' || url.pathname.startsWith('/ui/'))) return;
  if (url.pathname.startsWith('/ui/assets/')) return;
  e.preventDefault();
  navigate(url.pathname + url.search + url.hash);
}

export function start() {
  document.addEventListener('click', onClick);
  window.addEventListener('popstate', () => {
    // a jump to a #fragment (the skip link) is not a new page
    if (current && current.path === location.pathname && current.search === location.search) return;
    route({ focus: true });
  });
  route();
}
