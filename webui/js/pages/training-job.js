// One training job: progress with ETA from the SSE stream, loss and mAP/precision/recall charts per epoch
// (components/charts.js), the latest epochs, the log tail, Cancel, the result plots, and a plain "not usable"
// when the final mAP is near 0 (with the likely reasons).

import { API_PREFIX, errorText } from '../api.js';
import { lineChart } from '../components/charts.js';
import { formatDuration, formatMetric as metric, UNUSABLE_MAP50 } from '../components/format.js';
import { confirmDialog, h } from '../dom.js';
import { statusBadge, TERMINAL } from './training.js';

const PLOT_TITLES = {
  'results.png': 'Training curves',
  'confusion_matrix.png': 'Confusion matrix',
  'confusion_matrix_normalized.png': 'Confusion matrix (normalized)',
  'BoxPR_curve.png': 'Precision-recall curve',
  'BoxF1_curve.png': 'F1 curve',
  'labels.jpg': 'Labels',
  'val_batch0_pred.jpg': 'Validation predictions',
};
const LOSS_SERIES = [['box', 'box_loss'], ['cls', 'cls_loss'], ['dfl', 'dfl_loss'], ['val box', 'val_box_loss']];
const MAP_SERIES = [['mAP50', 'map50'], ['mAP50-95', 'map50_95'], ['precision', 'precision'], ['recall', 'recall']];

/** Chart series from the per-epoch metrics: [label, metric key] pairs -> [{label, values}]. */
function series(metrics, keys) {
  return keys.map(([label, key]) => ({ label, values: metrics.map((m) => m[key]) }));
}

/** Why a finished training found (almost) nothing, from what it was given; null when the result is usable. */
export function unusableReasons(job) {
  const final = job.result && job.result.metrics;
  if (!final || typeof final.map50 !== 'number' || final.map50 >= UNUSABLE_MAP50) return null;
  const reasons = [];
  const epochs = job.result.epochs_done || job.epoch;
  if (epochs < 30) reasons.push(`only ${epochs} epoch${epochs === 1 ? '' : 's'} (a usable model takes tens to hundreds)`);
  if (String(job.base_model).endsWith('.yaml')) reasons.push('trained from scratch: start from base weights (yolo11n.pt) or a model trained here');
  const snapshot = job.result.snapshot || {};
  if (snapshot.images !== undefined && snapshot.images < 200) reasons.push(`${snapshot.images} labeled images (a few hundred help)`);
  if (snapshot.val_images !== undefined && snapshot.val_images < 5) reasons.push(`${snapshot.val_images} validation images: the figure itself is noisy`);
  return { map50: final.map50, reasons };
}

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
    const verdict = h('div', { testid: 'job-verdict' });
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
      if (job.model_id) resultParts.push(h('a', { testid: 'job-model', href: '#/models' }, `Model ${job.model_id}`));
      if (job.result && job.result.metrics && job.result.metrics.map50_95 !== undefined) {
        resultParts.push(` · final mAP50-95 ${metric(job.result.metrics.map50_95)}, mAP50 ${metric(job.result.metrics.map50)}`);
      }
      if (job.result && job.result.oom_retry) {
        resultParts.push(` · ran out of memory at batch ${job.result.oom_retry.from_batch}, retried with ${job.result.oom_retry.to_batch}`);
      }
      if (job.result && job.result.resumed_from_epoch) resultParts.push(` · resumed after epoch ${job.result.resumed_from_epoch}`);
      result.replaceChildren(...resultParts);
      const unusable = TERMINAL.includes(job.status) ? unusableReasons(job) : null;
      // What the run's losses say about its settings (the result's advice, e.g. objects too small to learn).
      const advice = (job.result && job.result.advice) || [];
      verdict.replaceChildren(...(unusable ? [h('div.notice.bad', { testid: 'job-unusable', role: 'alert' },
        h('strong', `Not usable: mAP50 ${metric(unusable.map50)}.`),
        ' The model finds (almost) nothing on the validation images; do not deploy it.',
        unusable.reasons.length || advice.length ? h('ul', unusable.reasons.map((r) => h('li', r)),
          advice.map((a) => h('li', { testid: 'job-advice' }, a))) : null,
        h('a', { href: `#/training?dataset=${job.dataset_id || ''}` }, 'Train again with the recommended settings'))]
        : advice.map((a) => h('p.notice', { testid: 'job-advice' }, a))));
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
      h('p.muted', `${job.base_model} · ${job.params.imgsz} px · batch ${job.params.batch} · `,
        job.dataset_id ? h('a', { href: `#/datasets/${job.dataset_id}` }, `dataset ${job.dataset_id}`) : 'dataset deleted'),
      h('section.card', bar, progressText, errorBox, result, verdict),
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

export default trainingJobPage;
