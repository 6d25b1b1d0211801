// Outputs (admins only): MQTT, webhooks, OPC UA and Modbus TCP to the line. Add, edit, enable, test, delete; the
// state of each in one line, the latest first with its time (components/output-state.js), its backlog and
// deliveries, refreshed every 2 s; and, per camera, every way the line can trigger an inspection. Secrets are
// write-only: the form never shows a stored one. The topics and registers link to the manual (#/manual/outputs).

import { ApiError } from '../api.js';
import { confirmDialog, h, modal } from '../dom.js';
import { formatNumber } from '../components/format.js';
import { ago, stateCell } from '../components/output-state.js';
import { openCertificates } from './outputs-certificates.js';

const KINDS = { mqtt: 'MQTT', webhook: 'Webhook', opcua: 'OPC UA server', modbus: 'Modbus TCP server' };
// [name, label, type, default]; type: text | number | check | secret | select:a,b | checks:a,b | list
const FIELDS = {
  mqtt: [['host', 'Broker host', 'text', ''], ['port', 'Port', 'number', 1883], ['protocol', 'MQTT version', 'select:3.1.1,5', '3.1.1'],
    ['topic_prefix', 'Topic prefix', 'text', 'appliance'], ['username', 'User name', 'text', ''], ['password', 'Password', 'secret'],
    ['tls', 'TLS', 'check', false], ['ca_file', 'CA file on the box (PEM)', 'text', ''], ['tls_insecure', 'Accept any certificate (testing only)', 'check', false],
    ['keepalive_s', 'Keep-alive (s)', 'number', 30], ['client_id', 'Client id (empty: appliance-<box>-<id>)', 'text', ''],
    ['triggers', 'Take triggers from the broker', 'check', true]],
  webhook: [['url', 'URL', 'text', ''], ['secret', 'HMAC key (16+ characters)', 'secret'], ['timeout_s', 'Timeout (s)', 'number', 10],
    ['verify_tls', 'Check the receiver\'s certificate', 'check', true], ['ca_file', 'CA file on the box (PEM)', 'text', '']],
  opcua: [['host', 'Listen address', 'text', '0.0.0.0'], ['port', 'Port', 'number', 4840], ['username', 'User name', 'text', ''],
    ['password', 'Password', 'secret'], ['allow_anonymous', 'Allow anonymous sessions', 'check', false],
    ['security', 'Security', 'checks:none,basic256sha256', ['none']], ['certificate', 'Box certificate (path)', 'text', ''],
    ['private_key', 'Private key (path)', 'text', ''], ['triggers', 'Trigger method enabled', 'check', true],
    ['trust_on_first_use', 'Trust the first client certificate presented (then refuse others)', 'check', false]],
  modbus: [['host', 'Listen address', 'text', '0.0.0.0'], ['port', 'Port', 'number', 5020],
    ['classes', 'Count registers: class names in order (comma-separated; empty: the model\'s)', 'list', []],
    ['triggers', 'Trigger coils enabled', 'check', true]],
};

function target(o) {
  const s = o.settings;
  if (o.kind === 'webhook') return s.url;
  if (o.kind === 'mqtt') return `${s.tls ? 'mqtts' : 'mqtt'}://${s.host}:${s.port} (${s.topic_prefix}/${o.box_id}/…)`;
  if (o.kind === 'opcua') return `opc.tcp://${s.host}:${s.port}/appliance/`;
  return `${s.host}:${s.port}`;
}

function fieldInput(kind, [name, label, type, dflt], settings, secretsSet) {
  const value = settings ? settings[name] : dflt;
  const testid = `output-field-${name}`;
  if (type === 'check') return h('label.inline', h('input', { type: 'checkbox', name, checked: !!value, testid }), ` ${label}`);
  if (type.startsWith('select:')) {
    return h('label', label, h('select', { name, testid }, type.slice(7).split(',').map((v) => h('option', { value: v, selected: v === value }, v))));
  }
  if (type.startsWith('checks:')) {
    return h('fieldset', h('legend', label), type.slice(7).split(',').map((v) => h('label.inline',
      h('input', { type: 'checkbox', name, value: v, checked: (value || []).includes(v), testid: `${testid}-${v}` }), ` ${v} `)));
  }
  if (type === 'secret') {
    const stored = secretsSet.includes(name);
    return h('label', `${label}${stored ? ' (stored: leave empty to keep)' : ''}`,
      h('input', { type: 'password', name, autocomplete: 'new-password', maxlength: 256, testid }),
      stored ? h('label.inline', h('input', { type: 'checkbox', name: `clear-${name}`, testid: `${testid}-clear` }), ' clear the stored one') : null);
  }
  const text = type === 'list' ? (value || []).join(', ') : value ?? '';
  return h('label', label, h('input', { type: type === 'number' ? 'number' : 'text', name, value: String(text), step: 'any', testid }));
}

