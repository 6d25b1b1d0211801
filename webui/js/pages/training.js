// Train: the start form (dataset with its labeled counts, base model, epochs, image size, batch, device as the box
// has it), what the training will use and take (components/training-plan.js), the base weights (and their import
// from a USB drive, components/base-weights.js) and the job list. One job's page: pages/training-job.js.

import { ApiError, errorText } from '../api.js';
import { createWeightsCard } from '../components/base-weights.js';
import { formatDuration, formatMetric as metric, formatNumber } from '../components/format.js';
import { createPlanCard } from '../components/training-plan.js';
import { append, h } from '../dom.js';

export const TERMINAL = ['completed', 'failed', 'cancelled'];
// Jetson Orin Nano (8 GB shared CPU/GPU memory): a nano model at 640 px with batch 8 fits comfortably.
const DEFAULTS = { epochs: 50, imgsz: 640, batch: 8, patience: 20, val_ratio: 0.2 };
const IMAGE_SIZES = [320, 416, 480, 512, 640, 736, 800, 960];
const MAX_COUNTED = 50; // datasets whose labeled counts the picker asks for

export function statusBadge(status) {
  const kind = status === 'completed' ? 'reviewed' : status === 'running' ? 'labeled' : 'muted';
  return h(`span.badge.${kind}`, { testid: 'job-status', dataset: { status } }, status);
}

/** Device choices as the box has them: GPUs only where GET /system found some. */
function deviceOptions(system) {
  const gpu = (system && system.gpu) || {};
  const count = gpu.gpu_present ? Math.max(1, (gpu.nvidia_devices || []).length, (gpu.gpus || []).length) : 0;
  const options = [h('option', { value: 'auto', title: count ? 'the GPU' : 'this box has no GPU: training runs on the CPU' },
    count ? 'auto (the GPU)' : 'auto (CPU, no GPU)'),
    h('option', { value: 'cpu' }, 'CPU')];
  for (let i = 0; i < count; i += 1) {
    const name = (gpu.gpus && gpu.gpus[i] && gpu.gpus[i].name) || (gpu.jetson ? 'Jetson GPU' : 'NVIDIA GPU');
    options.push(h('option', { value: String(i) }, `GPU ${i} (${name})`));
  }
  return options;
}

function baseOptions(bases) {
  const groups = { weights: 'Pretrained weights (recommended)', model: 'Trained on this box (fine-tune)',
    architecture: 'From scratch (needs many labeled images)' };
  return Object.entries(groups).map(([kind, label]) => {
    const items = bases.filter((b) => b.kind === kind);
    return items.length ? h('optgroup', { label }, items.map((b) => h('option', { value: b.id, title: b.description }, b.name))) : null;
  });
}

