// GigE Vision / USB3 Vision cameras in the console: the cameras discovery finds (vendor, model, serial,
// address), the GenICam settings of a gige:// camera (exposure, gain, pixel format, region, frame rate,
// trigger), and what the camera process reports about it (the feature values read back from the camera,
// transport counters, what happened: lost, reconnected, refused settings).

import { ApiError } from '../api.js';
import { formatNumber } from './format.js';
import { h, setText } from '../dom.js';

const PIXEL_FORMATS = ['Mono8', 'BayerRG8', 'BayerGB8', 'BayerGR8', 'BayerBG8', 'RGB8', 'BGR8'];
const TRIGGERS = [['free_run', 'Free run (the camera streams)'], ['software', 'Software (the box triggers the camera)'],
  ['hardware', 'Hardware line (the PLC / light barrier triggers the camera)']];
const TRANSPORT = [['frames', 'frames'], ['frames_incomplete', 'incomplete'], ['frames_lost', 'lost'],
  ['frames_not_inspected', 'not inspected'], ['packets_missing', 'packets missing'], ['packets_resent', 'packets resent'],
  ['software_triggers', 'software triggers']];
const time = (ts) => new Date(ts * 1000).toLocaleTimeString();
const number = (v) => (v === null || v === undefined || v === '' ? null : Number(v));

/** "Find cameras": GET /cameras/discover, a row per camera with a "Use" button calling onPick(camera). */
export function discoveryList(ctx, onPick) {
  const note = h('p.muted', { testid: 'genicam-discover-note' });
  const body = h('tbody');
  const table = h('table.table.compact', { testid: 'genicam-found', style: { display: 'none' } },
    h('thead', h('tr', ['Vendor', 'Model', 'Serial', 'Address', 'Protocol', ''].map((t) => h('th', t)))), body);
  const button = h('button', { type: 'button', testid: 'genicam-discover' }, 'Find cameras');
  button.addEventListener('click', async () => {
    button.disabled = true;
    setText(note, 'Looking for GigE Vision and USB3 Vision cameras…');
    try {
      const found = await ctx.api.get('/cameras/discover');
      if (!found.available) {
        setText(note, found.detail);
        table.style.display = 'none';
        return;
      }
      body.replaceChildren(...found.cameras.map((c) => h('tr', { testid: 'genicam-found-row', dataset: { serial: c.serial } },
        h('td', c.vendor), h('td', c.model), h('td', c.serial), h('td', c.address), h('td', c.protocol),
        h('td', h('button', { type: 'button', testid: 'genicam-use', onclick: () => onPick(c) }, 'Use')))));
      table.style.display = found.cameras.length ? '' : 'none';
      setText(note, found.cameras.length ? `${found.cameras.length} camera(s) found in ${Math.round(found.took_ms)} ms.`
        : 'No camera answered: check the cable, the power (PoE) and that the camera is in the box\'s IP subnet.');
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      setText(note, err.detail);
    } finally {
      button.disabled = false;
    }
  });
  return h('div', { testid: 'genicam-discovery' }, h('div.inline-form', button, note), table);
}

function field(label, input, hint) {
  return h('label', label, input, h('small.muted', hint || ''));
}

