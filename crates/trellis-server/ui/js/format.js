// Formatting helpers: relative times, durations, rates, percentages and health ordering.
import { h } from './dom.js';

const RANK = { passing: 0, warning: 1, critical: 2 };

/** The worse of two check statuses. */
export function worse(a, b) {
  return (RANK[b] ?? 0) > (RANK[a] ?? 0) ? b : a;
}

export function worstOf(statuses) {
  let w = 'passing';
  for (const st of statuses) w = worse(w, st);
  return w;
}

/** "12 s ago" / "in 3 s" for a time in ms since the epoch. */
export function relative(ms, now = Date.now()) {
  if (ms === null || ms === undefined || !Number.isFinite(Number(ms))) return '—';
  const d = Math.round((now - Number(ms)) / 1000);
  const a = Math.abs(d);
  let t;
  if (a < 1) return 'just now';
  if (a < 60) t = `${a} s`;
  else if (a < 3600) t = `${Math.floor(a / 60)} min`;
  else if (a < 86400) t = `${Math.floor(a / 3600)} h`;
  else t = `${Math.floor(a / 86400)} d`;
  return d >= 0 ? `${t} ago` : `in ${t}`;
}

export function iso(ms) {
  const d = new Date(Number(ms));
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

/** A <time> showing the relative time, the ISO time in its title; kept fresh by tickTimes(). */
export function timeAgo(ms) {
  if (ms === null || ms === undefined) return h('span', { class: 'muted' }, '—');
  const stamp = iso(ms);
  return h('time', { datetime: stamp, title: stamp, dataset: { rel: Number(ms) } }, relative(ms));
}

/** Refreshes every relative time on the page. */
export function tickTimes(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll('time[data-rel]')) {
    const t = relative(Number(el.dataset.rel), now);
    if (el.textContent !== t) el.textContent = t;
  }
}

function trim(n, digits) {
  return Number(n.toFixed(digits)).toString();
}

/** A duration given in microseconds: "850 µs", "12.3 ms", "1.25 s", "2 min 5 s". */
export function durUs(us) {
  if (us === null || us === undefined || !Number.isFinite(Number(us))) return '—';
  us = Number(us);
  if (us === 0) return '0';
  if (us < 1000) return `${trim(us, 0)} µs`;
  if (us < 1e6) return `${trim(us / 1000, us < 1e4 ? 2 : us < 1e5 ? 1 : 0)} ms`;
  if (us < 6e7) return `${trim(us / 1e6, 2)} s`;
  const s = Math.round(us / 1e6);
  if (s < 3600) return s % 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s / 60} min`;
  const m = Math.floor((s % 3600) / 60);
  return m ? `${Math.floor(s / 3600)} h ${m} min` : `${Math.floor(s / 3600)} h`;
}

export function durMs(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(Number(ms))) return '—';
  return durUs(Number(ms) * 1000);
}

/** 0..1 → "0.5%". */
export function pct(rate) {
  if (rate === null || rate === undefined || !Number.isFinite(Number(rate))) return '—';
  const p = Number(rate) * 100;
  if (p === 0) return '0%';
  if (p < 0.1) return '<0.1%';
  return `${trim(p, p < 10 ? 1 : 0)}%`;
}

export function rate(perSec) {
  if (perSec === null || perSec === undefined || !Number.isFinite(Number(perSec))) return '—';
  const r = Number(perSec);
  if (r === 0) return '0';
  if (r < 0.01) return '<0.01';
  return trim(r, r < 10 ? 2 : r < 100 ? 1 : 0);
}

/** Error-rate class: <1% ok, <5% warn, else bad. */
export function errClass(rate) {
  const r = Number(rate) || 0;
  return r < 0.01 ? 'ok' : r < 0.05 ? 'warn' : 'bad';
}

/** Go-style lookback ("15m", "1h", "2d") to seconds. */
export function lookbackSeconds(lb) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(String(lb || '').trim());
  if (!m) return 900;
  const n = Number(m[1]);
  return n * { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[m[2]];
}

export function plural(n, word, many = word + 's') {
  return `${n} ${n === 1 ? word : many}`;
}

/** Something (string, object, null) shown as text. */
export function asText(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && typeof v.reason === 'string' && Object.keys(v).length === 1) return v.reason;
  try { return JSON.stringify(v); } catch { return String(v); }
}
