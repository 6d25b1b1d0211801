// The shift report on the Events page: OK/NG per hour (per day for a week) as stacked bars, the NG rate trend,
// the top failing rules and each camera's totals, for a period the box computes from its shift times (this
// shift, the previous one, today, yesterday, the last 7 days), with its CSV. Read from the counts per minute
// and hour (GET /events/report): the same cost at ten million events as at ten.

import { API_PREFIX, errorText } from '../api.js';
import { h, setText } from '../dom.js';
import { lineChart, stackedBars } from './charts.js';

const OK_COLOR = '#1f9d55';
const NG_COLOR = '#d64545';

export const rateText = (rate) => (rate === null || rate === undefined ? '–' : `${(rate * 100).toFixed(rate < 0.1 ? 2 : 1)} %`);

function pointLabel(ts, bucket) {
  const d = new Date(ts * 1000);
  if (bucket === 'day') return d.toLocaleDateString(undefined, { weekday: 'short', day: 'numeric' });
  return d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}

const when = (ts) => new Date(ts * 1000).toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'short' });

/**
 * eventReport(ctx, { names, periods, period, cameraId, onRule, onPeriod }) -> { element, load(cameraId), stop() }
 * names: {camera id: name}; periods: GET /events/periods's list when the page has it already (one round trip
 * less before the first paint); period: the key to show first; onRule(name): a failing rule was clicked;
 * onPeriod(key): another period was chosen (the page keeps it in its URL).
 */
export function eventReport(ctx, { names, periods: known = [], period = 'shift', cameraId = '', onRule = () => {}, onPeriod = () => {} }) {
  const select = h('select', { testid: 'report-period' });
  const csv = h('a.button.small', { testid: 'report-csv', download: '' }, 'Download CSV');
  const summary = h('p', { testid: 'report-summary', style: { margin: '.2rem 0' } });
  const note = h('p.muted', { testid: 'report-note', style: { margin: '0 0 .4rem' } });
  const error = h('p.form-error', { testid: 'report-error', role: 'alert' });
  const chart = h('canvas', { testid: 'report-chart', style: { width: '100%', height: '190px', display: 'block' } });
  const trend = h('canvas', { testid: 'report-trend', style: { width: '100%', height: '190px', display: 'block' } });
  const rules = h('ol', { testid: 'report-rules', style: { margin: '0', 'padding-left': '1.4rem' } });
  const cameraRows = h('tbody');
  const element = h('details.card', { testid: 'events-report', open: true },
    h('summary', { style: { cursor: 'pointer' } }, h('strong', 'Shift report')),
    h('div.toolbar', { style: { 'margin-top': '.5rem' } },
      h('label', { style: { 'flex-direction': 'row', 'align-items': 'center', margin: '0' } }, 'Period\u00a0', select),
      summary, h('span', { style: { flex: '1' } }), csv),
    note, error,
    h('div', { style: { display: 'flex', gap: '1rem', 'flex-wrap': 'wrap' } },
      h('div', { style: { flex: '3 1 360px', 'min-width': '0' } }, chart),
      h('div', { style: { flex: '2 1 260px', 'min-width': '0' } }, trend)),
    h('div', { style: { display: 'flex', gap: '1rem', 'flex-wrap': 'wrap', 'margin-top': '.6rem' } },
      h('div', { style: { flex: '1 1 220px' } }, h('h3', 'Top failing rules'), rules),
      h('div', { style: { flex: '2 1 360px', overflow: 'auto' } },
        h('table.table.compact', { testid: 'report-cameras' },
          h('thead', h('tr', ['Camera', 'OK', 'NG', 'NG rate', 'Top failing rule'].map((t) => h('th', t)))),
          cameraRows))));

  let periods = [];
  let camera = cameraId;
  const showPeriods = (list) => {
    periods = list;
    select.replaceChildren(...periods.map((p) => h('option', { value: p.key, selected: p.key === chosen }, p.label)));
    if (!periods.some((p) => p.key === chosen)) chosen = periods[0].key;
    select.value = chosen;
  };
  let chosen = period;
  let seq = 0;
  if (known.length) showPeriods(known);

  const draw = (report) => {
    const labels = report.points.map((p) => pointLabel(p.start, report.bucket));
    stackedBars(chart, report.points.map((p, i) => ({ label: labels[i], values: [p.ok, p.ng] })),
      [{ label: 'OK', color: OK_COLOR }, { label: 'NG', color: NG_COLOR }], { emptyText: 'no inspections in this period' });
    lineChart(trend, 'NG rate (%)', [{ label: 'NG rate', values: report.points.map((p) => (p.ok + p.ng ? (100 * p.ng) / (p.ok + p.ng) : null)) }],
      { xLabel: (i) => labels[i], emptyText: 'no inspections in this period', valueFormat: (v) => v.toFixed(1) });
    setText(summary, `OK ${report.ok.toLocaleString()} · NG ${report.ng.toLocaleString()} · NG rate ${rateText(report.ng_rate)}`);
    setText(note, report.exact ? '' : `Counted ${when(report.counted_since)} – ${when(report.counted_until)}: the events at the ends of the period are gone (retention), so the count starts and ends on whole minutes or hours.`);
    rules.replaceChildren(...(report.top_rules.length ? report.top_rules.map((r) => h('li', { testid: 'report-rule' },
      h('button.link', { type: 'button', title: 'Show these events', onclick: () => onRule(r.rule) }, r.rule), ` — ${r.ng.toLocaleString()} NG`))
      : [h('li.muted', { style: { 'list-style': 'none' } }, 'No rule failed.')]));
    cameraRows.replaceChildren(...report.cameras.map((c) => h('tr', { testid: 'report-camera' },
      h('td', c.name || names[c.camera_id] || `camera ${c.camera_id} (deleted)`), h('td.num', c.ok.toLocaleString()),
      h('td.num', c.ng.toLocaleString()), h('td.num', rateText(c.ng_rate)), h('td', c.top_rules[0] ? c.top_rules[0].rule : '–'))));
  };

  const load = async (cameraIdNow = camera) => {
    camera = cameraIdNow;
    const mine = ++seq;
    try {
      if (!periods.length) showPeriods((await ctx.api.get('/events/periods', { signal: ctx.signal })).periods);
      const p = periods.find((x) => x.key === chosen);
      const query = new URLSearchParams({ since: String(p.since), until: String(p.until), bucket: p.bucket });
      if (camera) query.set('camera_id', camera);
      const report = await ctx.api.get(`/events/report?${query}`, { signal: ctx.signal });
      if (mine !== seq) return;
      csv.href = `${API_PREFIX}/events/report/csv?${query}`;
      setText(error, '');
      draw(report);
    } catch (err) {
      if (err && err.name === 'AbortError') return;
      setText(error, errorText(err));
    }
  };
  select.addEventListener('change', () => {
    chosen = select.value;
    onPeriod(chosen);
    load();
  });
  // The current shift keeps counting: fresh figures every 30 s while the page is open (cheap: read from counts).
  // The periods are asked again too: "this shift" moves on when the next shift starts.
  const timer = setInterval(() => {
    if (!element.open || document.visibilityState !== 'visible') return;
    periods = [];
    load();
  }, 30_000);
  return { element, load, stop: () => clearInterval(timer) };
}
