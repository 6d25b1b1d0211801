// The Train page's base weights card: the weights files the box has (and whether the pinned list knows them),
// and, for admins, the .pt files on a USB drive with an Import button each. The box takes only files whose
// sha256 is in the pinned list (firmware_scripts/weights.sha256); a refusal is shown next to the button.
//
//   const weights = createWeightsCard(ctx, { onImported: () => reloadBaseModels() });  root.append(weights.node);

import { errorText } from '../api.js';
import { clear, h } from '../dom.js';
import { formatNumber } from './format.js';

const mb = (bytes) => `${formatNumber(Math.round(bytes / 1024 / 1024 * 10) / 10)} MB`;

export function createWeightsCard(ctx, { onImported }) {
  const isAdmin = ctx.user.role === 'admin';
  const present = h('div', { testid: 'weights-present' });
  const usb = h('div', { testid: 'weights-usb' });
  const message = h('p.small', { testid: 'weights-message', role: 'status' });
  const find = h('button', { type: 'button', testid: 'weights-find', onclick: () => listUsb() }, 'Find weights on USB drives');
  const node = h('section.card', { testid: 'base-weights' },
    h('div.page-head', h('h2', 'Base weights'), isAdmin ? find : null),
    h('p.muted.small', 'Pretrained weights (yolo11n.pt, …) make a usable model from far fewer images than training from '
      + 'scratch. Only files whose checksum is in the pinned list of the box are taken (firmware_scripts/weights.sha256).'),
    present, usb, message);

  async function loadPresent() {
    let files;
    try {
      files = await ctx.api.get('/models/base/weights');
    } catch (err) {
      clear(present).append(h('p.form-error', errorText(err)));
      return;
    }
    clear(present).append(files.length
      ? h('ul.plain', files.map((f) => h('li', { testid: 'weights-file', dataset: { name: f.name } },
        h('strong', f.name), ` · ${mb(f.size)} · `,
        f.pinned ? h('span.ok', 'checksum pinned') : h('span.warn', 'checksum not in the pinned list'))))
      : h('p.muted', { testid: 'weights-none' }, 'No base weights on the box yet: training starts from scratch.'));
  }

  async function listUsb() {
    message.textContent = '';
    message.className = 'small';
    find.disabled = true;
    let found;
    try {
      found = await ctx.api.get('/models/base/weights/usb');
    } catch (err) {
      showError(errorText(err));
      return;
    } finally {
      find.disabled = false;
    }
    clear(usb);
    if (!found.length) {
      usb.append(h('p.muted', { testid: 'weights-usb-none' }, 'No .pt files on the drives under the import folders.'));
      return;
    }
    usb.append(h('table.table.compact', h('tbody', found.map((f) => h('tr', { testid: 'weights-candidate', dataset: { path: f.path } },
      h('td', h('strong', f.name), h('div.muted.small', f.path)),
      h('td.num', mb(f.size)),
      h('td', f.listed ? 'listed' : h('span.muted', 'not listed')),
      h('td.actions', h('button.primary.small', { type: 'button', testid: 'weights-import', onclick: (e) => importFile(f, e.target) },
        'Import')))))));
  }

  async function importFile(file, button) {
    message.textContent = '';
    button.disabled = true;
    try {
      const saved = await ctx.api.post('/models/base/weights', { path: file.path });
      message.className = 'small ok';
      message.textContent = `Imported ${saved.name} (sha256 ${saved.sha256.slice(0, 12)}…): choose "${saved.id}" as the base model.`;
      await loadPresent();
      onImported(saved);
    } catch (err) {
      showError(`${file.name}: ${errorText(err)}`);
    } finally {
      button.disabled = false;
    }
  }

  function showError(text) {
    message.className = 'small form-error';
    message.textContent = text;
  }

  loadPresent();
  return { node, reload: loadPresent };
}