function startForm(ctx, datasets, bases, system, labeled) {
  const error = h('p.form-error', { testid: 'train-error', role: 'alert' });
  const datasetSelect = h('select', { testid: 'train-dataset', required: true },
    datasets.map((d) => h('option', { value: d.id }, labeled.has(d.id)
      ? `${d.name} (${formatNumber(labeled.get(d.id))} labeled of ${formatNumber(d.image_count)})`
      : `${d.name} (${formatNumber(d.image_count)} images)`)));
  const preset = ctx.query.get('dataset');
  if (preset && datasets.some((d) => String(d.id) === preset)) datasetSelect.value = preset;
  const baseSelect = h('select', { testid: 'train-base', required: true }, baseOptions(bases));
  const preferred = bases.find((b) => b.kind === 'weights') || bases.find((b) => b.id === 'yolov8n.yaml') || bases[0];
  baseSelect.value = preferred ? preferred.id : '';
  const number = (name, value, attrs) => h('input', { type: 'number', name, value, testid: `train-${name}`, required: true, ...attrs });
  const epochs = number('epochs', DEFAULTS.epochs, { min: 1, max: 1000 });
  const imgsz = number('imgsz', DEFAULTS.imgsz, { min: 32, max: 2048, list: 'train-sizes' });
  const batch = number('batch', DEFAULTS.batch, { min: 1, max: 256 });
  const patience = number('patience', DEFAULTS.patience, { min: 0, max: 1000 });
  const valRatio = number('val_ratio', DEFAULTS.val_ratio, { min: 0.05, max: 0.5, step: 0.05 });
  const device = h('select', { testid: 'train-device' }, deviceOptions(system));
  const plots = h('input', { type: 'checkbox', checked: true, testid: 'train-plots' });
  const name = h('input', { name: 'name', maxlength: 120, placeholder: 'optional', testid: 'train-name' });
  const submit = h('button.primary', { type: 'submit', testid: 'train-start', form: 'train-form' }, 'Start training');
  const form = h('form#train-form.card.train-form', { testid: 'train-form' },
    h('datalist#train-sizes', IMAGE_SIZES.map((s) => h('option', { value: s }))),
    h('label.wide', 'Dataset', datasetSelect),
    h('label.wide', 'Base model', baseSelect),
    h('label', 'Epochs', epochs),
    h('label', 'Image size (px)', imgsz),
    h('label', 'Batch', batch),
    h('label', 'Patience', patience),
    h('label', 'Validation share', valRatio),
    h('label', 'Device', device),
    h('label', 'Model name', name),
    h('label.inline', plots, 'Plots'),
    error);

  const plan = createPlanCard(ctx.api, {
    onUse: (rec) => {
      epochs.value = rec.epochs;
      imgsz.value = rec.imgsz;
      batch.value = rec.batch;
      refreshPlan();
    },
  });
  const refreshPlan = () => plan.update({
    dataset_id: datasetSelect.value, base_model: baseSelect.value, epochs: epochs.value || null,
    imgsz: Number(imgsz.value) % 32 ? null : imgsz.value || null, device: device.value,
  });
  for (const control of [datasetSelect, baseSelect, epochs, imgsz, device]) control.addEventListener('input', refreshPlan);
  refreshPlan();

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    if (Number(imgsz.value) % 32) {
      error.textContent = 'Image size must be a multiple of 32.';
      imgsz.focus();
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
  const setBases = (fresh) => {
    const keep = baseSelect.value;
    baseSelect.replaceChildren(...baseOptions(fresh).filter(Boolean));
    const imported = fresh.find((b) => b.kind === 'weights');
    baseSelect.value = fresh.some((b) => b.id === keep) && !keep.endsWith('.yaml') ? keep : (imported || { id: keep }).id;
    refreshPlan();
  };
  return { form, submit, plan, setBases };
}

function jobRows(jobs, datasetNames) {
  return jobs.map((j) => h('tr', { testid: 'job-row', dataset: { id: j.id, status: j.status } },
    h('td', h('a', { href: `#/training/${j.id}`, testid: 'job-link' }, `#${j.id}`)),
    h('td', datasetNames.get(j.dataset_id) || (j.dataset_id ? `dataset ${j.dataset_id}` : 'deleted dataset')),
    h('td', j.base_model),
    h('td.num', `${j.epoch}/${j.epochs}`),
    h('td', statusBadge(j.status), j.error ? h('div.muted.small', j.error.slice(0, 120)) : null,
      j.waiting_reason ? h('div.muted.small', { testid: 'job-waiting' }, j.waiting_reason) : null),
    h('td', h('progress', { max: 1, value: j.fraction }), j.eta_s ? h('span.muted.small', ` ${formatDuration(j.eta_s)} left`) : null),
    h('td.num', j.status === 'completed' && typeof j.map50_95 === 'number' && j.map50_95 < 0.02
      ? h('span.badge.bad', { testid: 'job-unusable-badge', title: 'mAP near 0: the model finds almost nothing' }, 'not usable')
      : metric(j.map50_95)),
    h('td', j.created_at.replace('T', ' ').slice(0, 16))));
}

export const trainingListPage = {
  route: '#/training',
  title: 'Train',
  nav: 'Train',
  async render(root, _params, ctx) {
    const [datasets, bases, jobs, system] = await Promise.all([
      ctx.api.get('/datasets', { signal: ctx.signal }),
      ctx.api.get('/models/base', { signal: ctx.signal }),
      ctx.api.get('/training-jobs', { signal: ctx.signal }),
      ctx.api.get('/system', { signal: ctx.signal }).catch(() => null),
    ]);
    // The picker shows what training takes: labeled (and reviewed) images, from each dataset's counts.
    const labeled = new Map();
    await Promise.all(datasets.slice(0, MAX_COUNTED).map(async (d) => {
      try {
        const stats = await ctx.api.get(`/datasets/${d.id}/stats`, { signal: ctx.signal });
        labeled.set(d.id, (stats.by_status.labeled || 0) + (stats.by_status.reviewed || 0));
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
      }
    }));
    const datasetNames = new Map(datasets.map((d) => [d.id, d.name]));
    const canWrite = ctx.user.role !== 'viewer';
    const body = h('tbody', { testid: 'job-rows' }, jobRows(jobs, datasetNames));
    const empty = h('p.empty', { testid: 'jobs-empty', class: jobs.length ? 'hidden' : '' }, 'No training yet.');
    const start = canWrite && datasets.length ? startForm(ctx, datasets, bases, system, labeled) : null;
    const weights = canWrite ? createWeightsCard(ctx, {
      onImported: async () => start && start.setBases(await ctx.api.get('/models/base')),
    }) : null;
    append(root, [
      h('div.page-head', h('h1', 'Train'), start ? start.submit : null),
      start ? h('div.train-layout', start.form, start.plan.node) : null,
      canWrite && !datasets.length ? h('p.notice', 'Create a dataset and label some images first.') : null,
      h('h2', 'Training jobs'),
      h('table.table', { testid: 'jobs-table' },
        h('thead', h('tr', ['Job', 'Dataset', 'Base', 'Epoch', 'Status', 'Progress', 'mAP50-95', 'Created'].map((t) => h('th', t)))),
        body),
      empty,
      weights ? weights.node : null,
    ]);
    const timer = setInterval(async () => {
      try {
        const fresh = await ctx.api.get('/training-jobs', { signal: ctx.signal });
        body.replaceChildren(...jobRows(fresh, datasetNames));
        empty.classList.toggle('hidden', fresh.length > 0);
      } catch (err) {
        if (!(err instanceof ApiError) && !ctx.signal.aborted) console.warn(err);
      }
    }, 3000);
    return () => {
      clearInterval(timer);
      if (start) start.plan.destroy();
    };
  },
};

export default trainingListPage;
