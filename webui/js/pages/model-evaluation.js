// A model's evaluations: ask for one (the model's weights or an export, on its training's val split, a
// dataset as it is now, or the frozen images of an earlier evaluation), and one evaluation in full: the frozen
// split, precision / recall / mAP, per class, the confusion matrix, PR curves, and the images it got wrong,
// each error a link that opens the labeler zoomed onto that box.

import { errorText } from '../api.js';
import { formatMetric as fmt } from '../components/format.js';
import {
  cautions, classTable, confusionMatrix, errorCard, headline, prCurves, splitText, statusText,
} from '../components/evaluation-views.js';
import { append, clear, h, setText } from '../dom.js';

const BUSY = ['pending', 'running'];
const FILTERS = [
  ['errors', 'Any error'], ['false_positives', 'False positives'], ['misses', 'Misses'],
  ['wrong_class', 'Wrong class'], ['missing', 'Not evaluated'],
];

export default {
  route: '#/models/:id/evaluation',
  title: 'Evaluation',
  async render(root, params, ctx) {
    const { api } = ctx;
    const modelId = Number(params.id);
    const canWrite = ctx.user.role !== 'viewer';
    const [model, datasets] = await Promise.all([
      api.get(`/models/${modelId}`, { signal: ctx.signal }),
      api.get('/datasets', { signal: ctx.signal }).catch(() => []),
    ]);
    ctx.setTitle(`${model.name} · evaluation`);
    let evaluations = [];
    let selected = Number(ctx.query.get('evaluation')) || null;
    let which = 'errors';
    let timer = null;
    const list = h('div', { testid: 'evaluations-list' });
    const detail = h('div', { testid: 'evaluation-detail' });
    const formError = h('p.form-error', { role: 'alert', testid: 'evaluate-error' });

    // --- asking for one -----------------------------------------------------------------------------
    const splitSelect = h('select', { testid: 'evaluate-split' });
    const sourceSelect = h('select', { testid: 'evaluate-source' },
      model.has_weights ? h('option', { value: '' }, 'training weights (best.pt)') : null,
      model.exports.filter((e) => e.status === 'completed').map((e) =>
        h('option', { value: String(e.id) }, `${e.format === 'engine' ? `engine ${e.precision}` : 'ONNX'} ${e.imgsz}`)));
    function fillSplits() {
      const seen = new Set();
      const earlier = evaluations.filter((e) => !seen.has(e.split.id) && seen.add(e.split.id));
      append(clear(splitSelect), [
        model.job_id ? h('option', { value: `training:${model.job_id}` }, `its training's val split (job ${model.job_id})`) : null,
        datasets.map((d) => h('option', { value: `dataset:${d.id}` }, `dataset "${d.name}" as it is now`)),
        earlier.map((e) => h('option', { value: `split:${e.split.id}` }, `the same images as before: ${splitText(e.split)}`)),
      ]);
    }
    const evaluateButton = h('button.primary', { type: 'button', testid: 'evaluate', disabled: !canWrite,
      title: canWrite ? 'runs as a job on the worker' : 'viewers cannot start evaluations' }, 'Evaluate');
    evaluateButton.addEventListener('click', async () => {
      setText(formError, '');
      const [kind, id] = splitSelect.value.split(':');
      const body = { [{ training: 'training_job_id', dataset: 'dataset_id', split: 'split_id' }[kind]]: Number(id) };
      if (sourceSelect.value) body.export_id = Number(sourceSelect.value);
      try {
        const created = await api.post(`/models/${modelId}/evaluations`, body);
        selected = created.id;
        ctx.toast('Evaluation queued', 'ok');
        await load();
      } catch (err) {
        setText(formError, errorText(err));
      }
    });

    root.append(
      h('div.page-head', h('h1', `Evaluation · ${model.name} `, h('span.muted', `#${model.id}`)),
        h('div.actions', h('a', { href: '#/models', class: 'button' }, 'Models'))),
      h('div.card', h('div.inline-form',
        h('label', 'Images', splitSelect), h('label', 'Model file', sourceSelect), evaluateButton), formError),
      list, detail);

    // --- the list and one evaluation ---------------------------------------------------------------------
    function renderList() {
      clear(list);
      if (!evaluations.length) {
        list.append(h('p.muted', { testid: 'no-evaluations' }, 'Not evaluated yet.'));
        return;
      }
      list.append(h('table.table.compact',
        h('thead', h('tr', h('th', '#'), h('th', 'Images'), h('th', 'Model file'), h('th', 'Status'), h('th.num', 'mAP50'), h('th.num', 'mAP50-95'))),
        h('tbody', evaluations.map((e) => h('tr', {
          testid: 'evaluation-row', dataset: { id: String(e.id), status: e.status }, class: e.id === selected ? 'active' : '',
          style: { cursor: 'pointer', background: e.id === selected ? 'var(--bg3)' : '' }, onclick: () => { selected = e.id; renderDetail(); renderList(); },
        }, h('td', String(e.id)), h('td', splitText(e.split)), h('td', e.source === 'weights' ? 'weights' : e.source),
        h('td', { testid: 'evaluation-status' }, statusText(e)), h('td.num', fmt(e.summary && e.summary.map50)),
        h('td.num', fmt(e.summary && e.summary.map50_95)))))));
    }

    async function renderImages(box, evaluation) {
      const bar = h('div.actions', { style: { 'justify-content': 'flex-start' } }, FILTERS.map(([key, label]) =>
        h(key === which ? 'button.primary.small' : 'button.small', { type: 'button', testid: `filter-${key}`,
          onclick: () => { which = key; renderImages(box, evaluation); } }, label)));
      const grid = h('div', { testid: 'evaluation-images', style: { display: 'flex', 'flex-wrap': 'wrap', gap: '.6rem' } });
      const more = h('button', { type: 'button', testid: 'more-images', hidden: true }, 'More');
      clear(box).append(h('h3', 'Images it got wrong'), bar, grid, more);
      let after = -1;
      const page = async () => {
        const found = await api.get(`/evaluations/${evaluation.id}/images?which=${which}&after=${after}&limit=24`, { signal: ctx.signal });
        grid.append(...found.items.map(errorCard));
        if (!grid.children.length) grid.append(h('p.muted', { testid: 'no-images' }, 'None.'));
        after = found.next_after;
        more.hidden = after === null;
      };
      more.addEventListener('click', page);
      await page();
    }

    function renderDetail() {
      clear(detail);
      const evaluation = evaluations.find((e) => e.id === selected) || evaluations[0];
      if (!evaluation) return;
      selected = evaluation.id;
      const head = h('h2', `Evaluation #${evaluation.id}: `, h('span', { testid: 'detail-status' }, statusText(evaluation)));
      detail.append(head, h('p.muted', splitText(evaluation.split)));
      if (evaluation.error) detail.append(h('p.card.error', evaluation.error));
      const s = evaluation.summary;
      if (!s) return;
      const images = h('div');
      detail.append(...cautions(evaluation), headline(s),
        h('div.card', h('h3', 'Per class'), classTable(s)),
        h('div', { style: { display: 'flex', gap: '1rem', 'flex-wrap': 'wrap' } },
          h('div.card', { style: { flex: '1 1 320px' } }, h('h3', 'Confusion matrix'), confusionMatrix(s)),
          h('div.card', { style: { flex: '1 1 420px' } }, h('h3', 'Precision-recall'), prCurves(s))),
        h('p.small.muted', `${s.images_with_false_positives} image(s) with false positives, ${s.images_with_misses} with misses, ${s.images_with_wrong_class} with a wrong class (confidence above ${s.operating_confidence}).`),
        images);
      renderImages(images, evaluation).catch((err) => images.append(h('p.card.error', errorText(err))));
    }

    async function load() {
      const before = JSON.stringify(evaluations.map((e) => [e.id, e.status, e.progress]));
      evaluations = await api.get(`/models/${modelId}/evaluations`, { signal: ctx.signal });
      fillSplits();
      renderList();
      if (JSON.stringify(evaluations.map((e) => [e.id, e.status, e.progress])) !== before) renderDetail();
      clearTimeout(timer);
      if (evaluations.some((e) => BUSY.includes(e.status))) timer = setTimeout(() => load().catch(() => {}), 1500);
    }
    await load();
    return () => clearTimeout(timer);
  },
};