function readSettings(form, kind, editing) {
  const settings = { kind };
  for (const [name, , type] of FIELDS[kind]) {
    const els = form.querySelectorAll(`[name="${name}"]`);
    if (type === 'check') settings[name] = els[0].checked;
    else if (type.startsWith('checks:')) settings[name] = [...els].filter((e) => e.checked).map((e) => e.value);
    else if (type === 'number') settings[name] = Number(els[0].value);
    else if (type === 'list') settings[name] = els[0].value.split(',').map((v) => v.trim()).filter(Boolean);
    else if (type === 'secret') {
      const clear = form.querySelector(`[name="clear-${name}"]`);
      if (clear && clear.checked) settings[name] = '';
      else if (els[0].value) settings[name] = els[0].value;
      else if (!editing) settings[name] = null;
    } else settings[name] = els[0].value.trim();
  }
  settings.camera_ids = [...form.querySelectorAll('[name="camera_ids"]')].filter((e) => e.checked).map((e) => Number(e.value));
  return settings;
}

function triggerSources(camera, outputs) {
  const ways = [h('li', `HTTP: POST /api/v1/cameras/${camera.id}/trigger`)];
  for (const o of outputs) {
    const s = o.settings;
    if (!o.enabled || s.triggers === false || o.kind === 'webhook') continue;
    if (s.camera_ids.length && !s.camera_ids.includes(camera.id)) continue;
    if (o.kind === 'mqtt') ways.push(h('li', `MQTT (${o.name}): publish to ${s.topic_prefix}/${o.box_id}/cameras/${camera.id}/trigger`));
    if (o.kind === 'opcua') ways.push(h('li', `OPC UA (${o.name}): call camera.${camera.id}.Trigger`));
    if (o.kind === 'modbus') {
      ways.push(h('li', camera.id <= 654 ? `Modbus (${o.name}): write 1 to coil ${100 * camera.id}; registers ${100 * camera.id}-${100 * camera.id + 99}`
        : `Modbus (${o.name}): camera ids above 654 have no registers`));
    }
  }
  return h('tr', { testid: 'trigger-row', dataset: { camera: String(camera.id) } },
    h('td', camera.name), h('td', camera.settings.mode), h('td', h('ul.plain', ways)));
}

