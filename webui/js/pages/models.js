// Models: every trained model with its metrics, dataset, date and exports (with their state); export to ONNX or
// a TensorRT engine, deploy one model, and compare two models' metrics side by side.

import { errorText } from '../api.js';
import { formatMetric as fmt } from '../components/format.js';
import { h, clear } from '../dom.js';

const METRICS = [
  ['map50', 'mAP50'],
  ['map50_95', 'mAP50-95'],
  ['precision', 'Precision'],
  ['recall', 'Recall'],
];
const BUSY = ['pending', 'running'];

function exportBadge(e) {
  const kind = e.status === 'completed' ? 'reviewed' : BUSY.includes(e.status) ? 'labeled' : 'muted';
  const label = `${e.format === 'engine' ? `engine ${e.precision}` : 'onnx'} ${e.imgsz}${e.dynamic ? ' dyn' : ''}`;
  const pct = BUSY.includes(e.status) && e.progress && e.progress.percent !== undefined ? ` ${e.progress.percent}%` : '';
  return h(`span.badge.${kind}`, {
    testid: 'export-badge', dataset: { status: e.status, format: e.format },
    title: e.error || (e.metadata && e.metadata.built_at ? `built ${e.metadata.built_at}` : e.status),
  }, `${label}: ${e.status}${pct}`);
}

function metricsCells(model) {
  return METRICS.map(([key]) => h('td.num', { testid: `metric-${key}` }, fmt(model.metrics && model.metrics[key])));
}

function compareCard(a, b) {
  const keys = [...new Set([...METRICS.map(([k]) => k), ...Object.keys(a.metrics || {}), ...Object.keys(b.metrics || {})])]
    .filter((k) => typeof (a.metrics || {})[k] === 'number' || typeof (b.metrics || {})[k] === 'number');
  const label = (k) => (METRICS.find(([key]) => key === k) || [k, k])[1];
  return h('div.card', { testid: 'compare' },
    h('h3', `Compare: ${a.name} (#${a.id}) vs ${b.name} (#${b.id})`),
    h('table.table',
      h('thead', h('tr', h('th', 'Metric'), h('th', `#${a.id}`), h('th', `#${b.id}`), h('th', 'Difference'))),
      h('tbody',
        h('tr', h('td', 'Dataset'), h('td', a.dataset_name || '–'), h('td', b.dataset_name || '–'), h('td', '')),
        h('tr', h('td', 'Image size'), h('td', String(a.imgsz)), h('td', String(b.imgsz)), h('td', '')),
        keys.map((k) => {
          const x = (a.metrics || {})[k];
          const y = (b.metrics || {})[k];
          const diff = typeof x === 'number' && typeof y === 'number' ? y - x : null;
          return h('tr', { testid: 'compare-row', dataset: { metric: k } },
            h('td', label(k)), h('td.num', fmt(x)), h('td.num', fmt(y)),
            h('td.num', diff === null ? '–' : `${diff >= 0 ? '+' : ''}${diff.toFixed(3)}`));
        }))));
}