/** The GenICam settings of a gige:// camera; `read()` gives settings.genicam, `showRanges(ranges)` the hints. */
export function genicamFieldset(camera) {
  const g = camera.settings.genicam || {};
  const roi = g.roi || {};
  // Names carry a prefix: the camera form around this fieldset has its own width, height, ...
  const input = (name, value, attrs = {}) => h('input', { type: 'number', name: `genicam_${name}`, testid: `genicam-${name}`, step: 'any',
    value: value === null || value === undefined ? '' : String(value), ...attrs });
  const inputs = {
    exposure_us: input('exposure_us', g.exposure_us, { min: 0, placeholder: 'camera\'s own' }),
    gain: input('gain', g.gain, { placeholder: 'camera\'s own' }),
    frame_rate: input('frame_rate', g.frame_rate || 0, { min: 0 }),
    offset_x: input('offset_x', roi.offset_x, { min: 0, step: 1 }),
    offset_y: input('offset_y', roi.offset_y, { min: 0, step: 1 }),
    width: input('width', roi.width, { min: 1, step: 1, placeholder: 'camera\'s own' }),
    height: input('height', roi.height, { min: 1, step: 1, placeholder: 'camera\'s own' }),
    trigger_delay_us: input('trigger_delay_us', g.trigger_delay_us || 0, { min: 0 }),
    packet_size: input('packet_size', g.packet_size || 0, { min: 0, step: 1 }),
  };
  const pixelFormat = h('select', { name: 'genicam_pixel_format', testid: 'genicam-pixel_format' }, h('option', { value: '' }, 'camera\'s own'),
    PIXEL_FORMATS.map((p) => h('option', { value: p, selected: p === g.pixel_format }, p)));
  const trigger = h('select', { name: 'genicam_trigger', testid: 'genicam-trigger' },
    TRIGGERS.map(([v, label]) => h('option', { value: v, selected: v === (g.trigger || 'free_run') }, label)));
  const line = h('input', { name: 'genicam_trigger_line', testid: 'genicam-trigger_line', value: g.trigger_line || 'Line1', style: { width: '6rem' } });
  const edge = h('select', { name: 'genicam_trigger_edge', testid: 'genicam-trigger_edge' },
    [['rising', 'rising edge'], ['falling', 'falling edge']].map(([v, label]) => h('option', { value: v, selected: v === g.trigger_edge }, label)));
  const resend = h('input', { type: 'checkbox', name: 'genicam_packet_resend', testid: 'genicam-packet_resend', checked: g.packet_resend !== false });
  const hints = {};
  const hinted = (label, name, el, text) => {
    const f = field(label, el, text);
    hints[name] = f.querySelector('small');
    return f;
  };
  const hardwareRow = h('div.inline-form', hinted('Line', 'trigger_line', line, 'the camera\'s input'), field('Edge', edge),
    hinted('Delay (µs)', 'trigger_delay_us', inputs.trigger_delay_us, 'after the edge'));
  const sync = () => { hardwareRow.style.display = trigger.value === 'hardware' ? '' : 'none'; };
  trigger.addEventListener('change', sync);
  sync();
  const fieldset = h('fieldset', { testid: 'genicam-settings', style: { border: '1px solid var(--line)', 'border-radius': 'var(--radius)' } },
    h('legend', 'GenICam (GigE Vision / USB3 Vision)'),
    h('div.inline-form',
      hinted('Exposure (µs)', 'exposure_us', inputs.exposure_us, 'fixed: auto exposure off'),
      hinted('Gain', 'gain', inputs.gain, 'fixed: auto gain off'),
      hinted('Pixel format', 'pixel_format', pixelFormat, 'Bayer is demosaiced on the box'),
      hinted('Frame rate', 'frame_rate', inputs.frame_rate, 'free run; 0 = the camera\'s own')),
    h('div.inline-form',
      hinted('Offset X', 'offset_x', inputs.offset_x, 'region of interest'), hinted('Offset Y', 'offset_y', inputs.offset_y, 'from the top'),
      hinted('Width', 'width', inputs.width, 'empty: the camera\'s own'), hinted('Height', 'height', inputs.height, 'pixels')),
    h('div.inline-form', field('Trigger', trigger)),
    hardwareRow,
    h('div.inline-form', field('Packet size', inputs.packet_size, 'GigE; 0 = negotiated'),
      h('label.inline', resend, 'resend lost packets')));
  fieldset.read = () => {
    const v = Object.fromEntries(Object.entries(inputs).map(([k, el]) => [k, el.value]));
    const region = v.width !== '' || v.height !== '' ? { offset_x: number(v.offset_x) || 0, offset_y: number(v.offset_y) || 0,
      width: number(v.width), height: number(v.height) } : null;
    return {
      exposure_us: number(v.exposure_us), gain: number(v.gain), pixel_format: pixelFormat.value || null, roi: region,
      frame_rate: number(v.frame_rate) || 0, trigger: trigger.value, trigger_line: line.value.trim(), trigger_edge: edge.value,
      trigger_delay_us: number(v.trigger_delay_us) || 0, packet_size: number(v.packet_size) || 0, packet_resend: resend.checked,
    };
  };
  fieldset.showRanges = (ranges) => {
    if (!ranges) return;
    const span = (r, unit = '') => (r ? `this camera: ${r.min}..${r.max}${unit}` : 'this camera has none');
    setText(hints.exposure_us, span(ranges.exposure_us, ' µs'));
    setText(hints.gain, span(ranges.gain));
    setText(hints.frame_rate, span(ranges.frame_rate, ' fps'));
    setText(hints.width, `sensor ${ranges.sensor_width}x${ranges.sensor_height}`);
    setText(hints.pixel_format, `offered: ${ranges.pixel_formats.filter((p) => PIXEL_FORMATS.includes(p.replace('Packed', ''))).join(', ')}`);
    setText(hints.trigger_line, `lines: ${ranges.trigger_sources.filter((s) => s !== 'Software').join(', ') || 'none'}`);
    setText(hints.trigger_delay_us, span(ranges.trigger_delay_us, ' µs'));
  };
  return fieldset;
}

