// The "New dataset" dialog: name, description, classes, public; resolves with the created dataset or null.

import { h, modal } from '../dom.js';
import { classesEditor } from './classes-editor.js';
import { onSubmit } from './form-submit.js';

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
    onSubmit(form, {
      error,
      send: async () => {
        const created = await ctx.api.post('/datasets', {
          name: name.value.trim(), description: description.value, classes: editor.value(),
          is_public: isPublic.checked,
        });
        close(created);
      },
    });
    setTimeout(() => name.focus(), 0);
    return form;
  }, { testid: 'create-dataset' });
}
