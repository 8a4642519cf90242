// API client: fetch with the access token, readable errors, blocking-query and polling loops, live status.

const TOKEN_KEY = 'trellis.token';
const listeners = { live: null, auth: null };

export function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch { /* storage disabled: the token lasts until reload */ }
}

/** onLive(ok: boolean) is told after every request whether the server answered. */
export function onLive(fn) { listeners.live = fn; }
/** onAuth(message) is told when the server refuses the token. */
export function onAuth(fn) { listeners.auth = fn; }

function live(ok) { if (listeners.live) listeners.live(ok); }

export class ApiError extends Error {
  constructor(status, message, index = null) {
    super(message);
    this.status = status;
    this.index = index;
  }
}

function errorMessage(text, status, statusText) {
  let msg = (text || '').trim();
  try {
    const j = JSON.parse(msg);
    if (j && typeof j === 'object') {
      if (Array.isArray(j.errors) && j.errors.length) msg = j.errors.map((e) => e.msg || e.message || JSON.stringify(e)).join('; ');
      else if (j.error) msg = typeof j.error === 'string' ? j.error : JSON.stringify(j.error);
      else if (j.message) msg = j.message;
    }
  } catch { /* plain text */ }
  if (msg.length > 300) msg = msg.slice(0, 300) + '…';
  return msg || `${status} ${statusText || 'error'}`;
}

/** Adds query parameters to a path that may already have some. */
export function withQuery(path, params) {
  const parts = [];
  for (const [k, v] of Object.entries(params)) {
    if (v === null || v === undefined || v === false) continue;
    parts.push(v === true || v === '' && k === 'keys' ? encodeURIComponent(k) : `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
  }
  if (!parts.length) return path;
  return path + (path.includes('?') ? '&' : '?') + parts.join('&');
}

/** Percent-encodes each segment of a slash-separated name (KV keys). */
export function encodePath(name) {
  return String(name).split('/').map(encodeURIComponent).join('/');
}

/** One request. Resolves {data, index, status}; rejects with ApiError (status 0 = unreachable) or AbortError. */
export async function request(path, { method = 'GET', body, signal, json = true } = {}) {
  const headers = {};
  const token = getToken();
  if (token) headers['X-Consul-Token'] = token;
  if (body !== undefined && typeof body !== 'string') {
    body = JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  }
  let res;
  try {
    res = await fetch(path, { method, body, headers, signal, cache: 'no-store', credentials: 'same-origin' });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    live(false);
    throw new ApiError(0, 'The server is unreachable.');
  }
  const index = res.headers.get('X-Consul-Index');
  let text;
  try {
    text = await res.text();
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    live(false);
    throw new ApiError(0, 'The connection to the server was lost.');
  }
  live(true);
  if (!res.ok) {
    const msg = errorMessage(text, res.status, res.statusText);
    if (res.status === 403 && /Permission denied|ACL not found/i.test(text) && listeners.auth) listeners.auth(msg);
    throw new ApiError(res.status, msg, index);
  }
  let data = text;
  if (json) {
    if (text === '') data = null;
    else {
      try { data = JSON.parse(text); } catch { data = text; }
    }
  }
  return { data, index, status: res.status };
}

export const get = (path, opts) => request(path, opts).then((r) => r.data);
export const put = (path, body, opts = {}) => request(path, { ...opts, method: 'PUT', body });
export const post = (path, body, opts = {}) => request(path, { ...opts, method: 'POST', body });
export const del = (path, opts = {}) => request(path, { ...opts, method: 'DELETE' });

/** Resolves after ms, or at once when the signal aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal && signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      if (signal) signal.removeEventListener('abort', done);
      resolve();
    }
    if (signal) signal.addEventListener('abort', done, { once: true });
  });
}

/** A controller that aborts with its parent signal. */
export function childController(signal) {
  const c = new AbortController();
  if (signal.aborted) c.abort();
  else signal.addEventListener('abort', () => c.abort(), { once: true });
  return c;
}

/**
 * Blocking-query loop: calls onData(data, response) with the first answer and then every time
 * X-Consul-Index changes, until the signal aborts. With allow404, a 404 counts as data (null).
 * onError(err) is called on failures; the loop backs off 1 s → 10 s and retries.
 */
export function watch(path, onData, { signal, onError, allow404 = false, wait = '30s' } = {}) {
  (async () => {
    let index = null;
    let backoff = 1000;
    while (!signal.aborted) {
      const started = Date.now();
      const url = index ? withQuery(path, { index, wait }) : path;
      let res, data, newIndex;
      try {
        res = await request(url, { signal });
        data = res.data;
        newIndex = res.index;
      } catch (e) {
        if (signal.aborted || e.name === 'AbortError') return;
        if (allow404 && e.status === 404) {
          data = null;
          newIndex = e.index;
          res = { data: null, index: e.index, status: 404 };
        } else {
          if (onError) onError(e);
          await sleep(backoff, signal);
          backoff = Math.min(backoff * 2, 10000);
          index = null;
          continue;
        }
      }
      backoff = 1000;
      const changed = index === null || newIndex !== index;
      if (changed && !signal.aborted) {
        try { onData(data, res); } catch (err) { console.error(err); }
      }
      const n = Number(newIndex);
      if (!newIndex || !Number.isFinite(n) || n <= 0) {
        index = null; // no blocking support here: poll
        await sleep(1000, signal);
      } else {
        if (index !== null && n < Number(index)) index = null; else index = newIndex;
        // an answer that came back at once without a change means the server did not block: slow down
        if (!changed && Date.now() - started < 50) await sleep(1000, signal);
        else await sleep(100, signal);
      }
    }
  })();
}

/** Polls fn() every `every` ms while the tab is visible, until the signal aborts. */
export function poll(fn, every, { signal, onError } = {}) {
  (async () => {
    let backoff = every;
    while (!signal.aborted) {
      if (document.hidden) {
        await new Promise((resolve) => {
          const done = () => { document.removeEventListener('visibilitychange', done); resolve(); };
          document.addEventListener('visibilitychange', done);
          signal.addEventListener('abort', done, { once: true });
        });
        continue;
      }
      try {
        await fn(signal);
        backoff = every;
      } catch (e) {
        if (signal.aborted || e.name === 'AbortError') return;
        if (onError) onError(e);
        backoff = Math.min(Math.max(backoff * 2, 1000), 10000);
      }
      await sleep(backoff, signal);
    }
  })();
}
