// The forms of one camera on the Live page: source and model settings, zones list, rules editor.
// Each saves the whole camera (PUT /cameras/{id}); the server names the field when it refuses, and the
// message stays next to the form that caused it (a rule's, as a sentence under the rule, at its field).
// A rule's classes are chosen from the class list of the camera's model (components/class-picker.js).

import { ApiError } from '../api.js';
import { h, setText } from '../dom.js';
import { classPicker } from './class-picker.js';
import { fieldError } from './field-errors.js';
import { discoveryList, genicamFieldset } from './genicam-settings.js';

const SOURCE_HINTS = {
  v4l2: '/dev/video0',
  url: 'rtsp://192.168.1.20/stream or http://camera/video.mjpg',
  gstreamer: 'nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1',
  file: '/media/usb/line.mp4',
  gige: 'gige://<serial, device id or IP> (Find cameras)',
};
const SOURCE_LABELS = { file: 'Video file (looped)', url: 'RTSP / HTTP URL', v4l2: 'USB camera (V4L2)', gstreamer: 'GStreamer pipeline (CSI)',
  gige: 'GigE Vision / USB3 Vision' };
// auto: the model's pin, else the box's choice (TensorRT on an NVIDIA GPU, else OpenVINO, else ONNX Runtime).
export const ENGINE_PINS = [['auto', 'auto'], ['openvino', 'OpenVINO'], ['openvino:CPU', 'OpenVINO CPU'],
  ['openvino:GPU', 'OpenVINO Intel GPU'], ['openvino:NPU', 'OpenVINO NPU'], ['onnxruntime', 'ONNX Runtime'], ['tensorrt', 'TensorRT']];
const CONDITIONS = [['present', 'present'], ['absent', 'absent'], ['==', 'count ='], ['>=', 'count ≥'], ['<=', 'count ≤'], ['between', 'between']];

/** PUT the camera with changed settings; resolves to the saved camera, or shows the server's reason in `error`
 * (an element, or a function given the ApiError). */
export async function saveCamera(ctx, camera, changes, error) {
  if (typeof error !== 'function') setText(error, '');
  try {
    const saved = await ctx.api.put(`/cameras/${camera.id}`, {
      name: changes.name ?? camera.name,
      settings: { ...camera.settings, ...(changes.settings || {}) },
    });
    Object.assign(camera, saved);
    return saved;
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    if (typeof error === 'function') error(err);
    else setText(error, err.detail);
    return null;
  }
}

function field(label, input, hint) {
  return h('label', label, input, hint ? h('small.muted', hint) : null);
}

function number(name, value, attrs = {}) {
  return h('input', { type: 'number', name, value: String(value ?? 0), testid: `camera-${name}`, ...attrs });
}

