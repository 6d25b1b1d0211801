// Two models on the same frozen images: their figures side by side and the images where their confident
// predictions differ (which one erred less on each), drawn next to each other over the labels. When the two
// were never evaluated on the same images, one click evaluates one on the other's.

import { errorText } from '../api.js';
import {
  LABEL_COLOR, boxView, headline, labelerLink, predictionColor, splitText, statusText,
} from '../components/evaluation-views.js';
import { formatMetric as fmt } from '../components/format.js';
import { clear, h } from '../dom.js';

const BUSY = ['pending', 'running'];

function sideBySide(a, b, found) {
  const rows = [['precision', 'Precision'], ['recall', 'Recall'], ['map50', 'mAP50'], ['map50_95', 'mAP50-95']];
  const classes = [...new Set([...a.summary.classes, ...b.summary.classes].map((c) => c.name))];
  const of = (evaluation, name) => evaluation.summary.classes.find((c) => c.name === name) || {};
  const diff = (x, y) => (typeof x === 'number' && typeof y === 'number' ? `${y - x >= 0 ? '+' : ''}${(y - x).toFixed(3)}` : '–');
  return h('table.table.compact', { testid: 'compare-metrics' },
    h('thead', h('tr', h('th', ''), h('th.num', `A: ${a.model_name}`), h('th.num', `B: ${b.model_name}`), h('th.num', 'B − A'))),
    h('tbody',
      rows.map(([key, label]) => h('tr', { testid: 'compare-metric', dataset: { metric: key } }, h('td', label),
        h('td.num', fmt(a.summary[key])), h('td.num', fmt(b.summary[key])), h('td.num', diff(a.summary[key], b.summary[key])))),
      classes.map((name) => h('tr', h('td', `mAP50-95 ${name}`), h('td.num', fmt(of(a, name).map50_95)),
        h('td.num', fmt(of(b, name).map50_95)), h('td.num', diff(of(a, name).map50_95, of(b, name).map50_95)))),
      h('tr', h('td', 'Images where they differ'), h('td.num', { testid: 'a-better' }, `A better on ${found.a_better}`),
        h('td.num', { testid: 'b-better' }, `B better on ${found.b_better}`), h('td.num', { testid: 'disagreements' }, `${found.disagreements} of ${found.images}`))));
}

function disagreementCard(d) {
  const label = (who, errors) => h('div.small', `${who}: ${errors} error(s)`);
  const layers = (boxes) => [{ boxes: d.labels, color: LABEL_COLOR }, { boxes, colorOf: predictionColor, dashed: true }];
  return h('div.card', { testid: 'disagreement', dataset: { position: String(d.position), better: d.better },
    style: { padding: '.5rem', 'margin-bottom': '0' } },
  h('div', { style: { display: 'flex', gap: '.4rem' } },
    h('div', label('A', d.a_errors), boxView(d, layers(d.a), 220)),
    h('div', label('B', d.b_errors), boxView(d, layers(d.b), 220))),
  h('p.small', d.better === 'same' ? 'as many errors' : `${d.better.toUpperCase()} erred less`, ' · ',
    d.labels.length ? labelerLink(d, d.labels[0], 'open in the labeler') : labelerLink(d, { x1: 0, y1: 0, x2: d.width, y2: d.height }, 'open in the labeler')));
}

export default {
  route: '#/models/compare',
  title: 'Compare models',
  async render(root, params, ctx) {
    const { api } = ctx;
    const ids = [Number(ctx.query.get('a')), Number(ctx.query.get('b'))];
    const models = await Promise.all(ids.map((id) => api.get(`/models/${id}`, { signal: ctx.signal })));
    const body = h('div', { testid: 'compare-body' });
    const error = h('p.form-error', { role: 'alert', testid: 'compare-error' });
    root.append(h('div.page-head', h('h1', `Compare: A ${models[0].name} (#${ids[0]}) · B ${models[1].name} (#${ids[1]})`),
      h('div.actions', h('a', { href: '#/models', class: 'button' }, 'Models'))), error, body);
    let timer = null;

    async function evaluateOn(model, split) {
      try {
        await api.post(`/models/${model.id}/evaluations`, model.has_weights ? { split_id: split.id }
          : { split_id: split.id, export_id: (model.exports.find((e) => e.status === 'completed') || {}).id });
        await load();
      } catch (err) {
        error.textContent = errorText(err);
      }
    }

    async function load() {
      clearTimeout(timer);
      const [ea, eb] = await Promise.all(ids.map((id) => api.get(`/models/${id}/evaluations`, { signal: ctx.signal })));
      const pending = [...ea, ...eb].filter((e) => BUSY.includes(e.status));
      const done = (list) => list.filter((e) => e.status === 'completed');
      // The newest pair on the same images (equal fingerprints: the same frozen content).
      let pair = null;
      for (const a of done(ea)) {
        const b = done(eb).find((e) => e.split.fingerprint === a.split.fingerprint);
        if (b) { pair = [a, b]; break; }
      }
      clear(body);
      if (pending.length) {
        body.append(h('p.muted', { testid: 'compare-waiting' }, `Evaluating: ${pending.map((e) => `#${e.id} ${statusText(e)}`).join(', ')}…`));
        timer = setTimeout(() => load().catch(() => {}), 1500);
      }
      if (!pair) {
        const offers = [];
        for (const [model, theirs, other] of [[models[1], done(ea), 'A'], [models[0], done(eb), 'B']]) {
          for (const e of theirs.slice(0, 2)) {
            offers.push(h('li', h('button.small', { type: 'button', testid: 'evaluate-on-other', onclick: () => evaluateOn(model, e.split) },
              `Evaluate ${model.name} on ${other}'s images`), ' ', h('span.muted.small', splitText(e.split))));
          }
        }
        body.append(h('p', { testid: 'compare-none' }, 'These two models were not evaluated on the same images yet.'),
          offers.length ? h('ul', offers) : h('p.muted', 'Evaluate one of them first (its Evaluation page).'));
        return;
      }
      const found = await api.get(`/evaluations/compare?a=${pair[0].id}&b=${pair[1].id}`, { signal: ctx.signal });
      body.append(
        h('p.muted', `On ${splitText(pair[0].split)}; evaluations #${pair[0].id} and #${pair[1].id}.`),
        h('div', { style: { display: 'flex', gap: '1rem', 'flex-wrap': 'wrap' } },
          h('div', h('h3', `A: ${models[0].name}`), headline(found.a.summary)),
          h('div', h('h3', `B: ${models[1].name}`), headline(found.b.summary))),
        h('div.card', sideBySide(found.a, found.b, found)),
        h('h3', 'Images where they disagree'),
        found.shown.length
          ? h('div', { testid: 'disagreements-list', style: { display: 'flex', 'flex-wrap': 'wrap', gap: '.6rem' } }, found.shown.map(disagreementCard))
          : h('p.muted', { testid: 'no-disagreements' }, 'None: they find the same boxes on every image.'));
    }
    try {
      await load();
    } catch (err) {
      error.textContent = errorText(err);
    }
    return () => clearTimeout(timer);
  },
};
