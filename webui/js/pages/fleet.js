// Fleet: every box seen on the fleet's broker (online/offline and since when, model and version, cameras, today's
// OK/NG, disk, software version, rollout state, a link to its console), refreshed every 3 s; the bundles in the
// store (import one, roll one out in stages); the rollouts (state per box; stop, roll back all or one box); the
// box's signing key and the keys it trusts; hard cases (sampling rules per camera, the upload queue, fleet
// datasets to import). Actions are for admins; every answer's error is shown where the action was.

import { ApiError, errorText } from '../api.js';
import { publishForm } from '../components/fleet-actions.js';
import { append, clear, confirmDialog, h, setText } from '../dom.js';

const REFRESH_MS = 3000;
const ago = (t) => {
  if (!t) return 'unknown';
  const s = Math.max(0, Math.round(Date.now() / 1000 - t));
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
};
const STATE_BADGE = { healthy: 'reviewed', done: 'reviewed', failed: 'bad', refused: 'bad', stopped: 'bad', rolled_back: 'muted' };

function badge(text, kind, testid) {
  return h(`span.badge${kind ? `.${kind}` : ''}`, { testid }, text);
}

function boxRow(box) {
  const s = box.status || {};
  const line = box.line_status || {};
  const model = s.model || line.deployed_model;
  const cameras = s.cameras || line.cameras || [];
  const link = s.console_url ? h('a', { href: s.console_url, target: '_blank', rel: 'noopener noreferrer', testid: 'box-console' }, box.box_id) : box.box_id;
  return h('tr', { testid: 'fleet-box', dataset: { box: box.box_id, online: String(box.online) } },
    h('td', h('strong', link), box.this_box ? [' ', badge('this box', 'labeled')] : null),
    h('td', badge(box.online ? 'online' : 'offline', box.online ? 'reviewed' : 'bad', 'box-state'),
      h('div.muted.small', box.since ? `${box.online ? 'since' : 'for'} ${ago(box.since)}` : '')),
    h('td', { testid: 'box-model' }, model ? `${model.name}${model.version ? ` (v${model.version})` : ''}` : h('span.muted', 'no model')),
    h('td', { testid: 'box-cameras' }, cameras.length ? cameras.map((c) => h('div.small', `${c.name}: ${c.state || (c.enabled ? 'enabled' : 'stopped')}`)) : h('span.muted', 'none')),
    h('td.num', { testid: 'box-today' }, s.today ? `${s.today.ok} OK / ${s.today.ng} NG` : '–'),
    h('td.num', s.disk || line.disk ? `${Math.round((s.disk || line.disk).free_mb / 1024)} GB free` : '–'),
    h('td', s.version || line.version || '–'),
    h('td', { testid: 'box-rollout' }, s.rollout ? [badge(s.rollout.state, STATE_BADGE[s.rollout.state]), h('div.muted.small', s.rollout.id)] : ''));
}

