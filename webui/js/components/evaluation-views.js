// What the evaluation pages show of a model's evaluation: the split it ran on, headline figures, per-class
// table, confusion matrix, precision-recall curves, and an image with its frozen labels and the predictions
// drawn over it (labels green, predictions in their class colour, dashed; errors outlined thick).
// Used by pages/model-evaluation.js and pages/model-compare.js.

import { API_PREFIX } from '../api.js';
import { lineChart } from './charts.js';
import { formatMetric as fmt, formatNumber } from './format.js';
import { h } from '../dom.js';

const LABEL_COLOR = '#5cd65c';
const PREDICTION_COLORS = ['#4ea1ff', '#ff8c42', '#e05cff', '#ffd23f', '#ff5c7a', '#5ce0e6'];

/** One line saying which frozen images an evaluation ran on. */
export function splitText(split) {
  const where = split.kind === 'training'
    ? `the val split of training job ${split.training_job_id}`
    : `dataset "${split.dataset_name || 'deleted'}" as it was on ${(split.created_at || '').slice(0, 16).replace('T', ' ')}`;
  return `${formatNumber(split.images)} images, ${formatNumber(split.boxes)} boxes: ${where} (split #${split.id})`;
}

export function statusText(evaluation) {
  if (evaluation.status === 'running' && evaluation.progress && evaluation.progress.total) {
    return `running ${evaluation.progress.done || 0}/${evaluation.progress.total}`;
  }
  return evaluation.status;
}

/** Notes that change how far the figures can be trusted. */
export function cautions(evaluation) {
  const s = evaluation.summary || {};
  const notes = [];
  if (evaluation.trained_on) notes.push(`${evaluation.trained_on} of these images were used to train this model: its figures flatter it.`);
  if (s.images_missing) notes.push(`${s.images_missing} image(s) could not be evaluated (deleted since the split was frozen, or unreadable).`);
  if (s.labels_of_unknown_classes) notes.push(`${s.labels_of_unknown_classes} label(s) of classes the model does not know were left out.`);
  if (s.predictions_of_unknown_classes) notes.push(`${s.predictions_of_unknown_classes} prediction(s) of classes the split does not have were left out.`);
  return notes.map((n) => h('p.notice', { testid: 'evaluation-caution' }, n));
}

export function headline(summary) {
  const tile = (key, label, value) => h('div.tile', h('span.big', { testid: `evaluation-${key}` }, value), label);
  return h('div.stat-tiles',
    tile('precision', 'Precision', fmt(summary.precision)),
    tile('recall', 'Recall', fmt(summary.recall)),
    tile('map50', 'mAP50', fmt(summary.map50)),
    tile('map50_95', 'mAP50-95', fmt(summary.map50_95)),
    tile('best_confidence', 'best confidence (F1)', fmt(summary.best_confidence, 2)));
}

export function classTable(summary) {
  return h('table.table.compact', { testid: 'evaluation-classes' },
    h('thead', h('tr', ['Class', 'Images', 'Labels', 'Precision', 'Recall', 'mAP50', 'mAP50-95'].map((t, i) => h(i ? 'th.num' : 'th', t)))),
    h('tbody', summary.classes.map((c) => h('tr', { testid: 'evaluation-class', dataset: { name: c.name } },
      h('td', c.name), h('td.num', formatNumber(c.images)), h('td.num', formatNumber(c.labels)),
      h('td.num', fmt(c.precision)), h('td.num', fmt(c.recall)), h('td.num', fmt(c.map50)), h('td.num', fmt(c.map50_95))))));
}

/** Rows: what the model predicted; columns: what the label says; the last of each is background. */
export function confusionMatrix(summary) {
  const names = summary.matrix_classes;
  const matrix = summary.confusion_matrix;
  const max = Math.max(1, ...matrix.flat());
  return h('div', { style: { overflow: 'auto' } },
    h('p.small.muted', `Predictions above ${summary.operating_confidence} matched to labels at IoU > ${summary.operating_iou}, whatever the class.`),
    h('table.table.compact', { testid: 'confusion-matrix' },
      h('thead', h('tr', h('th', 'predicted \\ true'), names.map((n) => h('th.num', n)))),
      h('tbody', matrix.map((row, p) => h('tr',
        h('th', names[p]),
        row.map((value, t) => h('td.num', {
          testid: 'matrix-cell', dataset: { predicted: names[p], true: names[t] },
          style: { background: value ? `rgba(${p === t ? '92,214,92' : '255,92,122'},${0.15 + 0.6 * (value / max)})` : '' },
        }, String(value))))))));
}