/** The camera process's report of a GenICam camera; `update(status)` (hidden for other sources). */
export function genicamPanel() {
  const device = h('p', { testid: 'genicam-device' });
  const applied = h('table.table.compact', { testid: 'genicam-applied' });
  const transport = h('div.stat-tiles', { testid: 'genicam-transport' });
  const incidents = h('ul', { testid: 'genicam-incidents' });
  const panel = h('details.card', { testid: 'genicam-panel', open: true, style: { display: 'none' } },
    h('summary', 'Camera (GenICam)'), device,
    h('h3', 'Features read back from the camera'), applied,
    h('h3', 'Transport since the camera process opened it'), transport,
    h('h3', 'What happened'), incidents);
  panel.update = (status) => {
    const g = status.genicam;
    panel.style.display = g ? '' : 'none';
    if (!g) return;
    const d = g.device;
    setText(device, d ? `${d.vendor} ${d.model} · serial ${d.serial} · ${d.address} (${d.protocol})` : 'not connected yet');
    const a = g.applied;
    const rows = a ? [['exposure', a.exposure_us === null ? '–' : `${a.exposure_us} µs`], ['gain', a.gain ?? '–'],
      ['pixel format', a.pixel_format], ['region', `${a.width}x${a.height} at ${a.offset_x},${a.offset_y}`],
      ['frame rate', a.frame_rate === null ? '–' : `${a.frame_rate} fps`], ['trigger', a.trigger], ['packet size', a.packet_size || '–']] : [];
    applied.replaceChildren(...rows.map(([k, v]) => h('tr', { testid: `genicam-applied-${k.replace(' ', '-')}` }, h('td', k), h('td.num', String(v)))));
    transport.replaceChildren(...TRANSPORT.map(([k, label]) => h('div.tile', { testid: `genicam-transport-${k}` },
      h('span.big', formatNumber(g.transport[k])), label)));
    incidents.replaceChildren(...(g.incidents.length ? g.incidents.slice().reverse().map((i) => h('li', { testid: 'genicam-incident' },
      `${time(i.ts)} ${i.message}`)) : [h('li.muted', 'Nothing yet.')]));
  };
  return panel;
}

/** An event's camera_features in one line: what the camera was doing when the part was judged. */
export function describeFeatures(f) {
  const parts = [];
  if (f.exposure_us !== undefined) parts.push(`exposure ${f.exposure_us} µs`);
  if (f.gain !== undefined) parts.push(`gain ${f.gain}`);
  if (f.pixel_format) parts.push(f.pixel_format);
  if (f.trigger) parts.push(`trigger ${f.trigger}`);
  if (f.frame_id !== undefined) parts.push(`camera frame ${f.frame_id}`);
  if (f.timestamp_ns !== undefined) parts.push(`camera clock ${f.timestamp_ns} ns`);
  return `Camera: ${parts.join(' · ')}`;
}
