// Datasets: the list (own and public), and creating a dataset with its classes.

import { ApiError } from '../api.js';
import { classChip, classesEditor } from '../classes-editor.js';
import { h, modal, formatNumber } from '../dom.js';

export function createDatasetDialog(ctx) {
  return modal('New dataset', (close) => {
    const error = h('p.form-error', { testid: 'dataset-error', role: 'alert' });
    const name = h('input', { name: 'name', required: true, maxlength: 200, testid: 'dataset-name' });
    const description = h('textarea', { name: 'description', rows: 2, maxlength: 5000, testid: 'dataset-description' });
    const isPublic = h('input', { type: 'checkbox', testid: 'dataset-public' });
    const editor = classesEditor([]);
    editor.addRow();
    const form = h('form.stack', { testid: 'dataset-form' },
      h('label', 'Name', name),
      h('label', 'Description', description),
      h('fieldset', h('legend', 'Classes'), editor.el),
      h('label.inline', isPublic, 'Public (everyone on the appliance may see and label it)'),
      error,
      h('div.actions',
        h('button', { type: 'button', onclick: () => close(null) }, 'Cancel'),
        h('button.primary', { type: 'submit', testid: 'dataset-create-submit' }, 'Create')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      error.textContent = '';
      try {
        const created = await ctx.api.post('/datasets', {
          name: name.value.trim(), description: description.value, classes: editor.value(),
          is_public: isPublic.checked,
        });
        close(created);
      } catch (err) {
        error.textContent = err instanceof ApiError ? err.detail : String(err);
      }
    });
    setTimeout(() => name.focus(), 0);
    return form;
  }, { testid: 'create-dataset' });
}

export default {
  route: '#/datasets',
  title: 'Datasets',
  nav: 'Datasets',
  async render(root, _params, ctx) {
    const datasets = await ctx.api.get('/datasets', { signal: ctx.signal });
    const canWrite = ctx.user.role !== 'viewer';
    const create = canWrite
      ? h('button.primary', { type: 'button', testid: 'new-dataset', onclick: async () => {
        const created = await createDatasetDialog(ctx);
        if (created) ctx.navigate(`#/datasets/${created.id}`);
      } }, 'New dataset')
      : null;
    const rows = datasets.map((d) => h('tr', { testid: 'dataset-row', dataset: { id: d.id } },
      h('td', h('a', { href: `#/datasets/${d.id}`, testid: 'dataset-link' }, d.name),
        d.description ? h('div.muted.small', d.description) : null),
      h('td', d.owner),
      h('td.num', { testid: 'dataset-count' }, formatNumber(d.image_count)),
      h('td', h('div.chips', d.classes.map((c) => classChip(c, { testid: 'dataset-class' })))),
      h('td', d.is_public ? h('span.badge', 'public') : h('span.badge.muted', 'private')),
      h('td.actions',
        h('a.button', { href: `#/datasets/${d.id}/label/first` }, 'Label'),
        h('a.button', { href: `#/datasets/${d.id}/stats` }, 'Stats'),
        h('a.button', { href: `#/datasets/${d.id}/settings`, testid: 'dataset-settings-link' }, 'Settings'))));
    root.append(h('section',
      h('div.page-head', h('h1', 'Datasets'), create),
      datasets.length
        ? h('table.table', { testid: 'datasets-table' },
          h('thead', h('tr', ['Name', 'Owner', 'Images', 'Classes', 'Access', ''].map((t) => h('th', t)))),
          h('tbody', rows))
        : h('p.empty', { testid: 'no-datasets' }, canWrite
          ? 'No datasets yet. Create one, then drop images on it.'
          : 'No datasets are shared with you yet.')));
  },
};
