// Transaction page: state badge, timeline, branches with attempts and errors, links to traces, abort.
import { h, fill, patchList } from '../dom.js';
import { watch, post } from '../api.js';
import { timeAgo, durMs, iso, asText } from '../format.js';
import { badge, errorSlot, table, emptyRow, confirm, announce } from '../ui.js';

const MARGIN_US = 5_000_000; // look 5 s around the transaction for its traces

function branchService(b) {
  if (b.service) return b.service;
  if (b.url) {
    // a URL branch names its service only by a host name (not an address or localhost)
    try {
      const host = new URL(b.url).hostname;
      return /^[\d.]+$|^\[|^localhost$/.test(host) ? '' : host;
    } catch { return ''; }
  }
  return '';
}

export function mount(ctx) {
  const gid = ctx.params[0];
  ctx.title('Transaction ' + gid);
  const { signal } = ctx;
  const err = errorSlot(), actErr = errorSlot();
  const badgeSlot = h('span', { dataset: { testid: 'txn-state-badge' }, class: 'badge badge-none badge-big' }, '…');
  const actions = h('div', { class: 'actions' });
  const sub = h('p', { class: 'sub' });
  const timeline = h('ol', { class: 'timeline', dataset: { testid: 'txn-timeline' }, 'aria-label': 'Timeline' });
  const cause = h('div');
  const tbl = table(null, 'Branches',
    ['Branch', 'Target', 'State', { label: 'Attempts', class: 'num' }, 'Last error', 'Payload', 'Traces']);
  ctx.main.append(
    h('div', { class: 'page-head' },
      h('div', null, h('h1', null, h('span', { class: 'muted' }, 'Transaction '), h('span', { class: 'mono' }, gid)), h('p', null, badgeSlot), sub),
      actions),
    err.el, actErr.el,
    h('section', { class: 'section panel', 'aria-labelledby': 'tl-title' }, h('h2', { id: 'tl-title' }, 'Timeline'), timeline, cause),
    h('section', { class: 'section' }, h('div', { class: 'table-wrap' }, tbl.el)));

  let txn = null, aborting = false;

  async function abort() {
    const ok = await confirm(`Abort transaction ${gid}? Its prepared branches are rolled back.`, 'Abort transaction', 'Abort transaction?');
    if (!ok) return;
    aborting = true;
    render();
    actErr.clear();
    try {
      await post('/v1/trellis/txn/' + encodeURIComponent(gid) + '/abort');
      announce(`Transaction ${gid} is aborting`);
    } catch (e) {
      actErr.show(e, 'Abort');
    } finally {
      aborting = false;
      render();
    }
  }

  function render() {
    if (!txn) return;
    const t = txn;
    const tone = badge(t.state).className;
    badgeSlot.className = tone + ' badge-big';
    badgeSlot.textContent = t.state;
    fill(sub, `${(t.branches || []).length} branch${(t.branches || []).length === 1 ? '' : 'es'} · timeout ${durMs(t.timeout_ms)} · index ${t.modify_index}`,
      t.trace_id ? [' · ', h('a', { href: '/ui/traces/' + encodeURIComponent(t.trace_id) }, 'trace of this transaction')] : null);
    fill(actions, (t.state === 'open' || t.state === 'preparing')
      ? h('button', { type: 'button', class: 'btn btn-danger', dataset: { testid: 'txn-abort' }, disabled: aborting, onclick: abort }, 'Abort transaction')
      : null);
    const decidedLabel = t.state === 'aborting' || t.state === 'aborted' ? 'Decided: abort' : t.state === 'committing' || t.state === 'committed' ? 'Decided: commit' : 'Decided';
    const steps = [['Created', t.created_at], ['Prepare started', t.prepare_started_at], [decidedLabel, t.decided_at], ['Finished', t.finished_at]];
    patchList(timeline, steps.map(([label, at], i) => h('li', { key: 's' + i, class: at ? 'done' : null, dataset: { step: label.split(':')[0].toLowerCase().replace(/ /g, '-') } },
      h('span', { class: 'step' }, label),
      at ? h('span', { class: 'when' }, h('time', { datetime: iso(at), title: iso(at) }, iso(at).replace('T', ' ').replace('Z', ' UTC')))
        : h('span', { class: 'when' }, 'not yet'),
      at ? h('span', { class: 'when' }, i === 0 ? timeAgo(at) : `+${durMs(at - t.created_at)}`) : null)));
    fill(cause, t.cause ? h('p', null, h('strong', null, 'Cause: '), h('span', { class: 'cause' }, asText(t.cause))) : null);
    const from = Math.round(t.created_at * 1000 - MARGIN_US);
    const to = Math.round((t.finished_at || Date.now()) * 1000 + MARGIN_US);
    const branches = t.branches || [];
    if (!branches.length) { patchList(tbl.tbody, [emptyRow(7, 'No branches.')]); return; }
    patchList(tbl.tbody, branches.map((b) => {
      const svc = branchService(b);
      return h('tr', { key: b.branch_id, dataset: { branch: b.branch_id, state: b.state } },
        h('td', { class: 'mono wrap-anywhere' }, b.branch_id),
        h('td', { class: 'wrap-anywhere' }, b.service ? [h('a', { href: '/ui/services/' + encodeURIComponent(b.service) }, b.service), h('span', { class: 'mono muted' }, ' ' + (b.path || ''))] : h('span', { class: 'mono' }, b.url || '—')),
        h('td', null, badge(b.state)),
        h('td', { class: 'num' }, String(b.attempts ?? 0)),
        h('td', { class: 'wrap-anywhere', dataset: { testid: 'branch-error' } }, b.last_error ? asText(b.last_error) : h('span', { class: 'muted' }, '—')),
        h('td', null, b.payload === null || b.payload === undefined ? h('span', { class: 'muted' }, '—')
          : h('details', null, h('summary', null, 'Show'), h('pre', null, JSON.stringify(b.payload, null, 2)))),
        h('td', null, svc ? h('a', { href: '/ui/traces?' + new URLSearchParams({ service: svc, start: String(from), end: String(to), lookback: 'custom' }) }, `Traces of ${svc}`) : h('span', { class: 'muted' }, '—')));
    }));
  }

  watch('/v1/trellis/txn/' + encodeURIComponent(gid), (data) => {
    err.clear();
    txn = data;
    ctx.title(`Transaction ${gid} (${data.state})`);
    render();
    ctx.ready();
  }, { signal, onError: (e) => { err.show(e, e.status === 404 ? 'Not found' : 'Transaction'); ctx.ready(); } });
}
