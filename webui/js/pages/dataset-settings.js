// Dataset settings: name, description, classes (name + colour), public toggle, delete with confirmation.

import { ApiError } from '../api.js';
import { classesEditor } from '../components/classes-editor.js';
import { datasetTabs } from '../components/dataset-tabs.js';
import { onSubmit } from '../components/form-submit.js';
import { confirmDialog, h } from '../dom.js';

export default {
  route: '#/datasets/:id/settings',
  title: 'Dataset settings',
  async render(root, params, ctx) {
    const id = Number(params.id);
    const dataset = await ctx.api.get(`/datasets/${id}`, { signal: ctx.signal });
    ctx.setTitle(`${dataset.name} · settings`);
    const mayEdit = ctx.user.role === 'admin' || ctx.user.id === dataset.owner_id;
    const error = h('p.form-error', { testid: 'settings-error', role: 'alert' });
    const name = h('input', { value: dataset.name, required: true, maxlength: 200, testid: 'settings-name' });
    const description = h('textarea', { rows: 2, maxlength: 5000, testid: 'settings-description' });
    description.value = dataset.description;
    const editor = classesEditor(dataset.classes);
    const isPublic = h('input', { type: 'checkbox', checked: dataset.is_public, testid: 'settings-public' });
    const save = h('button.primary', { type: 'submit', testid: 'settings-save', disabled: !mayEdit }, 'Save');
    const form = h('form.card.stack', { testid: 'settings-form' },
      h('label', 'Name', name),
      h('label', 'Description', description),
      h('fieldset', h('legend', 'Classes'),
        h('p.muted.small', 'Class numbers are positions: renaming and recolouring are safe; '
          + 'only trailing classes without boxes can be removed.'),
        editor.el),
      h('label.inline', isPublic, 'Public (everyone on the appliance may see and label it)'),
      error,
      h('div.actions', save));
    onSubmit(form, {
      error, button: save,
      send: async () => {
        await ctx.api.patch(`/datasets/${id}`, {
          name: name.value.trim(), description: description.value, classes: editor.value(),
          is_public: isPublic.checked,
        });
        ctx.toast('Dataset saved', 'ok');
      },
    });
    const remove = h('button.danger', { type: 'button', testid: 'dataset-delete', disabled: !mayEdit, onclick: async () => {
      const ok = await confirmDialog('Delete dataset',
        `Delete "${dataset.name}" with its ${dataset.image_count} images and all their boxes? This cannot be undone.`);
      if (!ok) return;
      try {
        await ctx.api.del(`/datasets/${id}`);
        ctx.toast('Dataset deleted', 'ok');
        ctx.navigate('#/datasets');
      } catch (err) {
        ctx.toast(err instanceof ApiError ? err.detail : String(err), 'error');
      }
    } }, 'Delete dataset');
    root.append(h('section',
      datasetTabs(dataset, 'settings'),
      mayEdit ? null : h('p.notice', 'Only the owner or an administrator can change this dataset.'),
      form,
      h('div.card.danger-zone', h('h2', 'Danger zone'), remove)));
  },
};
