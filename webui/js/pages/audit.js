// Audit (admins only): who did what and when, newest first, filtered by who, action, outcome, time and text; one
// entry's details (before and after of what changed; secrets were masked before anything was stored); the export as
// JSON lines (same filters); and the hash chain's verification (where it breaks, if it does).

import { API_PREFIX, ApiError } from '../api.js';
import { h, setText } from '../dom.js';

const when = (ts) => new Date(ts * 1000).toLocaleString();
const short = (value) => {
  const text = value === undefined ? '' : JSON.stringify(value);
  return text && text.length > 400 ? `${text.slice(0, 399)}…` : text;
};
const FILTERS = ['actor', 'action', 'outcome', 'since', 'text'];
const WRAP = { 'white-space': 'pre-wrap', 'overflow-wrap': 'anywhere' };

function statusBadge(status) {
  const kind = status >= 500 || status === 0 ? '' : status >= 400 ? '.bad' : '.reviewed';
  return h(`span.badge${kind}`, { testid: 'audit-status' }, status ? String(status) : 'shell');
}

function detailView(entry) {
  const d = entry.details || {};
  const parts = [];
  if (d.changes && typeof d.changes === 'object') {
    parts.push(h('table.table.compact', { testid: 'audit-changes' },
      h('thead', h('tr', ['Field', 'Before', 'After'].map((t) => h('th', t)))),
      h('tbody', Object.entries(d.changes).map(([field, pair]) =>
        h('tr', { testid: 'audit-change', dataset: { field } }, h('td', field),
          h('td.muted', { style: WRAP }, short(pair[0])), h('td', { style: WRAP }, short(pair[1])))))));
  }
  for (const key of ['created', 'deleted']) {
    if (d[key] !== undefined) parts.push(h('h3', key === 'created' ? 'Created' : 'Deleted'), h('pre', { testid: `audit-${key}`, style: WRAP }, JSON.stringify(d[key], null, 2)));
  }
  const rest = Object.entries(d).filter(([k]) => !['changes', 'created', 'deleted'].includes(k));
  if (rest.length) parts.push(h('ul.plain', { style: WRAP }, rest.map(([k, v]) => h('li', `${k}: ${short(v)}`))));
  return h('div.card', { testid: 'audit-detail' },
    h('div.toolbar', h('h2', `Entry ${entry.seq}`), statusBadge(entry.status),
      h('span.muted', `${when(entry.ts)} · ${entry.process}`)),
    h('p', `${entry.actor || 'nobody signed in'}${entry.role ? ` (${entry.role})` : ''} from ${entry.address}: `,
      h('strong', entry.action), entry.target ? ` ${entry.target}` : ''),
    h('p.muted', `${entry.method} ${entry.path}`.trim()),
    parts.length ? parts : h('p.muted', 'No further details.'),
    h('p.muted', { style: { 'overflow-wrap': 'anywhere', 'font-size': '.8rem' } }, `hash ${entry.hash} · after ${entry.prev_hash}`));
}

function verifyView(report) {
  if (report.ok) {
    const span = report.entries ? `entries ${report.first_seq}–${report.last_seq}` : 'no entries yet';
    return h('p.ok', { testid: 'audit-verify-result', role: 'status' },
      `Chain intact: ${report.entries} entries (${span}), from ${report.anchor}`,
      report.pruned_segments ? `; ${report.pruned_segments} older segments pruned (${report.pruned_entries} entries)` : '',
      `. Head ${report.head_hash.slice(0, 16)}…`);
  }
  const first = report.problems[0];
  return h('div.notice.bad', { testid: 'audit-verify-result', role: 'alert' },
    h('strong', `Chain broken${first && first.seq ? ` at entry ${first.seq}` : ''}`),
    h('ul', report.problems.map((p) => h('li', p.reason))),
    report.problems_total > report.problems.length ? h('p', `… and ${report.problems_total - report.problems.length} more`) : null);
}

