// The Train page's plan card: what the chosen dataset holds for a training (labeled images and boxes per class),
// warnings, the settings recommended for it, and how long the run will take with how that figure was made
// (GET /training-jobs/plan). Asked again, debounced, whenever the form changes.
//
//   const plan = createPlanCard(api, { onUse: (rec) => ... });   // rec: { epochs, imgsz, batch }
//   root.append(plan.node); plan.update({ dataset_id, base_model, epochs, imgsz, device });

import { errorText } from '../api.js';
import { clear, h } from '../dom.js';
import { formatDuration, formatNumber } from './format.js';

const DEBOUNCE_MS = 250;

/** A duration people read: "about 3 min", "about 2 h 10 min". */
export function roughDuration(seconds) {
  if (!Number.isFinite(seconds)) return '';
  if (seconds < 90) return `about ${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 5400) return `about ${Math.round(seconds / 60)} min`;
  const hours = Math.floor(seconds / 3600);
  return `about ${hours} h ${Math.round((seconds - hours * 3600) / 60)} min`;
}

export function createPlanCard(api, { onUse }) {
  const body = h('div', { testid: 'plan-body' }, h('p.muted', 'Choose a dataset to see what it holds for a training.'));
  const node = h('section.card.plan-card', { testid: 'train-plan' }, h('h2', 'What this training will use'), body);
  let timer = null;
  let seq = 0;
  let asked = false; // the first plan is asked for at once, later ones after the typing stops

  function render(plan) {
    clear(body);
    const rows = plan.classes.map((c) => h('tr', { testid: 'plan-class', dataset: { classId: c.class_id } },
      h('td', c.name), h('td.num', formatNumber(c.images)), h('td.num', { class: c.boxes ? '' : 'warn' }, formatNumber(c.boxes))));
    body.append(
      h('p', { testid: 'plan-counts' },
        h('strong', formatNumber(plan.labeled_images)), ' labeled images, ', h('strong', formatNumber(plan.boxes)), ' boxes',
        plan.background_images ? ` (${formatNumber(plan.background_images)} without boxes)` : '',
        h('span.muted', ` · ${formatNumber(plan.unlabeled_images)} unlabeled, left out`)),
      h('table.table.compact', h('thead', h('tr', h('th', 'Class'), h('th.num', 'Images'), h('th.num', 'Boxes'))),
        h('tbody', rows)),
      plan.warnings.length
        ? h('ul.warnings', { testid: 'plan-warnings' }, plan.warnings.map((w) => h('li', { testid: 'plan-warning' }, w)))
        : null,
      h('p.small', { testid: 'plan-recommended' },
        `Recommended: ${plan.recommended_epochs} epochs, ${plan.recommended_imgsz} px, batch ${plan.recommended_batch} `,
        h('button.small', { type: 'button', testid: 'plan-use', title: plan.why.join('\n'), onclick: () => onUse({
          epochs: plan.recommended_epochs, imgsz: plan.recommended_imgsz, batch: plan.recommended_batch,
        }) }, 'Use these')),
      h('p.small', { testid: 'plan-estimate' },
        h('strong', `${roughDuration(plan.estimate.seconds)} at most`),
        ` on the ${plan.device === 'gpu' ? 'GPU' : 'CPU'}`,
        h('span', { testid: 'plan-engine' }, ` (${plan.estimate.engine} on ${plan.estimate.device_name || plan.device})`),
        ` (${formatDuration(plan.estimate.per_epoch_s)} per epoch; `,
        'patience may stop it sooner). ', h('span.muted', `How: ${plan.estimate.basis}.`),
        plan.estimate.inference
          ? h('span.muted', { testid: 'plan-inference' }, ` The trained model then runs on ${plan.estimate.inference} here.`)
          : null));
  }

  function update(query) {
    clearTimeout(timer);
    if (!query.dataset_id) return;
    const delay = asked ? DEBOUNCE_MS : 0;
    asked = true;
    timer = setTimeout(async () => {
      const mine = ++seq;
      try {
        const plan = await api.get(`/training-jobs/plan${api.qs(query)}`);
        if (mine === seq) render(plan);
      } catch (err) {
        if (mine === seq) clear(body).append(h('p.form-error', { testid: 'plan-error' }, errorText(err)));
      }
    }, delay);
  }

  return { node, update, destroy: () => clearTimeout(timer) };
}