export function prCurves(summary) {
  const canvas = h('canvas', { testid: 'pr-curves', style: { width: '100%', height: '240px' } });
  requestAnimationFrame(() => lineChart(canvas, 'Precision at recall 0 … 1 (IoU 0.5)',
    summary.classes.map((c) => ({ label: c.name, values: c.pr_curve })),
    { xLabel: (i) => (i / 100).toFixed(1), step: 10 }));
  return canvas;
}

/** The labeler at this box of this image (the deep link zooms onto it and marks it). */
export function labelerLink(image, box, text) {
  if (!image.image_id || !image.dataset_id) return h('span.muted.small', { title: 'the image is no longer in its dataset' }, text);
  const where = [box.x1, box.y1, box.x2, box.y2].map((v) => Math.round(v)).join(',');
  return h('a', { href: `#/datasets/${image.dataset_id}/label/${image.image_id}?box=${where}`, testid: 'open-in-labeler' }, text);
}

/**
 * An image with boxes drawn over it: layers = [{ boxes, color | colorOf(box), dashed, marked: Set(index) }].
 * The canvas keeps the image's aspect ratio at `width` CSS pixels.
 */
export function boxView(image, layers, width = 280) {
  const scale = width / Math.max(1, image.width);
  const canvas = h('canvas', { testid: 'box-view', width: Math.round(image.width * scale), height: Math.round(image.height * scale),
    style: { width: `${width}px`, background: '#000', display: 'block' } });
  const g = canvas.getContext('2d');
  const paint = (img) => {
    g.clearRect(0, 0, canvas.width, canvas.height);
    if (img) g.drawImage(img, 0, 0, canvas.width, canvas.height);
    g.font = '11px sans-serif';
    g.textBaseline = 'bottom';
    for (const layer of layers) {
      layer.boxes.forEach((b, i) => {
        const color = layer.colorOf ? layer.colorOf(b) : layer.color;
        g.strokeStyle = color;
        g.fillStyle = color;
        g.lineWidth = layer.marked && layer.marked.has(i) ? 3 : 1.5;
        g.setLineDash(layer.dashed ? [4, 3] : []);
        g.strokeRect(b.x1 * scale, b.y1 * scale, (b.x2 - b.x1) * scale, (b.y2 - b.y1) * scale);
        const text = b.confidence === null || b.confidence === undefined ? b.class_name : `${b.class_name} ${b.confidence.toFixed(2)}`;
        g.fillText(text, b.x1 * scale + 2, Math.max(11, b.y1 * scale));
      });
    }
  };
  paint(null);
  if (image.image_id) {
    const img = new Image();
    img.onload = () => paint(img);
    img.src = `${API_PREFIX}/images/${image.image_id}/file`;
  }
  return canvas;
}

export function predictionColor(box) {
  return PREDICTION_COLORS[box.class_id % PREDICTION_COLORS.length];
}

/** One evaluated image: its picture with labels and predictions, and each error as a link to the labeler. */
export function errorCard(image) {
  const e = image.errors;
  const marked = new Set([...(e.false_positives || []), ...(e.wrong_class || []).map(([p]) => p)]);
  const missed = new Set(e.missed || []);
  const items = [
    ...(e.missed || []).map((i) => h('li', labelerLink(image, image.labels[i], `missed ${image.labels[i].class_name}`))),
    ...(e.false_positives || []).map((i) => h('li', labelerLink(image, image.predictions[i],
      `false ${image.predictions[i].class_name} (${fmt(image.predictions[i].confidence, 2)})`))),
    ...(e.wrong_class || []).map(([p, l]) => h('li', labelerLink(image, image.labels[l],
      `${image.labels[l].class_name} taken for ${image.predictions[p].class_name}`))),
  ];
  return h('div.card', { testid: 'evaluation-image', dataset: { position: String(image.position), imageId: String(image.image_id || '') },
    style: { width: '300px', padding: '.5rem', 'margin-bottom': '0' } },
  image.missing ? h('p.muted', `Not evaluated: ${image.missing}`) : boxView(image, [
    { boxes: image.labels, color: LABEL_COLOR, marked: missed },
    { boxes: image.predictions, colorOf: predictionColor, dashed: true, marked },
  ]),
  image.labels_changed ? h('p.small.warn', 'relabeled since the split was frozen') : null,
  h('ul.small', { style: { margin: '.3rem 0 0', 'padding-left': '1.1rem' } }, items));
}

export { LABEL_COLOR };