/** Source, model and inspection settings (admins edit; others read). */
export function settingsForm(ctx, camera, models, onSaved) {
  const s = camera.settings;
  const isAdmin = ctx.user && ctx.user.role === 'admin';
  const error = h('p.form-error', { testid: 'camera-settings-error', role: 'alert' });
  const sourceType = h('select', { name: 'source_type', testid: 'camera-source-type' },
    Object.entries(SOURCE_LABELS).map(([t, label]) => h('option', { value: t, selected: t === s.source_type }, label)));
  const source = h('input', { name: 'source', value: s.source, testid: 'camera-source', placeholder: SOURCE_HINTS[s.source_type] });
  const genicam = genicamFieldset(camera);
  const discovery = isAdmin ? discoveryList(ctx, (found) => { source.value = found.source; }) : h('div');
  const sizeRow = h('div.inline-form',
    field('Width', number('width', s.width, { min: 0, max: 8192 }), '0 = the camera\'s default'),
    field('Height', number('height', s.height, { min: 0, max: 8192 }), '0 = the camera\'s default'),
    field('FPS', number('fps', s.fps, { min: 0, max: 500, step: 'any' }), '0 = the source\'s own rate'));
  const syncType = () => {
    const gige = sourceType.value === 'gige';
    source.placeholder = SOURCE_HINTS[sourceType.value];
    for (const el of [genicam, discovery]) el.style.display = gige ? '' : 'none';
    sizeRow.style.display = gige ? 'none' : ''; // a GigE camera's size and rate are GenICam features
  };
  sourceType.addEventListener('change', syncType);
  syncType();
  const model = h('select', { name: 'model_id', testid: 'camera-model' },
    h('option', { value: '' }, 'The deployed model'),
    models.map((m) => h('option', { value: String(m.id), selected: m.id === s.model_id }, `${m.name} (#${m.id})`)));
  const mode = h('select', { name: 'mode', testid: 'camera-mode' },
    [['continuous', 'Continuous (event when the verdict changes)'], ['triggered', 'Triggered (one inspection per trigger)'],
      ['interval', 'Interval (one inspection every N s)']].map(([v, label]) => h('option', { value: v, selected: v === s.mode }, label)));
  const form = h('form.card', { testid: 'camera-settings' },
    h('h2', 'Camera settings'),
    h('div.inline-form',
      field('Name', h('input', { name: 'name', value: camera.name, testid: 'camera-name', required: true })),
      field('Source type', sourceType),
      h('label', { style: { flex: '1 1 20rem' } }, 'Source', source)),
    discovery,
    h('div.inline-form', sizeRow,
      field('Max inspections/s', number('max_fps', s.max_fps, { min: 0, max: 500, step: 'any' }), '0 = no cap')),
    genicam,
    h('div.inline-form',
      field('Model', model),
      field('Precision', h('select', { name: 'precision', testid: 'camera-precision' },
        ['auto', 'fp32', 'fp16', 'bf16', 'int8'].map((p) => h('option', { value: p, selected: p === s.precision }, p))),
      'reduced ones run only once the box accepted them (Models page)'),
      field('Engine', h('select', { name: 'engine', testid: 'camera-engine' },
        ENGINE_PINS.map(([v, label]) => h('option', { value: v, selected: v === (s.engine || 'auto') }, label)))),
      field('Confidence', number('confidence', s.confidence, { min: 0, max: 1, step: 'any' }), 'boxes below are not shown'),
      field('IoU', number('iou', s.iou, { min: 0, max: 1, step: 'any' }))),
    h('div.inline-form',
      field('Mode', mode),
      field('Interval (s)', number('interval_s', s.interval_s, { min: 0.1, step: 'any' }), 'interval mode'),
      field('Debounce (frames)', number('debounce_frames', s.debounce_frames, { min: 1, max: 1000 }), 'continuous mode'),
      h('label.inline', h('input', { type: 'checkbox', name: 'snapshots', checked: s.snapshots, testid: 'camera-snapshots' }),
        'keep a snapshot of each event')),
    error,
    h('div.actions', isAdmin
      ? h('button.primary', { type: 'submit', testid: 'camera-save' }, 'Save settings')
      : h('span.muted', 'Only an admin can change a camera.')));
  for (const el of form.querySelectorAll('input, select')) el.disabled = !isAdmin;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const v = Object.fromEntries(new FormData(form).entries());
    const gige = v.source_type === 'gige';
    const settings = {
      source_type: v.source_type, source: v.source.trim(), genicam: gige ? genicam.read() : null,
      width: gige ? 0 : Number(v.width), height: gige ? 0 : Number(v.height), fps: gige ? 0 : Number(v.fps), max_fps: Number(v.max_fps),
      model_id: v.model_id ? Number(v.model_id) : null, precision: v.precision, engine: v.engine,
      confidence: Number(v.confidence), iou: Number(v.iou), mode: v.mode,
      interval_s: Number(v.interval_s), debounce_frames: Number(v.debounce_frames),
      snapshots: form.querySelector('[name=snapshots]').checked,
    };
    const saved = await saveCamera(ctx, camera, { name: v.name.trim(), settings }, error);
    if (saved) {
      ctx.toast('Camera settings saved', 'ok');
      onSaved(saved);
    }
  });
  form.genicam = genicam;
  return form;
}

/** The model the camera runs, from the models the page listed: the one it names, else the deployed one. */
export function cameraModel(camera, models) {
  const id = camera.settings.model_id;
  return (models || []).find((m) => (id ? m.id === id : m.deployed)) || null;
}

function ruleRow(rule, zones, modelClasses, onRemove) {
  const zone = h('select', { name: 'zone' }, h('option', { value: '' }, 'whole frame'),
    zones.map((z) => h('option', { value: z.name, selected: z.name === rule.zone }, z.name)));
  const condition = h('select', { name: 'condition' },
    CONDITIONS.map(([v, label]) => h('option', { value: v, selected: v === rule.condition }, label)));
  const count = h('input', { type: 'number', name: 'count', min: 0, value: String(rule.count ?? 1), style: { width: '5rem' } });
  const max = h('input', { type: 'number', name: 'max_count', min: 0, value: rule.max_count ?? '', style: { width: '5rem' } });
  const sync = () => {
    count.disabled = ['present', 'absent'].includes(condition.value);
    max.disabled = condition.value !== 'between';
  };
  condition.addEventListener('change', sync);
  sync();
  return h('tr', { testid: 'rule-row' },
    h('td', h('input', { name: 'name', value: rule.name || '', required: true, style: { width: '9rem' } })),
    h('td', zone),
    h('td', classPicker(modelClasses, rule.classes || [])),
    h('td', h('input', { type: 'number', name: 'min_confidence', min: 0, max: 1, step: 'any', value: String(rule.min_confidence ?? 0.25), style: { width: '5rem' } })),
    h('td', condition), h('td', count), h('td', max),
    h('td', h('button', { type: 'button', onclick: onRemove, title: 'Remove this rule' }, '✕')));
}

