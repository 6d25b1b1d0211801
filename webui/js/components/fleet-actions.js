// The fleet's buttons (admins only): a model's signed bundle (Models page), publishing a model to the store (Fleet page),
// a bundle uploaded from this computer, and inspection events sent to a fleet dataset (one event, or the filtered set).

import { API_PREFIX, errorText } from '../api.js';
import { clear, h, setText } from '../dom.js';

const isAdmin = (ctx) => ctx.user && ctx.user.role === 'admin';

/** Models page head: a model's signed bundle (made once, then downloaded), for a model with an ONNX export. */
export function bundleDownload(ctx) {
  if (!isAdmin(ctx)) return null;
  const select = h('select', { testid: 'bundle-model', 'aria-label': 'model to bundle' });
  const message = h('span.small', { testid: 'bundle-download-result', role: 'status' });
  const download = async () => {
    setText(message, '');
    try {
      const made = await ctx.api.post(`/fleet/models/${select.value}/bundle`);
      const link = h('a', { href: `${API_PREFIX}/fleet/models/${select.value}/bundle`, download: made.file });
      document.body.append(link);
      link.click();
      link.remove();
      setText(message, `${made.file}: signed by key ${made.key_id}`);
    } catch (err) {
      setText(message, errorText(err));
    }
  };
  const button = h('button', { type: 'button', testid: 'bundle-download', title: 'a signed bundle to carry to another box (USB, upload, the fleet store)',
    onclick: download }, 'Download bundle');
  const el = h('span.inline-form', select, button, message);
  return {
    el,
    update(models) {
      const current = select.value;
      const ready = models.filter((m) => m.ready);
      clear(select).append(...ready.map((m) => h('option', { value: String(m.id), selected: String(m.id) === current }, `${m.name} (#${m.id})`)));
      el.hidden = !ready.length;
    },
  };
}

/** Fleet page: publish one of this box's models to the fleet store (its signed bundle, then the pointer). */
export function publishForm(ctx, models, onDone) {
  if (!isAdmin(ctx)) return null;
  const ready = models.filter((m) => m.ready);
  const select = h('select', { testid: 'publish-model' }, ready.map((m) => h('option', { value: String(m.id) }, `${m.name} (#${m.id})`)));
  const message = h('span.small', { testid: 'publish-result', role: 'status' });
  const publish = async () => {
    try {
      const done = await ctx.api.post(`/fleet/models/${select.value}/publish`);
      setText(message, `${done.name} v${done.version} is in the store`);
      onDone();
    } catch (err) {
      setText(message, errorText(err));
    }
  };
  return ready.length ? h('div.inline-form', h('label', 'Publish a model of this box', select),
    h('button.small', { type: 'button', testid: 'publish', onclick: publish }, 'Publish'), message) : null;
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