export default {
  route: '#/models',
  title: 'Models',
  nav: 'Models',
  render(root, params, ctx) {
    const { api } = ctx;
    const selected = new Set();
    let models = [];
    let timer = null;
    const list = h('div', { testid: 'models-list' }, h('p.muted', 'Loading…'));
    const compareBox = h('div');
    root.append(
      h('div.page-head', h('h1', 'Models'),
        h('div.actions', h('a', { href: '#/try', class: 'button' }, 'Try a model'))),
      compareBox, list);

    async function startExport(model, body) {
      try {
        await api.post(`/models/${model.id}/exports`, body);
        ctx.toast(`Export of ${model.name} queued`, 'ok');
      } catch (err) {
        ctx.toast(errorText(err), 'error', 6000);
      }
      await load();
    }

    async function cancelExport(model, e) {
      try {
        await api.post(`/models/${model.id}/exports/${e.id}/cancel`);
      } catch (err) {
        ctx.toast(errorText(err), 'error', 6000);
      }
      await load();
    }

    async function deploy(model) {
      try {
        await api.post(`/models/${model.id}/deploy`);
        ctx.toast(`${model.name} is deployed`, 'ok');
      } catch (err) {
        ctx.toast(errorText(err), 'error', 6000);
      }
      await load();
    }

    function renderCompare() {
      clear(compareBox);
      const chosen = models.filter((m) => selected.has(m.id)).sort((a, b) => a.id - b.id);
      if (chosen.length === 2) compareBox.append(compareCard(chosen[0], chosen[1]));
      else if (chosen.length === 1) compareBox.append(h('p.muted', { testid: 'compare-hint' }, 'Select one more model to compare.'));
    }

    function row(model) {
      const check = h('input', {
        type: 'checkbox', testid: 'compare-check', checked: selected.has(model.id), 'aria-label': `compare ${model.name}`,
        onchange: () => {
          if (check.checked) {
            selected.add(model.id);
            if (selected.size > 2) selected.delete([...selected][0]);
          } else selected.delete(model.id);
          renderList();
        },
      });
      const busy = model.exports.some((e) => BUSY.includes(e.status));
      return h('tr', { testid: 'model-row', dataset: { id: String(model.id) } },
        h('td', check),
        h('td', h('strong', model.name), ' ', h('span.muted', `#${model.id}`),
          model.deployed ? h('span.badge.reviewed', { testid: 'deployed-badge' }, ' deployed') : null),
        h('td', model.dataset_name || '–'),
        h('td', { title: model.created_at }, (model.created_at || '').slice(0, 16).replace('T', ' ')),
        metricsCells(model),
        h('td.num', String(model.imgsz)),
        h('td', { testid: 'exports' }, model.exports.length
          ? model.exports.map((e) => [exportBadge(e), BUSY.includes(e.status)
            ? h('button.link', { type: 'button', testid: 'cancel-export', title: 'cancel this export',
              onclick: () => cancelExport(model, e) }, ' cancel') : null, ' '])
          : h('span.muted', 'none')),
        h('td.actions',
          h('button', { type: 'button', testid: 'export-onnx', disabled: !model.has_weights || busy,
            onclick: () => startExport(model, { format: 'onnx' }) }, 'Export ONNX'),
          h('button', { type: 'button', testid: 'export-engine', disabled: !model.has_weights || busy,
            title: 'TensorRT FP16 engine (on the device)', onclick: () => startExport(model, { format: 'engine', half: true }) },
          'Export TensorRT'),
          h('button.primary', { type: 'button', testid: 'deploy', disabled: !model.ready || model.deployed,
            title: model.ready ? '' : 'export the model first', onclick: () => deploy(model) },
          model.deployed ? 'Deployed' : 'Deploy')));
    }

    function renderList() {
      clear(list);
      if (!models.length) {
        list.append(h('p.muted', { testid: 'no-models' }, 'No models yet: train one on a labeled dataset.'));
      } else {
        list.append(h('table.table', { testid: 'models-table' },
          h('thead', h('tr', h('th', ''), h('th', 'Model'), h('th', 'Dataset'), h('th', 'Date'),
            METRICS.map(([, label]) => h('th', label)), h('th', 'Size'), h('th', 'Exports'), h('th', ''))),
          h('tbody', models.map(row))));
      }
      renderCompare();
    }

    async function load() {
      try {
        models = await api.get('/models', { signal: ctx.signal });
      } catch (err) {
        if (err && err.name === 'AbortError') return;
        clear(list).append(h('p.card.error', errorText(err)));
        return;
      }
      renderList();
      clearTimeout(timer);
      if (models.some((m) => m.exports.some((e) => BUSY.includes(e.status)))) timer = setTimeout(load, 2000);
    }

    load();
    return () => clearTimeout(timer);
  },
};