function readRule(row) {
  const value = (name) => row.querySelector(`[name=${name}]`).value;
  const condition = value('condition');
  return {
    name: value('name').trim(),
    zone: value('zone') || null,
    classes: row.querySelector('[data-testid=rule-classes]').value,
    min_confidence: Number(value('min_confidence')),
    condition,
    count: ['present', 'absent'].includes(condition) ? 1 : Number(value('count')),
    max_count: condition === 'between' && value('max_count') !== '' ? Number(value('max_count')) : null,
  };
}

/** Zones (drawn on the stream by the page) and rules; `onDrawZone()` starts the zone tool. `models`: the models
 * the page listed (GET /models), for the class list of the camera's model. */
export function rulesEditor(ctx, camera, { models = [], onDrawZone, onSaved }) {
  const isAdmin = ctx.user && ctx.user.role === 'admin';
  const error = h('p.form-error', { testid: 'rules-error', role: 'alert' });
  const body = h('tbody');
  const zoneList = h('ul', { testid: 'zone-list' });
  const modelNote = h('p.muted.small', { testid: 'rules-model' });
  let modelClasses = null;
  const clearFieldErrors = () => {
    for (const el of body.querySelectorAll('tr.row-error')) el.remove();
    for (const el of body.querySelectorAll('.invalid')) el.classList.remove('invalid');
  };
  /** A refusal about one rule: a sentence under that rule and its field marked; anything else above. */
  const showError = (err) => {
    clearFieldErrors();
    const rows = [...body.querySelectorAll('tr[data-testid=rule-row]')];
    const found = fieldError(err.detail, 'rules');
    const row = found && rows[found.index];
    if (!row) {
      setText(error, err.detail);
      return;
    }
    setText(error, '');
    const name = row.querySelector('[name=name]').value.trim();
    const field = found.field === 'classes' ? row.querySelector('[data-testid=rule-classes]') : row.querySelector(`[name=${found.field}]`);
    if (field) field.classList.add('invalid');
    row.after(h('tr.row-error', { testid: 'rule-field-error', dataset: { field: found.field, index: String(found.index) } },
      h('td', { colspan: 8, role: 'alert' }, `Rule ${name ? `“${name}”` : found.index + 1}, ${found.sentence}`)));
  };
  const renderZones = () => {
    zoneList.replaceChildren(...camera.settings.zones.map((zone, i) => h('li', { testid: 'zone-item' },
      `${zone.name} (${zone.points.length} points) `,
      isAdmin ? h('button', { type: 'button', onclick: async () => {
        const zones = camera.settings.zones.filter((_, j) => j !== i);
        const rules = camera.settings.rules.filter((r) => r.zone !== zone.name);
        if (await saveCamera(ctx, camera, { settings: { zones, rules } }, error)) onSaved(camera);
      } }, 'remove') : null)));
    if (!camera.settings.zones.length) zoneList.append(h('li.muted', 'No zones: rules count over the whole frame.'));
  };
  const addRow = (rule) => {
    const row = ruleRow(rule, camera.settings.zones, modelClasses, () => {
      if (row.nextElementSibling && row.nextElementSibling.classList.contains('row-error')) row.nextElementSibling.remove();
      row.remove();
    });
    for (const el of row.querySelectorAll('input, select, button')) el.disabled = !isAdmin;
    body.append(row);
  };
  const render = () => {
    const model = cameraModel(camera, models);
    modelClasses = model ? model.classes.map((c) => c.name) : null;
    setText(modelNote, model
      ? `Classes come from model ${model.name} (#${model.id}): ${modelClasses.join(', ') || 'none'}.`
      : 'No model deployed: a rule counts any class until a model is deployed (its classes are then offered here).');
    renderZones();
    body.replaceChildren();
    for (const rule of camera.settings.rules) addRow(rule);
  };
  render();
  const card = h('div.card', { testid: 'rules-editor' },
    h('h2', 'Zones and rules'),
    h('div.inline-form', zoneList,
      isAdmin ? h('button', { type: 'button', testid: 'zone-draw', onclick: onDrawZone }, 'Draw a zone on the image') : null),
    h('p.muted', 'All rules hold → OK; any rule fails → NG, with the failing rules named. A box is in a zone when its centre is.'),
    modelNote,
    h('div', { style: { 'overflow-x': 'auto' } }, h('table.table.compact', { testid: 'rules-table' },
      h('thead', h('tr', ['Rule', 'Zone', 'Classes', 'Min conf.', 'Condition', 'Count', 'Max', ''].map((t) => h('th', t)))),
      body)),
    error,
    isAdmin ? h('div.actions',
      h('button', { type: 'button', testid: 'rule-add', onclick: () => addRow({ name: '', condition: 'present' }) }, 'Add a rule'),
      h('button.primary', { type: 'button', testid: 'rules-save', onclick: async () => {
        const rules = [...body.querySelectorAll('tr[data-testid=rule-row]')].map(readRule);
        clearFieldErrors();
        setText(error, '');
        if (await saveCamera(ctx, camera, { settings: { rules } }, showError)) {
          ctx.toast('Rules saved', 'ok');
          onSaved(camera);
        }
      } }, 'Save rules')) : null);
  card.refresh = render;
  card.error = error;
  return card;
}
