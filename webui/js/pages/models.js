// Models: every model the user may see with its metrics, dataset, date and exports (with their state); export to
// ONNX or a TensorRT engine (disabled, with the reason, where the box has no TensorRT), download an ONNX file,
// deploy / undeploy one model, delete one (never the deployed one), and compare two models' metrics side by side;
// each model's newest evaluation on frozen images links to its Evaluation page (and two to Compare).
// What runs each model here (engine, device, precision), the engine an admin pins for it, and reduced precisions
// (INT8, BF16, FP16) measured by the box: both accuracies and speeds side by side with the decision and why.
// Rows keep one height whatever their exports do; an action's error is shown under its row.

import { API_PREFIX, errorText } from '../api.js';
import { confirmDeploy } from '../components/deploy-confirm.js';
import { formatMetric as fmt, UNUSABLE_MAP50 } from '../components/format.js';
import { clear, confirmDialog, h } from '../dom.js';
import { bundleDownload, bundleUpload } from '../components/fleet-actions.js';

const METRICS = [
  ['map50', 'mAP50'],
  ['map50_95', 'mAP50-95'],
  ['precision', 'Precision'],
  ['recall', 'Recall'],
];
const BUSY = ['pending', 'running'];
const SHOWN_EXPORTS = 2; // newest exports shown per row; the rest are counted

const FORMAT_LABEL = { engine: 'engine', openvino: 'openvino', onnx: 'onnx' };

function exportBadge(e) {
  const kind = e.status === 'completed' ? 'reviewed' : BUSY.includes(e.status) ? 'labeled' : e.status === 'refused' ? 'bad' : 'muted';
  const label = `${FORMAT_LABEL[e.format] || e.format}${e.format === 'onnx' ? '' : ` ${e.precision}`} ${e.imgsz}${e.dynamic ? ' dyn' : ''}`;
  const pct = BUSY.includes(e.status) && e.progress && e.progress.percent !== undefined ? ` ${e.progress.percent}%` : '';
  return h(`span.badge.${kind}`, {
    testid: 'export-badge', dataset: { status: e.status, format: e.format },
    title: e.error || (e.metadata && e.metadata.built_at ? `built ${e.metadata.built_at}` : e.status),
  }, `${label}: ${e.status}${pct}`);
}

function metricsCells(model) {
  return METRICS.map(([key]) => h('td.num', { testid: `metric-${key}` }, fmt(model.metrics && model.metrics[key])));
}

function unusable(model) {
  const map50 = model.metrics && model.metrics.map50;
  return typeof map50 === 'number' && map50 < UNUSABLE_MAP50;
}

/** What the box can export here, from GET /system: TensorRT needs the Python bindings and pycuda. */
function engineSupport(system) {
  const gpu = (system && system.gpu) || {};
  if (gpu.tensorrt_installed && gpu.pycuda_installed) return { ok: true, reason: '' };
  return {
    ok: false,
    reason: gpu.gpu_present
      ? 'TensorRT (with pycuda) is not installed on this box: engines cannot be built here'
      : 'This box has no NVIDIA GPU with TensorRT: engines are built on the device (Jetson); ONNX runs here',
  };
}

/** The model's newest evaluation (mAP50-95 on its frozen images), a link to all of them. */
function evaluationLink(model, latest) {
  const e = latest.get(model.id);
  const text = !e ? 'evaluate' : e.status === 'completed' ? `evaluated: mAP50-95 ${fmt(e.map50_95)}` : `evaluation ${e.status}`;
  return h('a', { href: `#/models/${model.id}/evaluation`, testid: 'open-evaluation', dataset: { map: e && e.map50_95 !== null ? fmt(e.map50_95) : '' },
    title: e ? `evaluation #${e.id} on ${e.images} frozen images` : 'evaluate the model on frozen images' }, text);
}

/** The reduced precisions this box can measure, from GET /system: [format, precision, label]. */
function reducedChoices(system) {
  const inference = (system && system.inference) || {};
  const devices = ((inference.openvino || {}).devices) || [];
  const choices = [];
  if ((inference.engines || []).includes('openvino')) {
    choices.push(['openvino', 'int8', 'OpenVINO INT8']);
    if (devices.some((d) => (d.capabilities || []).includes('BF16'))) choices.push(['openvino', 'bf16', 'OpenVINO BF16']);
    if (devices.some((d) => d.device !== 'CPU')) choices.push(['openvino', 'fp16', 'OpenVINO FP16']);
  }
  if ((inference.engines || []).includes('tensorrt')) choices.push(['engine', 'int8', 'TensorRT INT8']);
  return choices;
}

