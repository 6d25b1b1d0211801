// Events: the shift report (components/event-report.js) over the inspection history with filters (camera,
// verdict, failing rule, since, until), newest first, older pages on demand, new events arriving live (SSE);
// one event large with its snapshot, boxes and zones drawn over it, the failing rules, counts per zone and
// latencies, what judged it (model version, the settings revision's rules and zones), and "send to dataset"
// (the frame with the model's boxes as pre-labels, to label the hard cases).

import { API_PREFIX, ApiError, events as sse } from '../api.js';
import { drawOverlay } from '../components/camera-overlay.js';
import { eventReport } from '../components/event-report.js';
import { describeFeatures } from '../components/genicam-settings.js';
import { savedFrameText } from '../components/format.js';
import { say } from '../components/message.js';
import { judgedBy } from '../components/settings-revision.js';
import { h, setText } from '../dom.js';
import { fleetUpload } from '../components/fleet-actions.js';

const when = (ts) => new Date(ts * 1000).toLocaleString();
// Why a camera that keeps snapshots has none for an event (the event's snapshot_missing).
const MISSING_SNAPSHOT = {
  disk_reserve: 'No snapshot: the data disk had less free space than its reserve (the verdict was kept).',
  write_failed: 'No snapshot: its file could not be written (the verdict was kept).',
  queue_full: 'No snapshot: the box could not store snapshots as fast as they came (the verdict was kept).',
};

function verdictBadge(verdict) {
  return h('span.badge', { testid: 'event-verdict', style: { background: verdict === 'ok' ? '#1f9d55' : '#d64545', color: '#fff' } },
    verdict.toUpperCase());
}

function detail(ctx, event, cameraName, datasets) {
  const img = h('img', { alt: `event ${event.id}`, style: { display: 'block', 'max-width': '100%', 'max-height': 'calc(100vh - 260px)' } });
  const overlay = h('canvas', { testid: 'event-overlay', style: { position: 'absolute', left: '0', top: '0', width: '100%', height: '100%' } });
  const message = h('p.form-error', { testid: 'event-send-result', role: 'status' });
  const picture = event.snapshot
    ? h('div', { style: { position: 'relative', display: 'inline-block', 'max-width': '100%' } }, img, overlay)
    : h('p.muted', { testid: 'event-no-snapshot' }, MISSING_SNAPSHOT[event.snapshot_missing] || 'No snapshot was kept for this event.');
  if (event.snapshot) {
    img.addEventListener('load', () => drawOverlay(overlay, { width: event.width || img.naturalWidth, height: event.height || img.naturalHeight, detections: event.detections }, event.zones));
    img.src = `${API_PREFIX}/events/${event.id}/snapshot`;
  }
  const select = h('select', { testid: 'event-dataset' }, datasets.map((d) => h('option', { value: String(d.id) }, d.name)));
  const send = h('button.primary', { type: 'button', testid: 'event-send', disabled: !datasets.length || !event.snapshot }, 'Send to dataset');
  send.addEventListener('click', async () => {
    send.disabled = true;
    setText(message, '');
    try {
      const r = await ctx.api.post(`/events/${event.id}/dataset`, { dataset_id: Number(select.value) });
      say(message, savedFrameText(r), 'ok');
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      say(message, err.detail);
    } finally {
      send.disabled = false;
    }
  });
  const counts = Object.entries(event.counts).map(([zone, perClass]) =>
    h('li', `${zone === '*' ? 'whole frame' : zone}: ${Object.entries(perClass).map(([c, n]) => `${n} ${c}`).join(', ') || 'nothing'}`));
  const latencies = Object.entries(event.latencies).map(([k, v]) => `${k.replace(/_ms$/, '')} ${Number(v).toFixed(1)} ms`).join(' · ');
  return h('div.card', { testid: 'event-detail' },
    h('div.toolbar', h('h2', `Event ${event.id}`), verdictBadge(event.verdict), h('span.muted', `${cameraName} · ${event.mode} · ${when(event.ts)}`)),
    event.failing_rules.length ? h('p', { testid: 'event-failing' }, `Failing: ${event.failing_rules.join(', ')}`) : h('p.muted', 'All rules held.'),
    h('div', { style: { display: 'flex', gap: '1rem', 'flex-wrap': 'wrap', 'align-items': 'flex-start' } },
      h('div', { style: { flex: '3 1 420px' } }, picture),
      h('div', { style: { flex: '1 1 220px' } },
        h('h3', 'Counts'), h('ul', counts),
        h('p.muted', latencies),
        event.camera_features ? h('p.muted', { testid: 'event-camera-features' }, describeFeatures(event.camera_features)) : null,
        event.trigger_id ? h('p.muted', `trigger ${event.trigger_id}`) : null,
        datasets.length ? h('div.inline-form', h('label', 'Dataset', select), send) : h('p.muted', 'No dataset you can add images to.'),
        message,
        event.snapshot ? fleetUpload(ctx, () => ({ event_ids: [event.id] })) : null)),
    judgedBy(ctx.api, event));
}

