// Datasets: the list (own and public), and creating a dataset with its classes.

import { classChip } from '../components/classes-editor.js';
import { createDatasetDialog } from '../components/dataset-dialog.js';
import { formatNumber } from '../components/format.js';
import { h } from '../dom.js';

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