/** The engine pins an admin may choose here: those of engines this box has, OpenVINO per device it sees. */
function enginePins(system) {
  const inference = (system && system.inference) || {};
  const engines = inference.engines || [];
  const pins = [['auto', `auto (${inference.default_engine || 'the box decides'})`]];
  if (engines.includes('tensorrt')) pins.push(['tensorrt', 'TensorRT']);
  if (engines.includes('openvino')) {
    pins.push(['openvino', 'OpenVINO']);
    const kinds = new Set((((inference.openvino || {}).devices) || []).map((d) => d.device.split('.')[0]));
    for (const kind of ['CPU', 'GPU', 'NPU']) if (kinds.has(kind)) pins.push([`openvino:${kind}`, `OpenVINO ${kind}`]);
  }
  if (engines.includes('onnxruntime')) pins.push(['onnxruntime', 'ONNX Runtime']);
  return pins;
}

/** The newest measurement of each reduced precision: both accuracies and speeds, the decision and its reason. */
function gateTable(model) {
  const seen = new Set();
  const gates = [...model.exports].sort((a, b) => b.id - a.id)
    .filter((e) => e.metadata && e.metadata.gate)
    .filter((e) => {
      const key = `${e.format}/${e.precision}/${e.imgsz}`;
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
  if (!gates.length) return null;
  const num = (v, digits) => (typeof v === 'number' ? v.toFixed(digits) : '–');
  return h('div', { testid: 'precision-gates' }, gates.map((e) => {
    const g = e.metadata.gate;
    return h('div.gate', { testid: 'precision-gate', dataset: { precision: g.precision, accepted: String(g.accepted) } },
      h('table.table.compact',
        h('thead', h('tr', h('th', `${g.engine} ${g.device} · ${g.val_images} validation images`),
          h('th.num', g.baseline_precision.toUpperCase()), h('th.num', g.precision.toUpperCase()))),
        h('tbody',
          h('tr', h('td', 'mAP50-95'), h('td.num', { testid: 'gate-baseline-map' }, num(g.baseline_map50_95, 3)),
            h('td.num', { testid: 'gate-candidate-map' }, num(g.candidate_map50_95, 3))),
          h('tr', h('td', 'ms per frame here'), h('td.num', { testid: 'gate-baseline-ms' }, num(g.baseline_ms, 1)),
            h('td.num', { testid: 'gate-candidate-ms' }, num(g.candidate_ms, 1))))),
      h('p.small', h(`span.badge.${g.accepted ? 'reviewed' : 'bad'}`, { testid: 'gate-decision' }, g.accepted ? 'offered' : 'refused'),
        ' ', h('span', { testid: 'gate-reason' }, g.reason)));
  }));
}

function compareCard(a, b) {
  const keys = [...new Set([...METRICS.map(([k]) => k), ...Object.keys(a.metrics || {}), ...Object.keys(b.metrics || {})])]
    .filter((k) => typeof (a.metrics || {})[k] === 'number' || typeof (b.metrics || {})[k] === 'number');
  const label = (k) => (METRICS.find(([key]) => key === k) || [k, k])[1];
  return h('div.card', { testid: 'compare' },
    h('h3', `Compare: ${a.name} (#${a.id}) vs ${b.name} (#${b.id})`),
    h('p', h('a', { href: `#/models/compare?a=${a.id}&b=${b.id}`, testid: 'compare-images' },
      'Compare them on the same images →')),
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
    const errors = new Map(); // model id -> the last action's error, shown under its row
    let models = [];
    let latest = new Map(); // model id -> its newest evaluation
    let engine = { ok: true, reason: '' };
    let reduced = [];
    let pins = [['auto', 'auto']];
    let timer = null;
    const list = h('div', { testid: 'models-list' }, h('p.muted', 'Loading…'));
    const compareBox = h('div');
    const engineNote = h('p.muted.small', { testid: 'engine-unavailable', hidden: true });
    const bundles = bundleDownload(ctx);
    root.append(
      h('div.page-head', h('h1', 'Models'),
        h('div.actions', bundles && bundles.el, bundleUpload(ctx, () => load()), h('a', { href: '#/try', class: 'button' }, 'Try a model'))),
      engineNote, compareBox, list);

    async function act(model, run, done) {
      errors.delete(model.id);
      try {
        await run();
        if (done) ctx.toast(done, 'ok');
      } catch (err) {
        errors.set(model.id, errorText(err));
      }
      await load();
    }

    const startExport = (model, body) => act(model, () => api.post(`/models/${model.id}/exports`, body),
      `Export of ${model.name} queued`);
    const cancelExport = (model, e) => act(model, () => api.post(`/models/${model.id}/exports/${e.id}/cancel`));
    // Asks first when the model is not usable or breaks cameras' rules (components/deploy-confirm.js).
    const deploy = async (model) => {
      let answer;
      try {
        answer = await confirmDeploy(api, model);
      } catch (err) {
        errors.set(model.id, errorText(err));
        renderList();
        return;
      }
      if (answer.go) await act(model, () => api.post(`/models/${model.id}/deploy`, answer.body), `${model.name} is deployed`);
    };
    const undeploy = (model) => act(model, () => api.post(`/models/${model.id}/undeploy`),
      `${model.name} is no longer deployed: the cameras run no model`);
    const pin = (model, value) => act(model, () => api.put(`/models/${model.id}/engine`, { engine: value }),
      `${model.name} runs on ${value === 'auto' ? 'the box\'s choice' : value}`);

    function engineCell(model) {
      const isAdmin = ctx.user && ctx.user.role === 'admin';
      const select = h('select.small', { testid: 'engine-pin', 'aria-label': `engine of ${model.name}`, disabled: !isAdmin,
        title: isAdmin ? 'the engine this model runs on here (a camera may pin its own)' : 'only an admin may pin an engine',
        onchange: () => pin(model, select.value) },
      pins.map(([v, label]) => h('option', { value: v, selected: v === model.engine }, label)));
      if (!pins.some(([v]) => v === model.engine)) select.append(h('option', { value: model.engine, selected: true }, model.engine));
      return h('span.small', h('span.muted', { testid: 'runs-on' }, model.runs_on ? `runs on ${model.runs_on}` : 'not exported'), ' ', select);
    }

    function reducedControl(model, busy) {
      if (!reduced.length) return null;
      const choice = h('select.small', { testid: 'reduced-precision', 'aria-label': `reduced precision of ${model.name}` },
        reduced.map(([format, precision, label]) => h('option', { value: `${format}/${precision}` }, label)));
      return h('span.small', ' · reduced precision ', choice, ' ', h('button.small', { type: 'button', testid: 'evaluate-precision', disabled: !model.has_weights || busy,
        title: 'build it, then measure accuracy on the validation split and speed here: offered only if it keeps mAP50-95 and is faster',
        onclick: () => {
          const [format, precision] = choice.value.split('/');
          startExport(model, { format, precision });
        } }, 'Evaluate'));
    }

    async function remove(model) {
      const ok = await confirmDialog(`Delete model ${model.name}?`,
        `Model #${model.id}, its weights and its ${model.exports.length} export(s) are removed from the box.`);
      if (ok) await act(model, () => api.del(`/models/${model.id}`), `Model ${model.name} deleted`);
    }

    function renderCompare() {
      clear(compareBox);
      const chosen = models.filter((m) => selected.has(m.id)).sort((a, b) => a.id - b.id);
      if (chosen.length === 2) compareBox.append(compareCard(chosen[0], chosen[1]));
      else if (chosen.length === 1) compareBox.append(h('p.muted', { testid: 'compare-hint' }, 'Select one more model to compare.'));
    }

    function exportsCell(model) {
      if (!model.exports.length) return h('td.exports', { testid: 'exports' }, h('span.muted', 'none'));
      const newest = [...model.exports].sort((a, b) => b.id - a.id);
      const onnx = newest.find((e) => e.format === 'onnx' && e.status === 'completed');
      const shown = newest.slice(0, SHOWN_EXPORTS);
      const more = newest.length - shown.length;
      return h('td.exports', { testid: 'exports' },
        shown.map((e) => [exportBadge(e), BUSY.includes(e.status)
          ? h('button.link', { type: 'button', testid: 'cancel-export', title: 'cancel this export',
            onclick: () => cancelExport(model, e) }, ' cancel') : null, ' ']),
        more > 0 ? h('span.muted.small', { title: newest.slice(SHOWN_EXPORTS).map((e) => `${e.format} ${e.imgsz}: ${e.status}`).join('\n') },
          `+${more} `) : null,
        onnx ? h('a.button.small', { href: `${API_PREFIX}/models/${model.id}/exports/${onnx.id}/file`, download: '',
          testid: 'download-onnx', title: `download model_${onnx.imgsz}.onnx` }, 'Download ONNX') : null);
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
      const manage = model.can_manage ? '' : 'only the model\'s owner or an admin may do this';
      const cells = h('tr', { testid: 'model-row', dataset: { id: String(model.id) } },
        h('td', check),
        h('td.model-name', h('div.model-title', h('span.name', { title: model.name }, h('strong', model.name), ' ', h('span.muted', `#${model.id}`)),
          model.deployed ? h('span.badge.reviewed', { testid: 'deployed-badge' }, 'deployed') : null,
          unusable(model) ? h('span.badge.bad', { testid: 'unusable-badge', title: 'mAP50 near 0: it finds almost nothing' }, 'not usable') : null),
        h('div.muted.small', `${model.dataset_name || 'dataset deleted'} · ${(model.created_at || '').slice(0, 16).replace('T', ' ')} · `,
          evaluationLink(model, latest))),
        metricsCells(model),
        h('td.num', String(model.imgsz)),
        exportsCell(model),
        h('td.actions',
          h('button.small', { type: 'button', testid: 'export-onnx', disabled: !model.has_weights || busy,
            title: !model.has_weights ? 'no weights file on disk' : busy ? 'an export is running' : 'export to ONNX (runs here and on the device)',
            onclick: () => startExport(model, { format: 'onnx' }) }, 'Export ONNX'),
          h('button.small', { type: 'button', testid: 'export-engine', disabled: !engine.ok || !model.has_weights || busy,
            title: engine.ok ? 'TensorRT FP16 engine for this box\'s GPU' : engine.reason,
            onclick: () => startExport(model, { format: 'engine', half: true }) }, 'Export TensorRT'),
          model.deployed
            ? h('button.small', { type: 'button', testid: 'undeploy', disabled: !model.can_manage, title: manage || 'stop running it on the cameras',
              onclick: () => undeploy(model) }, 'Undeploy')
            : h('button.primary.small', { type: 'button', testid: 'deploy', disabled: !model.ready || !model.can_manage,
              title: manage || (model.ready ? 'run it on the cameras' : 'export the model first (Export ONNX), then deploy it'),
              onclick: () => deploy(model) }, 'Deploy'),
          h('button.danger.small', { type: 'button', testid: 'delete-model', disabled: model.deployed || busy || !model.can_manage,
            title: manage || (model.deployed ? 'undeploy it first' : busy ? 'an export is running' : 'delete the model and its files'),
            onclick: () => remove(model) }, 'Delete'),
          // Why Deploy is off, said in words under the buttons (the row is two lines high anyway).
          model.deployed || model.ready || !model.can_manage ? null
            : h('div.muted.deploy-reason', { testid: 'deploy-reason' }, 'Deploy: export the model first (Export ONNX)')));
      const error = errors.get(model.id);
      // What runs it here and the reduced precisions measured for it, on a line of their own under the row.
      const detail = h('tr.row-detail', { testid: 'model-engine', dataset: { id: String(model.id) } }, h('td'),
        h('td', { colspan: 10 }, h('div.inline', engineCell(model), reducedControl(model, busy)), gateTable(model)));
      return [cells, detail,
        error ? h('tr.row-error', { testid: 'model-error', dataset: { id: String(model.id) } },
          h('td', { colspan: 11, role: 'alert' }, error)) : null].filter(Boolean);
    }

    function renderList() {
      clear(list);
      if (!models.length) {
        list.append(h('p.muted', { testid: 'no-models' }, 'No models yet: train one on a labeled dataset.'));
      } else {
        list.append(h('table.table.models-table', { testid: 'models-table' },
          h('thead', h('tr', h('th', ''), h('th', 'Model'), METRICS.map(([, label]) => h('th.num', label)),
            h('th.num', 'Size'), h('th', 'Exports'), h('th', ''))),
          h('tbody', models.map(row))));
      }
      renderCompare();
      if (bundles) bundles.update(models);
    }

    async function load() {
      try {
        const [found, evaluated] = await Promise.all([api.get('/models', { signal: ctx.signal }),
          api.get('/evaluations/latest', { signal: ctx.signal }).catch(() => [])]);
        models = found;
        latest = new Map(evaluated.map((e) => [e.model_id, e]));
      } catch (err) {
        if (err && err.name === 'AbortError') return;
        clear(list).append(h('p.card.error', errorText(err)));
        return;
      }
      renderList();
      clearTimeout(timer);
      if (models.some((m) => m.exports.some((e) => BUSY.includes(e.status)))) timer = setTimeout(load, 2000);
    }

    (async () => {
      const system = await api.get('/system', { signal: ctx.signal }).catch(() => null);
      engine = engineSupport(system);
      reduced = reducedChoices(system);
      pins = enginePins(system);
      engineNote.hidden = engine.ok;
      engineNote.textContent = engine.ok ? '' : `Export TensorRT is off: ${engine.reason}.`;
      await load();
    })();
    return () => clearTimeout(timer);
  },
};