export default {
  route: '#/events',
  title: 'Events',
  nav: 'Events',
  async render(root, params, ctx) {
    const [cameras, datasets, periods] = await Promise.all([
      ctx.api.get('/cameras', { signal: ctx.signal }),
      ctx.api.get('/datasets', { signal: ctx.signal }),
      ctx.api.get('/events/periods', { signal: ctx.signal }),
    ]);
    const canWrite = ctx.user && ctx.user.role !== 'viewer';
    const writable = datasets.filter((d) => canWrite && (ctx.user.role === 'admin' || d.owner_id === ctx.user.id || d.is_public));
    const names = Object.fromEntries(cameras.map((c) => [c.id, c.name]));
    const q = ctx.query;
    const camera = h('select', { testid: 'events-camera' }, h('option', { value: '' }, 'all cameras'),
      cameras.map((c) => h('option', { value: String(c.id), selected: String(c.id) === q.get('camera') }, c.name)));
    const verdict = h('select', { testid: 'events-verdict' }, [['', 'OK and NG'], ['ok', 'OK'], ['ng', 'NG']].map(([v, label]) =>
      h('option', { value: v, selected: v === (q.get('verdict') || '') }, label)));
    const ruleNames = [...new Set(cameras.flatMap((c) => (c.settings.rules || []).map((r) => r.name)))].sort();
    if (q.get('rule') && !ruleNames.includes(q.get('rule'))) ruleNames.push(q.get('rule'));
    const rule = h('select', { testid: 'events-rule' }, h('option', { value: '' }, 'any rule'),
      ruleNames.map((name) => h('option', { value: name, selected: name === q.get('rule') }, name)));
    const since = h('input', { type: 'datetime-local', testid: 'events-since', value: q.get('since') || '' });
    const until = h('input', { type: 'datetime-local', testid: 'events-until', value: q.get('until') || '' });
    const error = h('p.form-error', { testid: 'events-error', role: 'alert' });
    const body = h('tbody');
    const more = h('button', { type: 'button', testid: 'events-more', style: { display: 'none' } }, 'Older events');
    const detailBox = h('div', { testid: 'events-detail-box' });
    let period = q.get('period') || 'shift';
    const apply = () => {
      const next = new URLSearchParams();
      if (camera.value) next.set('camera', camera.value);
      if (verdict.value) next.set('verdict', verdict.value);
      if (rule.value) next.set('rule', rule.value);
      if (since.value) next.set('since', since.value);
      if (until.value) next.set('until', until.value);
      if (period !== 'shift') next.set('period', period);
      ctx.navigate(`#/events${next.toString() ? `?${next}` : ''}`);
    };
    for (const el of [camera, verdict, rule, since, until]) el.addEventListener('change', apply);

    const filters = () => {
      const p = new URLSearchParams();
      if (camera.value) p.set('camera_id', camera.value);
      if (verdict.value) p.set('verdict', verdict.value);
      if (rule.value) p.set('rule', rule.value);
      if (since.value) p.set('since', String(new Date(since.value).getTime() / 1000));
      if (until.value) p.set('until', String(new Date(until.value).getTime() / 1000));
      return p;
    };
    const report = eventReport(ctx, {
      names,
      periods: periods.periods,
      period,
      cameraId: camera.value,
      onRule: (name) => {
        if (!ruleNames.includes(name)) rule.append(h('option', { value: name }, name));
        rule.value = name;
        apply();
      },
      onPeriod: (key) => {
        period = key;
        const next = new URLSearchParams(q);
        if (key === 'shift') next.delete('period');
        else next.set('period', key);
        history.replaceState(null, '', `#/events${next.toString() ? `?${next}` : ''}`);
      },
    });
    let selected = null;
    const show = async (id, rowEl) => {
      selected = id;
      for (const r of body.querySelectorAll('tr')) r.style.background = r === rowEl ? 'var(--bg2)' : '';
      const event = await ctx.api.get(`/events/${id}`);
      detailBox.replaceChildren(detail(ctx, event, names[event.camera_id] || `camera ${event.camera_id}`, writable));
    };
    const row = (e) => {
      const tr = h('tr', { testid: 'event-row', dataset: { id: String(e.id) }, style: { cursor: 'pointer' } },
        h('td.num', String(e.id)), h('td', when(e.ts)), h('td', names[e.camera_id] || `camera ${e.camera_id}`),
        h('td', e.mode), h('td', verdictBadge(e.verdict)), h('td', e.failing_rules.join(', ')));
      tr.addEventListener('click', () => show(e.id, tr));
      return tr;
    };
    let nextBefore = null;
    const load = async (before) => {
      setText(error, '');
      const p = filters();
      p.set('limit', '50');
      if (before) {
        p.set('before_id', String(before.id));
        p.set('before_ts', String(before.ts));
      }
      try {
        const page = await ctx.api.get(`/events?${p}`, { signal: ctx.signal });
        body.append(...page.items.map(row));
        nextBefore = page.next_before_id ? { id: page.next_before_id, ts: page.next_before_ts } : null;
        more.style.display = nextBefore ? '' : 'none';
        if (!before && page.items.length && selected === null) show(page.items[0].id, body.firstChild);
        if (!body.children.length) body.append(h('tr', h('td', { colspan: 6, class: 'muted' }, 'No events yet for these filters.')));
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        setText(error, err.detail);
      }
    };
    more.addEventListener('click', () => load(nextBefore));
    root.append(h('section', { testid: 'events-page' },
      h('div.toolbar', h('h1', 'Events'), h('span', { style: { flex: '1' } }),
        h('label', 'Camera', camera), h('label', 'Verdict', verdict), h('label', 'Failing rule', rule),
        h('label', 'Since', since), h('label', 'Until', until),
        fleetUpload(ctx, () => {
          const f = filters();
          const number = (key) => (f.get(key) ? Number(f.get(key)) : null);
          return { camera_id: number('camera_id'), verdict: f.get('verdict') || null, rule: f.get('rule') || null,
            since: number('since'), until: number('until'), limit: 500 };
        })),
      report.element,
      error,
      h('div', { style: { display: 'flex', gap: '1rem', 'flex-wrap': 'wrap', 'align-items': 'flex-start' } },
        h('div.card', { style: { flex: '1 1 420px', 'max-height': 'calc(100vh - 160px)', overflow: 'auto' } },
          h('table.table.compact', { testid: 'events-table' },
            h('thead', h('tr', ['#', 'Time', 'Camera', 'Mode', 'Verdict', 'Failing rules'].map((t) => h('th', t)))), body), more),
        h('div', { style: { flex: '2 1 480px' } }, detailBox))));
    await Promise.all([load(null), report.load(camera.value)]);

    // New events arrive live (filters applied here; the stream carries every camera's events).
    const wanted = filters();
    const close = sse(`/events/stream${wanted.get('camera_id') ? `?camera_id=${wanted.get('camera_id')}` : ''}`, {
      onMessage: (e) => {
        if (!e || typeof e !== 'object' || !e.id) return;
        if (wanted.get('verdict') && e.verdict !== wanted.get('verdict')) return;
        if (wanted.get('rule') && !e.failing_rules.includes(wanted.get('rule'))) return;
        if (wanted.get('until') && e.ts >= Number(wanted.get('until'))) return;
        const empty = body.querySelector('td[colspan]');
        if (empty) empty.parentElement.remove();
        body.prepend(row(e));
      },
    });
    return () => {
      close();
      report.stop();
    };
  },
};