export default {
  route: '#/audit',
  title: 'Audit',
  nav: 'Audit',
  admin: true,
  async render(root, _params, ctx) {
    const q = ctx.query;
    const actor = h('input', { testid: 'audit-actor', placeholder: 'user', maxlength: 64, value: q.get('actor') || '', size: 10 });
    const action = h('input', { testid: 'audit-action', placeholder: 'e.g. putCamera', maxlength: 80, value: q.get('action') || '', size: 12 });
    const outcome = h('select', { testid: 'audit-outcome' },
      [['', 'any outcome'], ['ok', 'done'], ['refused', 'refused (4xx)'], ['error', 'failed (5xx)']].map(([v, label]) =>
        h('option', { value: v, selected: v === (q.get('outcome') || '') }, label)));
    const since = h('input', { type: 'datetime-local', testid: 'audit-since', value: q.get('since') || '' });
    const text = h('input', { type: 'search', testid: 'audit-text', placeholder: 'target, path, details', maxlength: 200, value: q.get('text') || '', size: 14 });
    const error = h('p.form-error', { testid: 'audit-error', role: 'alert' });
    const body = h('tbody');
    const more = h('button', { type: 'button', testid: 'audit-more', style: { display: 'none' } }, 'Older entries');
    const detailBox = h('div', { testid: 'audit-detail-box' });
    const verifyBox = h('div', { testid: 'audit-verify-box' });

    const query = () => {
      const p = new URLSearchParams();
      if (actor.value.trim()) p.set('actor', actor.value.trim());
      if (action.value.trim()) p.set('action', action.value.trim());
      if (outcome.value) p.set('outcome', outcome.value);
      if (since.value) p.set('since', String(new Date(since.value).getTime() / 1000));
      if (text.value.trim()) p.set('text', text.value.trim());
      return p;
    };
    const exportLink = h('a.button', { testid: 'audit-export', download: 'audit.jsonl' }, 'Export (JSON lines)');
    const apply = () => {
      const next = new URLSearchParams();
      const values = { actor: actor.value.trim(), action: action.value.trim(), outcome: outcome.value, since: since.value, text: text.value.trim() };
      for (const key of FILTERS) if (values[key]) next.set(key, values[key]);
      ctx.navigate(`#/audit${next.toString() ? `?${next}` : ''}`);
    };
    for (const el of [outcome, since]) el.addEventListener('change', apply);
    for (const el of [actor, action, text]) el.addEventListener('keydown', (e) => { if (e.key === 'Enter') apply(); });
    const filters = query();
    exportLink.href = `${API_PREFIX}/audit/export${filters.toString() ? `?${filters}` : ''}`;

    const row = (e) => {
      const tr = h('tr', { testid: 'audit-row', dataset: { seq: String(e.seq) }, style: { cursor: 'pointer' } },
        h('td.num', String(e.seq)), h('td', when(e.ts)), h('td', { testid: 'audit-actor-cell' }, e.actor || '—'),
        h('td.muted', e.address), h('td', { testid: 'audit-action-cell' }, e.action), h('td', { style: WRAP }, e.target), h('td', statusBadge(e.status)));
      tr.addEventListener('click', () => {
        for (const r of body.querySelectorAll('tr')) r.style.background = r === tr ? 'var(--bg2)' : '';
        detailBox.replaceChildren(detailView(e));
      });
      return tr;
    };
    let nextBefore = null;
    const load = async (before) => {
      setText(error, '');
      const p = query();
      p.set('limit', '100');
      if (before) p.set('before_seq', String(before));
      try {
        const page = await ctx.api.get(`/audit?${p}`, { signal: ctx.signal });
        body.append(...page.items.map(row));
        nextBefore = page.next_before_seq;
        more.style.display = nextBefore ? '' : 'none';
        if (!body.children.length) body.append(h('tr', h('td', { colspan: 7, class: 'muted' }, 'No entries for these filters.')));
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        setText(error, err.detail);
      }
    };
    more.addEventListener('click', () => load(nextBefore));
    const verify = h('button', { type: 'button', testid: 'audit-verify' }, 'Verify the chain');
    verify.addEventListener('click', async () => {
      verify.disabled = true;
      verifyBox.replaceChildren(h('p.muted', 'Checking every entry…'));
      try {
        verifyBox.replaceChildren(verifyView(await ctx.api.get('/audit/verify', { signal: ctx.signal })));
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        verifyBox.replaceChildren(h('p.form-error', err.detail));
      } finally {
        verify.disabled = false;
      }
    });
    root.append(h('section', { testid: 'audit-page' },
      h('div.toolbar', h('h1', 'Audit'), h('span', { style: { flex: '1' } }), verify, exportLink),
      h('div.toolbar', h('label', 'Who', actor), h('label', 'Action', action), h('label', 'Outcome', outcome),
        h('label', 'Since', since), h('label', 'Search', text),
        h('button', { type: 'button', testid: 'audit-apply', onclick: apply }, 'Filter')),
      verifyBox, error,
      h('div', { style: { display: 'flex', gap: '1rem', 'flex-wrap': 'wrap', 'align-items': 'flex-start' } },
        h('div.card', { style: { flex: '2 1 560px', 'max-height': 'calc(100vh - 220px)', overflow: 'auto' } },
          h('table.table.compact', { testid: 'audit-table' },
            h('thead', h('tr', ['#', 'Time', 'Who', 'Address', 'Action', 'Target', 'Status'].map((t) => h('th', t)))), body), more),
        h('div', { style: { flex: '1 1 360px', 'min-width': '0' } }, detailBox))));
    await load(null);
  },
};
