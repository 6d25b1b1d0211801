// The fleet's buttons on other pages (admins only): a model's signed bundle (download, publish to the store), a bundle
// uploaded from this computer, and inspection events sent to a fleet dataset (one event, or the filtered set).

import { API_PREFIX, errorText } from '../api.js';
import { h, setText } from '../dom.js';

const isAdmin = (ctx) => ctx.user && ctx.user.role === 'admin';

/** Models page, per model: "Bundle" (sign once, then download) and "Publish" (to the fleet store). */
export function bundleButtons(ctx, model, report) {
  if (!isAdmin(ctx) || !model.ready) return null;
  const download = async () => {
    try {
      const made = await ctx.api.post(`/fleet/models/${model.id}/bundle`);
      const link = h('a', { href: `${API_PREFIX}/fleet/models/${model.id}/bundle`, download: made.file });
      document.body.append(link);
      link.click();
      link.remove();
      ctx.toast(`${made.file}: signed by key ${made.key_id}`, 'ok');
    } catch (err) {
      report(errorText(err));
    }
  };
  const publish = async () => {
    try {
      const done = await ctx.api.post(`/fleet/models/${model.id}/publish`);
      ctx.toast(`${done.name} v${done.version} is in the fleet store`, 'ok');
    } catch (err) {
      report(errorText(err));
    }
  };
  return [
    h('button.small', { type: 'button', testid: 'bundle-download', title: 'a signed bundle to carry to another box', onclick: download }, 'Bundle'),
    h('button.small', { type: 'button', testid: 'bundle-publish', title: 'upload the signed bundle to the fleet store', onclick: publish }, 'Publish'),
  ];
}

/** Models page head: take a bundle file (from another box, a USB stick on this computer). */
export function bundleUpload(ctx, onDone) {
  if (!isAdmin(ctx)) return null;
  const file = h('input', { type: 'file', accept: '.bundle', testid: 'bundle-file', style: { display: 'none' } });
  const message = h('span.small', { testid: 'bundle-upload-result', role: 'status' });
  file.addEventListener('change', async () => {
    if (!file.files.length) return;
    setText(message, 'checking the signature…');
    try {
      const done = await ctx.api.upload('/fleet/bundles', file.files[0], { raw: true });
      setText(message, done.already_imported ? `${done.name} v${done.version} is already model ${done.model_id}`
        : `${done.name} v${done.version} from ${done.source_box} is model ${done.model_id}`);
      onDone();
    } catch (err) {
      setText(message, errorText(err));
    } finally {
      file.value = '';
    }
  });
  return h('span', file, h('button', { type: 'button', testid: 'bundle-upload', onclick: () => file.click() }, 'Upload bundle'), ' ', message);
}

/** Events page: send the chosen event, or every event the filters show, to a fleet dataset in the store. */
export function fleetUpload(ctx, body) {
  if (!isAdmin(ctx)) return null;
  const name = h('input', { type: 'text', value: 'hard-cases', size: 12, testid: 'fleet-dataset-name', 'aria-label': 'fleet dataset' });
  const message = h('span.small', { testid: 'fleet-upload-result', role: 'status' });
  const send = async () => {
    try {
      const done = await ctx.api.post(`/fleet/datasets/${encodeURIComponent(name.value)}/uploads`, body());
      setText(message, `${done.queued} queued for the store${done.already_queued ? `, ${done.already_queued} already` : ''}`
        + `${done.without_snapshot ? `, ${done.without_snapshot} without a snapshot` : ''}`);
    } catch (err) {
      setText(message, errorText(err));
    }
  };
  return h('span.inline-form', name, h('button.small', { type: 'button', testid: 'fleet-upload', onclick: send }, 'Send to fleet dataset'), message);
}