function rolloutForm(ctx, bundle, boxes, onDone) {
  const picks = boxes.map((b) => h('label.inline', h('input', { type: 'checkbox', value: b.box_id, checked: true, testid: 'rollout-box' }), ` ${b.box_id} `));
  const tags = h('input', { type: 'text', placeholder: 'tags, comma-separated (optional)', testid: 'rollout-tags' });
  const canary = h('input', { type: 'number', min: 0, max: 100, value: '1', testid: 'rollout-canary' });
  const soak = h('input', { type: 'number', min: 0, value: '300', testid: 'rollout-soak' });
  const margin = h('input', { type: 'number', min: 0, max: 1, step: '0.01', value: '0.05', testid: 'rollout-margin' });
  const error = h('p.form-error', { role: 'alert', testid: 'rollout-error' });
  const submit = h('button.primary', { type: 'submit', testid: 'rollout-submit' }, `Roll out ${bundle.name} v${bundle.version}`);
  const form = h('form.card', { testid: 'rollout-form' },
    h('h3', `Roll out ${bundle.name} v${bundle.version}`),
    h('fieldset', h('legend', 'Boxes'), picks), h('label', 'Tags', tags),
    h('div.inline-form', h('label', 'Canary boxes', canary), h('label', 'Soak (s)', soak), h('label', 'NG margin', margin)),
    error, submit);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    setText(error, '');
    try {
      const body = {
        name: bundle.name, version: bundle.version,
        box_ids: picks.map((p) => p.querySelector('input')).filter((i) => i.checked).map((i) => i.value),
        tags: tags.value.split(',').map((t) => t.trim()).filter(Boolean),
        canary_count: Number(canary.value), soak_s: Number(soak.value), ng_margin: Number(margin.value),
      };
      const made = await ctx.api.post('/fleet/rollouts', body);
      ctx.toast(`Rollout ${made.id} started`, 'ok');
      onDone();
    } catch (err) {
      setText(error, errorText(err));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function rolloutCard(ctx, rollout, admin, refresh) {
  const error = h('p.form-error', { role: 'alert', testid: 'rollout-action-error' });
  const act = async (path, body, question) => {
    if (question && !(await confirmDialog(question, 'Each box goes back to the model it served before this rollout.'))) return;
    setText(error, '');
    try {
      await ctx.api.post(`/fleet/rollouts/${rollout.id}/${path}`, body);
      await refresh();
    } catch (err) {
      setText(error, errorText(err));
    }
  };
  const doc = rollout.document;
  const ended = ['done', 'rolled_back'].includes(rollout.state);
  return h('div.card', { testid: 'rollout', dataset: { id: rollout.id, state: rollout.state } },
    h('div.toolbar', h('h3', `${doc.bundle.name} v${doc.bundle.version}`), badge(rollout.state, STATE_BADGE[rollout.state], 'rollout-state'),
      h('span.muted', `${rollout.id} · by ${doc.created_by_user} on ${doc.created_by_box} · soak ${doc.soak_s} s · margin ${doc.ng_margin}`),
      h('span', { style: { flex: '1' } }),
      admin && !ended ? h('button.small', { type: 'button', testid: 'rollout-stop', onclick: () => act('stop', {}) }, 'Stop') : null,
      admin && rollout.state !== 'rolled_back' ? h('button.danger.small', { type: 'button', testid: 'rollout-rollback',
        onclick: () => act('rollback', {}, `Roll back ${doc.bundle.name} v${doc.bundle.version} on every box?`) }, 'Roll back all') : null),
    h('p.muted', { testid: 'rollout-detail' }, rollout.detail),
    h('table.table.compact', h('thead', h('tr', ['Box', 'Stage', 'State', 'Detail', ''].map((t) => h('th', t)))),
      h('tbody', rollout.boxes.map((b) => h('tr', { testid: 'rollout-box-row', dataset: { box: b.box_id, state: b.state } },
        h('td', b.box_id), h('td', b.stage), h('td', badge(b.state, STATE_BADGE[b.state])),
        h('td.small', b.report ? (b.report.detail || b.report.health.reason || '') : ''),
        h('td', admin && b.report && ['soaking', 'healthy', 'deploying'].includes(b.state)
          ? h('button.small', { type: 'button', testid: 'rollback-box', onclick: () => act('rollback-box', { box_id: b.box_id }, `Roll back ${b.box_id}?`) }, 'Roll back')
          : null))))),
    error);
}

function keysCard(ctx, keys, admin, refresh) {
  const name = h('input', { type: 'text', placeholder: 'whose key (a box id)', testid: 'key-name' });
  const key = h('input', { type: 'text', placeholder: 'RW… (the public key line)', testid: 'key-value' });
  const keyId = h('input', { type: 'text', placeholder: 'key id shown on that box', testid: 'key-id', maxlength: 16 });
  const error = h('p.form-error', { role: 'alert', testid: 'key-error' });
  const add = async (event) => {
    event.preventDefault();
    setText(error, '');
    try {
      await ctx.api.post('/fleet/keys', { name: name.value, public_key: key.value, key_id: keyId.value || null });
      await refresh();
    } catch (err) {
      setText(error, errorText(err));
    }
  };
  const remove = async (k) => {
    if (!(await confirmDialog(`Stop trusting ${k.name} (${k.key_id})?`, 'Bundles and rollouts it signs will be refused.'))) return;
    try {
      await ctx.api.del(`/fleet/keys/${k.key_id}`);
      await refresh();
    } catch (err) {
      setText(error, errorText(err));
    }
  };
  return h('div.card', { testid: 'fleet-keys' }, h('h2', 'Signing keys'),
    h('table.table.compact', h('tbody', keys.map((k) => h('tr', { testid: k.own ? 'own-key' : 'trusted-key', dataset: { id: k.key_id } },
      h('td', k.own ? h('strong', 'this box') : k.name), h('td', h('code', k.key_id)), h('td.small', h('code', k.public_key)),
      h('td', admin && !k.own ? h('button.small', { type: 'button', onclick: () => remove(k) }, 'Remove') : null))))),
    admin ? h('form.inline-form', { onsubmit: add }, name, key, keyId, h('button', { type: 'submit', testid: 'key-add' }, 'Trust')) : null,
    error);
}

function hardCasesCard(ctx, data, admin, refresh) {
  const { rules, uploads, cameras, fleetSets, datasets } = data;
  const error = h('p.form-error', { role: 'alert', testid: 'hardcases-error' });
  const rows = cameras.map((camera) => {
    const rule = rules.find((r) => r.camera_id === camera.id);
    const inputs = {
      dataset: h('input', { type: 'text', value: rule ? rule.dataset : 'hard-cases', testid: 'rule-dataset', size: 12 }),
      ng: h('input', { type: 'number', min: 0, max: 100, value: String(rule ? rule.ng_percent : 0), testid: 'rule-ng' }),
      low: h('input', { type: 'number', min: 0, max: 100, value: String(rule ? rule.low_confidence_percent : 0), testid: 'rule-low' }),
      below: h('input', { type: 'number', min: 0, max: 1, step: '0.05', value: String(rule ? rule.low_confidence_below : 0.5), testid: 'rule-below' }),
      cap: h('input', { type: 'number', min: 0, value: String(rule ? rule.per_hour : 60), testid: 'rule-cap' }),
    };
    const save = async () => {
      setText(error, '');
      try {
        await ctx.api.put(`/fleet/sampling/${camera.id}`, {
          dataset: inputs.dataset.value, ng_percent: Number(inputs.ng.value), low_confidence_percent: Number(inputs.low.value),
          low_confidence_below: Number(inputs.below.value), per_hour: Number(inputs.cap.value), enabled: true,
        });
        ctx.toast(`Sampling rule of ${camera.name} saved`, 'ok');
        await refresh();
      } catch (err) {
        setText(error, errorText(err));
      }
    };
    return h('tr', { testid: 'sampling-row', dataset: { camera: String(camera.id) } }, h('td', camera.name),
      h('td', inputs.dataset), h('td', inputs.ng), h('td', inputs.low), h('td', inputs.below), h('td', inputs.cap),
      h('td', admin ? h('button.small', { type: 'button', testid: 'rule-save', onclick: save }, rule ? 'Save' : 'Add') : null));
  });
  const target = h('select', { testid: 'fleet-import-target' }, datasets.map((d) => h('option', { value: String(d.id) }, d.name)));
  const importSet = async (name) => {
    setText(error, '');
    try {
      const job = await ctx.api.post(`/datasets/${target.value}/fleet-imports`, { dataset: name });
      ctx.toast(`Import of fleet dataset ${name} queued (job ${job.id})`, 'ok');
    } catch (err) {
      setText(error, errorText(err));
    }
  };
  return h('div.card', { testid: 'fleet-hard-cases' }, h('h2', 'Hard cases'),
    h('p.muted', { testid: 'uploads' }, `Upload queue: ${uploads.pending} waiting, ${uploads.done} in the store, ${uploads.failed} failed`,
      uploads.last_error ? ` (last: ${uploads.last_error})` : ''),
    h('h3', 'Sampling per camera'),
    h('table.table.compact', h('thead', h('tr', ['Camera', 'Fleet dataset', 'NG %', 'Low-confidence %', 'below', 'per hour', ''].map((t) => h('th', t)))),
      h('tbody', rows.length ? rows : h('tr', h('td', { colspan: 7, class: 'muted' }, 'No cameras.')))),
    h('h3', 'Fleet datasets in the store'),
    fleetSets.length
      ? h('table.table.compact', h('tbody', fleetSets.map((set) => h('tr', { testid: 'fleet-dataset', dataset: { name: set.name } },
        h('td', set.name), h('td.small', Object.entries(set.boxes).map(([b, n]) => `${b}: ${n}`).join(', ')
          + (set.complete === false ? ' (at least: the store holds more than one listing counts)' : '')),
        h('td', admin && datasets.length ? h('button.small', { type: 'button', testid: 'fleet-import', onclick: () => importSet(set.name) }, 'Import into') : null)))))
      : h('p.muted', 'None yet.'),
    admin && datasets.length ? h('label', 'Import into dataset', target) : null,
    error);
}

export default {
  route: '#/fleet',
  title: 'Fleet',
  nav: 'Fleet',
  render(root, params, ctx) {
    const admin = ctx.user && ctx.user.role === 'admin';
    const head = h('div', { testid: 'fleet-head' });
    const boxesBody = h('tbody');
    const bundlesBox = h('div', { testid: 'fleet-bundles' });
    const formBox = h('div');
    const publishBox = h('div');
    const rolloutsBox = h('div', { testid: 'fleet-rollouts' });
    const keysBox = h('div');
    const casesBox = h('div');
    const error = h('p.form-error', { role: 'alert', testid: 'fleet-error' });
    root.append(h('section', { testid: 'fleet-page' }, h('div.page-head', h('h1', 'Fleet')), head, error,
      h('div.card', h('h2', 'Boxes'), h('table.table', { testid: 'fleet-boxes' },
        h('thead', h('tr', ['Box', 'State', 'Model', 'Cameras', 'Today', 'Disk', 'Version', 'Rollout'].map((t) => h('th', t)))), boxesBody)),
      h('div.card', h('h2', 'Bundles in the store'), bundlesBox, publishBox, formBox),
      h('h2', 'Rollouts'), rolloutsBox, keysBox, casesBox));
    let timer = null;
    let fleet = null;

    const optional = (promise) => promise.catch((err) => (err instanceof ApiError ? { error: err.detail } : Promise.reject(err)));

    // The boxes, the bundles and the rollouts refresh every few seconds; keys and hard cases (forms someone may be
    // typing in) only when the page opens and after one of their actions.
    async function refresh() {
      clearTimeout(timer);
      try {
        fleet = await ctx.api.get('/fleet', { signal: ctx.signal });
      } catch (err) {
        if (err && err.name === 'AbortError') return;
        setText(error, errorText(err));
        timer = setTimeout(refresh, REFRESH_MS);
        return;
      }
      setText(error, '');
      append(clear(head), [h('p', { testid: 'fleet-summary' },
        `This box: ${fleet.box_id} · broker ${fleet.broker || 'not configured'} `,
        fleet.broker ? badge(fleet.broker_connected ? 'connected' : 'not connected', fleet.broker_connected ? 'reviewed' : 'bad', 'broker-state') : null,
        ` · store ${fleet.store || 'not configured'}`),
      fleet.agent_note ? h('p.muted', { testid: 'fleet-note' }, fleet.agent_note) : null,
      fleet.broker_error ? h('p.muted', fleet.broker_error) : null]);
      clear(boxesBody).append(...(fleet.boxes.length ? fleet.boxes.map(boxRow)
        : [h('tr', h('td', { colspan: 8, class: 'muted' }, 'No box seen on the broker yet.'))]));
      const [bundles, rollouts] = await Promise.all([
        fleet.store ? optional(ctx.api.get('/fleet/store/bundles', { signal: ctx.signal })) : [],
        fleet.store ? optional(ctx.api.get('/fleet/rollouts', { signal: ctx.signal })) : [],
      ]).catch(() => [[], []]);
      clear(bundlesBox).append(bundles.error ? h('p.form-error', bundles.error)
        : bundles.length ? h('table.table.compact', h('thead', h('tr', ['Name', 'Version', 'Size', 'Here', ''].map((t) => h('th', t)))),
          h('tbody', bundles.map((b) => h('tr', { testid: 'store-bundle', dataset: { name: b.name, version: String(b.version) } },
            h('td', b.name), h('td', `v${b.version}${b.latest ? ' (latest)' : ''}`), h('td.num', b.bytes >= 1048576 ? `${(b.bytes / 1048576).toFixed(1)} MB` : `${Math.ceil(b.bytes / 1024)} KB`),
            h('td', b.here ? `model ${b.here}` : '–'),
            h('td', admin ? [
              b.here ? null : h('button.small', { type: 'button', testid: 'store-import', onclick: async () => {
                try {
                  await ctx.api.post('/fleet/store/imports', { name: b.name, version: b.version });
                  ctx.toast(`${b.name} v${b.version} imported`, 'ok');
                  refresh();
                } catch (err) { setText(error, errorText(err)); }
              } }, 'Import'),
              ' ', h('button.primary.small', { type: 'button', testid: 'store-rollout',
                onclick: () => clear(formBox).append(rolloutForm(ctx, b, fleet.boxes, () => { clear(formBox); refresh(); })) }, 'Roll out')] : null)))))
          : h('p.muted', fleet.store ? 'No bundle published yet: publish a model below.' : 'No store configured.'));
      clear(rolloutsBox).append(...(rollouts.error ? [h('p.form-error', rollouts.error)]
        : rollouts.length ? rollouts.map((r) => rolloutCard(ctx, r, admin, refresh)) : [h('p.muted', 'No rollout yet.')]));
      timer = setTimeout(refresh, REFRESH_MS);
    }

    async function refreshForms() {
      try {
        const [keys, rules, uploads, cameras, fleetSets, datasets, models] = await Promise.all([
          ctx.api.get('/fleet/keys', { signal: ctx.signal }),
          ctx.api.get('/fleet/sampling', { signal: ctx.signal }),
          ctx.api.get('/fleet/uploads', { signal: ctx.signal }),
          ctx.api.get('/cameras', { signal: ctx.signal }),
          fleet && fleet.store ? optional(ctx.api.get('/fleet/datasets', { signal: ctx.signal })) : [],
          ctx.api.get('/datasets', { signal: ctx.signal }),
          ctx.api.get('/models', { signal: ctx.signal }),
        ]);
        clear(publishBox).append(...(fleet && fleet.store ? [publishForm(ctx, models, refresh)].filter(Boolean) : []));
        clear(keysBox).append(keysCard(ctx, keys, admin, refreshForms));
        clear(casesBox).append(hardCasesCard(ctx, { rules, uploads, cameras, fleetSets: fleetSets.error ? [] : fleetSets, datasets }, admin, refreshForms));
      } catch (err) {
        if (err && err.name === 'AbortError') return;
        setText(error, errorText(err));
      }
    }

    refresh().then(refreshForms);
    return () => clearTimeout(timer);
  },
};
