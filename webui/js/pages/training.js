// Train: start a training job (dataset, base model, epochs, image size, batch), the job list, and a job page
// with a live loss + mAP chart per epoch (components/charts.js), progress with ETA, log tail, cancel, plots.

import { API_PREFIX, ApiError, errorText } from '../api.js';
import { lineChart } from '../components/charts.js';
import { formatDuration, formatMetric as metric, formatNumber } from '../components/format.js';
import { confirmDialog, h } from '../dom.js';

const TERMINAL = ['completed', 'failed', 'cancelled'];
// Jetson Orin Nano (8 GB shared CPU/GPU memory): a nano model at 640 px with batch 8 fits comfortably.
const DEFAULTS = { epochs: 50, imgsz: 640, batch: 8, patience: 20, val_ratio: 0.2 };
const IMAGE_SIZES = [320, 416, 480, 512, 640, 736, 800, 960];
const PLOT_TITLES = {
  'results.png': 'Training curves',
  'confusion_matrix.png': 'Confusion matrix',
  'confusion_matrix_normalized.png': 'Confusion matrix (normalized)',
  'BoxPR_curve.png': 'Precision-recall curve',
  'BoxF1_curve.png': 'F1 curve',
  'labels.jpg': 'Labels',
  'val_batch0_pred.jpg': 'Validation predictions',
};

function statusBadge(status) {
  const kind = status === 'completed' ? 'reviewed' : status === 'running' ? 'labeled' : 'muted';
  return h(`span.badge.${kind}`, { testid: 'job-status', dataset: { status } }, status);
}

const LOSS_SERIES = [['box', 'box_loss'], ['cls', 'cls_loss'], ['dfl', 'dfl_loss'], ['val box', 'val_box_loss']];
const MAP_SERIES = [['mAP50', 'map50'], ['mAP50-95', 'map50_95'], ['precision', 'precision'], ['recall', 'recall']];

/** Chart series from the per-epoch metrics: [label, metric key] pairs -> [{label, values}]. */
function series(metrics, keys) {
  return keys.map(([label, key]) => ({ label, values: metrics.map((m) => m[key]) }));
}

// --- the list + start form ----------------------------------------------------------------------------------