export default {
  route: '#/outputs',
  title: 'Outputs',
  nav: 'Outputs',
  admin: true,
  async render(root, _params, ctx) {
    const rows = h('tbody');
    const triggerRows = h('tbody');
    const error = h('p.form-error', { testid: 'outputs-error', role: 'alert' });
    let cameras = [];
    let editing = false;
    const fail = (err) => { error.textContent = err instanceof ApiError ? err.detail : String(err); };

    const load = async () => {
      const [outputs, cams] = await Promise.all([ctx.api.get('/outputs', { signal: ctx.signal }), ctx.api.get('/cameras', { signal: ctx.signal })]);
      cameras = cams;
      rows.replaceChildren(...outputs.map((o) => outputRow(o)));
      if (!outputs.length) rows.append(h('tr', h('td.muted', { colspan: 6 }, 'No outputs yet: add one with "Add output".')));
      triggerRows.replaceChildren(...cameras.map((c) => triggerSources(c, outputs)));
    };

    const tests = new Map(); // output id -> its last Test here ({ ok, detail, elapsed_ms, at }), one of the row's facts
    const outputRow = (o) => {
      const test = h('button', { type: 'button', testid: 'output-test', onclick: async () => {
        tests.set(o.id, { pending: true });
        rows.querySelector(`[data-testid=output-row][data-id="${o.id}"]`)?.replaceWith(outputRow(o));
        try {
          const r = await ctx.api.post(`/outputs/${o.id}/test`);
          tests.set(o.id, { ...r, at: Date.now() / 1000 });
        } catch (err) {
          tests.set(o.id, { ok: false, detail: err instanceof ApiError ? err.detail : String(err), at: Date.now() / 1000 });
        }
        await load().catch(fail);
      } }, 'Test');
      const toggle = h('button', { type: 'button', testid: 'output-toggle', onclick: () => save(o, { name: o.name, enabled: !o.enabled, settings: o.settings }) },
        o.enabled ? 'Disable' : 'Enable');
      const edit = h('button', { type: 'button', testid: 'output-edit', onclick: () => openForm(o) }, 'Edit');
      const certificates = o.kind === 'opcua'
        ? h('button', { type: 'button', testid: 'output-certificates', onclick: () => { editing = true; openCertificates(ctx, o).finally(() => { editing = false; }); } }, 'Certificates')
        : null;
      const remove = h('button.danger', { type: 'button', testid: 'output-delete', onclick: async () => {
        if (!(await confirmDialog('Delete output', `Delete ${o.name}? Its ${o.status.backlog} undelivered messages go with it.`))) return;
        try { await ctx.api.del(`/outputs/${o.id}`); await load(); } catch (err) { fail(err); }
      } }, 'Delete');
      const st = o.status;
      return h('tr', { testid: 'output-row', dataset: { name: o.name, kind: o.kind, id: String(o.id) } },
        h('td', h('strong', o.name), h('div.muted', KINDS[o.kind])), h('td', { testid: 'output-target' }, target(o)), stateCell(o, tests.get(o.id)),
        h('td', { testid: 'output-backlog' }, formatNumber(st.backlog), st.dropped ? h('div.form-error', { testid: 'output-dropped' }, `${formatNumber(st.dropped)} dropped`) : null),
        h('td', h('div', { testid: 'output-delivered' }, `${formatNumber(st.delivered)} sent`), h('div.muted', `last ${ago(st.last_delivery_at)}`)),
        h('td.actions', test, edit, certificates, toggle, remove));
    };

    // Secrets omitted from a PUT keep the stored ones (the page never had them).
    const save = async (o, body) => {
      const settings = { ...body.settings };
      for (const key of ['password', 'secret']) if (settings[key] === null) delete settings[key];
      try { await ctx.api.put(`/outputs/${o.id}`, { ...body, settings }); await load(); } catch (err) { fail(err); }
    };

    const openForm = (o = null) => modal(o ? `Edit ${o.name}` : 'New output', (close) => {
      editing = true;
      const kind = h('select', { name: 'kind', testid: 'output-kind', disabled: !!o },
        Object.entries(KINDS).map(([k, label]) => h('option', { value: k, selected: o ? o.kind === k : k === 'mqtt' }, label)));
      const name = h('input', { name: 'name', required: true, maxlength: 64, value: o ? o.name : '', testid: 'output-name' });
      const enabled = h('input', { type: 'checkbox', name: 'enabled', checked: o ? o.enabled : true, testid: 'output-enabled' });
      const fields = h('div.stack');
      const cams = h('fieldset', h('legend', 'Cameras (none ticked: every camera)'), cameras.map((c) => h('label.inline',
        h('input', { type: 'checkbox', name: 'camera_ids', value: String(c.id), checked: o ? o.settings.camera_ids.includes(c.id) : false }), ` ${c.name} `)));
      const draw = () => fields.replaceChildren(...FIELDS[kind.value].map((f) => fieldInput(kind.value, f, o && o.kind === kind.value ? o.settings : null, o ? o.secrets_set : [])));
      kind.addEventListener('change', draw);
      draw();
      const msg = h('p.form-error', { testid: 'output-form-error', role: 'alert' });
      const form = h('form.stack', { testid: 'output-form' }, h('label', 'Kind', kind), h('label', 'Name', name),
        h('label.inline', enabled, ' Enabled'), fields, cams, msg,
        h('div.actions', h('button', { type: 'button', onclick: () => close(false) }, 'Cancel'),
          h('button.primary', { type: 'submit', testid: 'output-save' }, o ? 'Save' : 'Add')));
      form.addEventListener('submit', async (event) => {
        event.preventDefault();
        const body = { name: name.value.trim(), enabled: enabled.checked, settings: readSettings(form, kind.value, !!o) };
        try {
          if (o) await ctx.api.put(`/outputs/${o.id}`, body);
          else await ctx.api.post('/outputs', body);
          ctx.toast(`Output ${body.name} saved`, 'ok');
          close(true);
          await load();
        } catch (err) { msg.textContent = err instanceof ApiError ? err.detail : String(err); }
      });
      return form;
    }, { testid: 'output-dialog', wide: true }).finally(() => { editing = false; });

    root.append(h('section',
      h('div.page-head', h('h1', 'Outputs'), h('button.primary', { type: 'button', testid: 'output-add', onclick: () => openForm() }, 'Add output')),
      h('p.muted', { testid: 'outputs-help' }, 'Every inspection event goes to each enabled output, in order, at least once (event_id de-duplicates); '
        + 'a broker or receiver that is away gets the backlog when it is back. In the manual: ',
      h('a', { href: '#/manual/outputs?section=mqtt', testid: 'manual-mqtt' }, 'MQTT topics'), ', ',
      h('a', { href: '#/manual/outputs?section=webhooks' }, 'webhook signatures'), ', ',
      h('a', { href: '#/manual/outputs?section=opc-ua-server' }, 'OPC UA nodes'), ', ',
      h('a', { href: '#/manual/outputs?section=modbus-tcp-server', testid: 'manual-modbus' }, 'Modbus registers'), ', ',
      h('a', { href: '#/manual/outputs?section=contract' }, 'payloads'), '.'),
      error,
      h('table.table', { testid: 'outputs-table' },
        h('thead', h('tr', ['Output', 'Target', 'Status', 'Backlog', 'Delivered', ''].map((t) => h('th', t)))), rows),
      h('h2', { style: { 'margin-top': '1.5rem' } }, 'Trigger sources per camera'),
      h('table.table', { testid: 'trigger-sources' }, h('thead', h('tr', ['Camera', 'Mode', 'Ways to trigger an inspection'].map((t) => h('th', t)))), triggerRows)));
    await load();
    const timer = setInterval(() => { if (!editing) load().catch(fail); }, 2000);
    return () => clearInterval(timer);
  },
};