function startForm(ctx, datasets, bases) {
  const error = h('p.form-error', { testid: 'train-error', role: 'alert' });
  const datasetSelect = h('select', { testid: 'train-dataset', required: true },
    datasets.map((d) => h('option', { value: d.id }, `${d.name} (${formatNumber(d.image_count)} images)`)));
  const preset = ctx.query.get('dataset');
  if (preset) datasetSelect.value = preset;
  const groups = { architecture: 'From scratch (architecture)', weights: 'Weights files', model: 'Trained on this box' };
  const baseSelect = h('select', { testid: 'train-base', required: true },
    Object.entries(groups).map(([kind, label]) => {
      const items = bases.filter((b) => b.kind === kind);
      return items.length
        ? h('optgroup', { label }, items.map((b) => h('option', { value: b.id, title: b.description }, b.name)))
        : null;
    }));
  baseSelect.value = bases.some((b) => b.id === 'yolov8n.yaml') ? 'yolov8n.yaml' : (bases[0] || {}).id || '';
  const number = (name, value, attrs) => h('input', { type: 'number', name, value, testid: `train-${name}`, required: true, ...attrs });
  const epochs = number('epochs', DEFAULTS.epochs, { min: 1, max: 1000 });
  const imgsz = number('imgsz', DEFAULTS.imgsz, { min: 32, max: 2048, list: 'train-sizes' });
  const batch = number('batch', DEFAULTS.batch, { min: 1, max: 256 });
  const patience = number('patience', DEFAULTS.patience, { min: 0, max: 1000 });
  const valRatio = number('val_ratio', DEFAULTS.val_ratio, { min: 0.05, max: 0.5, step: 0.05 });
  const device = h('select', { testid: 'train-device' },
    h('option', { value: 'auto' }, 'auto (GPU when present)'), h('option', { value: 'cpu' }, 'CPU'), h('option', { value: '0' }, 'GPU 0'));
  const plots = h('input', { type: 'checkbox', checked: true, testid: 'train-plots' });
  const name = h('input', { name: 'name', maxlength: 120, placeholder: 'optional', testid: 'train-name' });
  const submit = h('button.primary', { type: 'submit', testid: 'train-start' }, 'Start training');
  const form = h('form.card.inline-form', { testid: 'train-form' },
    h('h2', 'New training'),
    h('datalist#train-sizes', IMAGE_SIZES.map((s) => h('option', { value: s }))),
    h('label', 'Dataset', datasetSelect),
    h('label', 'Base model', baseSelect),
    h('label', 'Epochs', epochs),
    h('label', 'Image size (px)', imgsz),
    h('label', 'Batch', batch),
    h('label', 'Patience', patience),
    h('label', 'Validation share', valRatio),
    h('label', 'Device', device),
    h('label', 'Model name', name),
    h('label.inline', plots, 'Plots'),
    h('div.actions', submit),
    error);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    if (Number(imgsz.value) % 32) {
      error.textContent = 'Image size must be a multiple of 32.';
      return;
    }
    submit.disabled = true;
    try {
      const job = await ctx.api.post('/training-jobs', {
        dataset_id: Number(datasetSelect.value), base_model: baseSelect.value, epochs: Number(epochs.value),
        imgsz: Number(imgsz.value), batch: Number(batch.value), patience: Number(patience.value),
        val_ratio: Number(valRatio.value), device: device.value, plots: plots.checked, name: name.value.trim(),
      });
      ctx.toast(`Training job ${job.id} queued`, 'ok');
      ctx.navigate(`#/training/${job.id}`);
    } catch (err) {
      error.textContent = errorText(err);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function jobRows(jobs, datasetNames) {
  return jobs.map((j) => h('tr', { testid: 'job-row', dataset: { id: j.id, status: j.status } },
    h('td', h('a', { href: `#/training/${j.id}`, testid: 'job-link' }, `#${j.id}`)),
    h('td', datasetNames.get(j.dataset_id) || (j.dataset_id ? `dataset ${j.dataset_id}` : '–')),
    h('td', j.base_model),
    h('td.num', `${j.epoch}/${j.epochs}`),
    h('td', statusBadge(j.status), j.error ? h('div.muted.small', j.error.slice(0, 120)) : null,
      j.waiting_reason ? h('div.muted.small', { testid: 'job-waiting' }, j.waiting_reason) : null),
    h('td', h('progress', { max: 1, value: j.fraction }), j.eta_s ? h('span.muted.small', ` ${formatDuration(j.eta_s)} left`) : null),
    h('td.num', metric(j.map50_95)),
    h('td', j.created_at.replace('T', ' ').slice(0, 16))));
}

export const trainingListPage = {
  route: '#/training',
  title: 'Train',
  nav: 'Train',
  async render(root, _params, ctx) {
    const [datasets, bases, jobs] = await Promise.all([
      ctx.api.get('/datasets', { signal: ctx.signal }),
      ctx.api.get('/models/base', { signal: ctx.signal }),
      ctx.api.get('/training-jobs', { signal: ctx.signal }),
    ]);
    const datasetNames = new Map(datasets.map((d) => [d.id, d.name]));
    const canWrite = ctx.user.role !== 'viewer';
    const body = h('tbody', { testid: 'job-rows' }, jobRows(jobs, datasetNames));
    const empty = h('p.empty', { testid: 'jobs-empty', class: jobs.length ? 'hidden' : '' }, 'No training yet.');
    root.append(
      h('div.page-head', h('h1', 'Train')),
      canWrite && datasets.length ? startForm(ctx, datasets, bases) : null,
      canWrite && !datasets.length ? h('p.notice', 'Create a dataset and label some images first.') : null,
      h('h2', 'Training jobs'),
      h('table.table', { testid: 'jobs-table' },
        h('thead', h('tr', ['Job', 'Dataset', 'Base', 'Epoch', 'Status', 'Progress', 'mAP50-95', 'Created'].map((t) => h('th', t)))),
        body),
      empty);
    const timer = setInterval(async () => {
      try {
        const fresh = await ctx.api.get('/training-jobs', { signal: ctx.signal });
        body.replaceChildren(...jobRows(fresh, datasetNames));
        empty.classList.toggle('hidden', fresh.length > 0);
      } catch (err) {
        if (!(err instanceof ApiError) && !ctx.signal.aborted) console.warn(err);
      }
    }, 3000);
    return () => clearInterval(timer);
  },
};

// --- one job --------------------------------------------------------------------------------------------------

export const trainingJobPage = {
  route: '#/training/:id',
  title: 'Training job',
  async render(root, params, ctx) {
    const id = Number(params.id);
    let job = await ctx.api.get(`/training-jobs/${id}`, { signal: ctx.signal });
    ctx.setTitle(`Training job ${id}`);
    const status = h('span', { testid: 'job-status-holder' });
    const cancel = h('button.danger', { type: 'button', testid: 'job-cancel' }, 'Cancel training');
    const bar = h('progress', { max: 1, value: 0, testid: 'job-progress', style: { width: '100%', height: '1.1rem' } });
    const progressText = h('p.muted', { testid: 'job-progress-text' });
    const errorBox = h('p.form-error', { testid: 'job-error', role: 'alert' });
    const lossCanvas = h('canvas', { testid: 'chart-loss', style: { width: '100%', height: '220px' } });
    const mapCanvas = h('canvas', { testid: 'chart-map', style: { width: '100%', height: '220px' } });
    const metricsBody = h('tbody');
    const log = h('pre.small', { testid: 'job-log', style: { 'max-height': '16rem', overflow: 'auto', 'white-space': 'pre-wrap' } });
    const plots = h('div', { testid: 'job-plots', style: { display: 'flex', 'flex-wrap': 'wrap', gap: '1rem' } });
    const result = h('p', { testid: 'job-result' });
    let shownPlots = '';

    cancel.addEventListener('click', async () => {
      if (!(await confirmDialog('Cancel training?', 'Training stops at the next batch; the best weights so far are kept as a model.', { confirmLabel: 'Stop training' }))) return;
      try {
        job = await ctx.api.post(`/training-jobs/${id}/cancel`);
        ctx.toast('Cancelling: stops at the next batch', 'info');
        update();
      } catch (err) {
        ctx.toast(errorText(err), 'error');
      }
    });

    function update() {
      status.replaceChildren(statusBadge(job.status));
      const mayCancel = !TERMINAL.includes(job.status) && !job.cancel_requested && ctx.user.role !== 'viewer';
      cancel.classList.toggle('hidden', !mayCancel);
      bar.value = job.fraction || 0;
      const parts = [];
      if (job.status === 'pending') parts.push(job.waiting_reason || 'waiting for the worker');
      else if (job.stage && !TERMINAL.includes(job.status)) parts.push(job.stage);
      parts.push(`epoch ${job.epoch}/${job.epochs || job.params.epochs}`);
      if (job.batches && !TERMINAL.includes(job.status)) parts.push(`batch ${job.batch}/${job.batches}`);
      parts.push(`${Math.round((job.fraction || 0) * 100)} %`);
      if (job.eta_s !== null && job.eta_s !== undefined) parts.push(`about ${formatDuration(job.eta_s)} left`);
      if (job.cancel_requested && !TERMINAL.includes(job.status)) parts.push('cancel requested');
      progressText.textContent = parts.join(' · ');
      errorBox.textContent = job.error || '';
      lineChart(lossCanvas, 'Loss per epoch', series(job.metrics, LOSS_SERIES));
      lineChart(mapCanvas, 'mAP / precision / recall per epoch', series(job.metrics, MAP_SERIES));
      metricsBody.replaceChildren(...job.metrics.slice(-8).reverse().map((m) => h('tr', { testid: 'metric-row' },
        h('td.num', m.epoch), h('td.num', metric(m.box_loss)), h('td.num', metric(m.cls_loss)),
        h('td.num', metric(m.precision)), h('td.num', metric(m.recall)), h('td.num', metric(m.map50)),
        h('td.num', metric(m.map50_95)), h('td.num', metric(m.lr, 5)))));
      log.textContent = job.log_tail || '';
      log.scrollTop = log.scrollHeight;
      const resultParts = [];
      if (job.model_id) resultParts.push(h('span', { testid: 'job-model' }, `Model ${job.model_id}`));
      if (job.result && job.result.metrics && job.result.metrics.map50_95 !== undefined) {
        resultParts.push(` · final mAP50-95 ${metric(job.result.metrics.map50_95)}, mAP50 ${metric(job.result.metrics.map50)}`);
      }
      if (job.result && job.result.oom_retry) {
        resultParts.push(` · ran out of memory at batch ${job.result.oom_retry.from_batch}, retried with ${job.result.oom_retry.to_batch}`);
      }
      if (job.result && job.result.resumed_from_epoch) resultParts.push(` · resumed after epoch ${job.result.resumed_from_epoch}`);
      result.replaceChildren(...resultParts);
      const names = TERMINAL.includes(job.status) ? job.plots.filter((n) => PLOT_TITLES[n]) : [];
      if (names.join() !== shownPlots) {
        shownPlots = names.join();
        plots.replaceChildren(...names.map((n) => h('figure', { style: { margin: '0', 'max-width': '480px' } },
          h('img', { src: `${API_PREFIX}/training-jobs/${id}/plots/${n}`, alt: PLOT_TITLES[n], testid: 'job-plot',
            dataset: { name: n }, style: { 'max-width': '100%' } }),
          h('figcaption.muted.small', PLOT_TITLES[n]))));
      }
    }

    root.append(
      h('div.page-head', h('h1', `Training job ${id} `, status), cancel),
      h('p.muted', `${job.base_model} · ${job.params.imgsz} px · batch ${job.params.batch} · dataset `,
        h('a', { href: `#/datasets/${job.dataset_id}` }, String(job.dataset_id))),
      h('section.card', bar, progressText, errorBox, result),
      h('section.card', { style: { display: 'grid', 'grid-template-columns': 'repeat(auto-fit, minmax(320px, 1fr))', gap: '1rem' } },
        lossCanvas, mapCanvas),
      h('section.card', h('h3', 'Latest epochs'),
        h('table.table.compact', h('thead', h('tr', ['Epoch', 'Box loss', 'Cls loss', 'Precision', 'Recall', 'mAP50', 'mAP50-95', 'LR'].map((t) => h('th.num', t)))), metricsBody)),
      h('section.card', h('h3', 'Log'), log),
      h('section.card', h('h3', 'Plots'), plots));
    update();

    // Live: every event from the stream triggers a (throttled) reload of the job; batch events move the bar at once.
    let pending = null;
    let closed = false;
    const reload = () => {
      if (pending || closed) return;
      pending = setTimeout(async () => {
        try {
          job = await ctx.api.get(`/training-jobs/${id}`, { signal: ctx.signal });
          update();
        } catch (err) {
          if (!ctx.signal.aborted) console.warn(err);
        } finally {
          pending = null;
        }
      }, 400);
    };
    const onResize = () => update();
    window.addEventListener('resize', onResize);
    let stop = () => {};
    if (!TERMINAL.includes(job.status)) {
      stop = ctx.api.events(`/training-jobs/${id}/events`, {
        onMessage: (event) => {
          if (!event || typeof event !== 'object') return;
          if (event.kind === 'batch' && event.data) {
            if (event.data.fraction !== undefined) bar.value = event.data.fraction;
          }
          if (event.kind === 'end') stop(); // the job ended: one last reload below, no reconnecting
          reload();
        },
      });
    }
    return () => {
      closed = true;
      stop();
      if (pending) clearTimeout(pending);
      window.removeEventListener('resize', onResize);
    };
  },
};

export default trainingListPage;
