// Live camera: the MJPEG stream with boxes drawn client-side from the WebSocket, FPS, per-stage latency,
// dropped frames, source status, capture into a dataset, and the source settings (admins).

import { API_PREFIX, ApiError } from '../api.js';
import { formatNumber } from '../components/format.js';
import { h, setText } from '../dom.js';
import { defaultColor } from '../palette.js';

const STAGES = [
  ['wait', 'Waiting for a frame'],
  ['capture', 'Capture (retrieve)'],
  ['preprocess', 'Preprocess'],
  ['inference', 'Inference'],
  ['postprocess', 'Postprocess'],
  ['encode', 'Encode'],
  ['frame_age', 'Frame age at publish'],
];
const SOURCE_HINTS = {
  v4l2: '/dev/video0',
  url: 'rtsp://192.168.1.20/stream or http://camera/video.mjpg',
  gstreamer: 'nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1',
  file: '/media/usb/line.mp4',
};
const ms = (v) => (v === undefined || v === null ? '–' : `${Number(v).toFixed(1)} ms`);

function drawBoxes(canvas, frame) {
  if (canvas.width !== frame.width || canvas.height !== frame.height) {
    canvas.width = frame.width;
    canvas.height = frame.height;
  }
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, canvas.width, canvas.height);
  const scale = Math.max(1, frame.width / 640);
  g.lineWidth = 2 * scale;
  g.font = `${Math.round(12 * scale)}px sans-serif`;
  g.textBaseline = 'top';
  for (const d of frame.detections) {
    const color = defaultColor(d.class_id);
    g.strokeStyle = color;
    g.strokeRect(d.x1, d.y1, d.x2 - d.x1, d.y2 - d.y1);
    const label = `${d.class_name} ${(d.confidence * 100).toFixed(0)}%`;
    const width = g.measureText(label).width + 6 * scale;
    const y = d.y1 >= 16 * scale ? d.y1 - 16 * scale : d.y1;
    g.fillStyle = color;
    g.fillRect(d.x1, y, width, 16 * scale);
    g.fillStyle = '#000';
    g.fillText(label, d.x1 + 3 * scale, y + 2 * scale);
  }
  canvas.dataset.boxes = String(frame.detections.length);
  canvas.dataset.seq = String(frame.seq);
}

function numberField(label, name, value, attrs = {}) {
  return h('label', label, h('input', { type: 'number', name, value: String(value), testid: `live-${name}`, ...attrs }));
}

function settingsForm(read, ctx, datasets, onSaved) {
  const s = read.settings;
  const isAdmin = ctx.user && ctx.user.role === 'admin';
  const error = h('p.form-error', { testid: 'live-settings-error', role: 'alert' });
  const sourceType = h('select', { name: 'source_type', testid: 'live-source-type' },
    ['file', 'url', 'v4l2', 'gstreamer'].map((t) => h('option', { value: t, selected: t === s.source_type },
      { file: 'Video file (looped)', url: 'RTSP / HTTP URL', v4l2: 'USB camera (V4L2)', gstreamer: 'GStreamer pipeline (CSI)' }[t])));
  const source = h('input', { name: 'source', value: s.source, testid: 'live-source', placeholder: SOURCE_HINTS[s.source_type] });
  sourceType.addEventListener('change', () => { source.placeholder = SOURCE_HINTS[sourceType.value]; });
  const gstNote = h('p.muted', { testid: 'live-gst-note' },
    read.gstreamer_available ? '' : 'This OpenCV build has no GStreamer: CSI pipelines need the device image (JetPack OpenCV).');
  const autoDataset = h('select', { name: 'auto_capture_dataset_id', testid: 'live-auto-dataset' },
    h('option', { value: '' }, '—'),
    datasets.map((d) => h('option', { value: String(d.id), selected: d.id === s.auto_capture_dataset_id }, d.name)));
  const autoCapture = h('input', { type: 'checkbox', name: 'auto_capture', checked: s.auto_capture, testid: 'live-auto-capture' });
  const form = h('form.card', { testid: 'live-settings' },
    h('h2', 'Source and model settings'),
    h('div.inline-form',
      h('label', 'Source type', sourceType),
      h('label', { style: { flex: '1 1 24rem' } }, 'Source', source)),
    gstNote,
    h('div.inline-form',
      numberField('Width', 'width', s.width, { min: 0, max: 8192 }),
      numberField('Height', 'height', s.height, { min: 0, max: 8192 }),
      numberField('FPS', 'fps', s.fps, { min: 0, max: 500, step: 'any' }),
      numberField('Confidence', 'confidence', s.confidence, { min: 0, max: 1, step: 'any' }),
      numberField('IoU', 'iou', s.iou, { min: 0, max: 1, step: 'any' }),
      numberField('JPEG quality', 'jpeg_quality', s.jpeg_quality, { min: 30, max: 100 }),
      numberField('Max inference FPS (0 = no cap)', 'max_fps', s.max_fps, { min: 0, max: 500, step: 'any' }),
      h('label', 'Precision', h('select', { name: 'precision', testid: 'live-precision' },
        ['auto', 'fp32', 'fp16', 'int8'].map((p) => h('option', { value: p, selected: p === s.precision }, p))))),
    h('h3', 'Auto-capture of hard cases'),
    h('div.inline-form',
      h('label.inline', autoCapture, 'Save frames whose best detection is below'),
      numberField('Threshold', 'auto_capture_below', s.auto_capture_below, { min: 0, max: 1, step: 'any' }),
      h('label.inline', h('input', { type: 'checkbox', name: 'auto_capture_empty', checked: s.auto_capture_empty,
        testid: 'live-auto-empty' }), 'also frames without detections'),
      numberField('At most one every (s)', 'auto_capture_interval_s', s.auto_capture_interval_s, { min: 1, step: 'any' }),
      h('label', 'into dataset', autoDataset)),
    error,
    h('div.actions', isAdmin
      ? h('button.primary', { type: 'submit', testid: 'live-save' }, 'Save settings')
      : h('span.muted', 'Only an admin can change the source.')));
  for (const el of form.querySelectorAll('input, select')) el.disabled = !isAdmin;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    setText(error, '');
    const values = Object.fromEntries(new FormData(form).entries());
    const body = {
      source_type: values.source_type,
      source: values.source.trim(),
      width: Number(values.width), height: Number(values.height), fps: Number(values.fps),
      confidence: Number(values.confidence), iou: Number(values.iou), jpeg_quality: Number(values.jpeg_quality),
      max_fps: Number(values.max_fps), precision: values.precision,
      enabled: read.settings.enabled,
      auto_capture: autoCapture.checked,
      auto_capture_below: Number(values.auto_capture_below),
      auto_capture_empty: form.querySelector('[name=auto_capture_empty]').checked,
      auto_capture_interval_s: Number(values.auto_capture_interval_s),
      auto_capture_dataset_id: values.auto_capture_dataset_id ? Number(values.auto_capture_dataset_id) : null,
    };
    try {
      const saved = await ctx.api.put('/camera', body);
      Object.assign(s, saved.settings);
      ctx.toast('Camera settings saved', 'ok');
      onSaved(saved);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      setText(error, err.detail);
    }
  });
  return form;
}

export default {
  route: '#/live',
  title: 'Live',
  nav: 'Live',
  async render(root, params, ctx) {
    const [settings, datasets] = await Promise.all([
      ctx.api.get('/camera', { signal: ctx.signal }),
      ctx.api.get('/datasets', { signal: ctx.signal }),
    ]);
    const canWrite = ctx.user && ctx.user.role !== 'viewer';
    const stateBadge = h('span.badge', { testid: 'live-state' }, '…');
    const modelNote = h('span.muted', { testid: 'live-model' });
    const errorLine = h('p.form-error', { testid: 'live-error', role: 'status' });
    const img = h('img', { testid: 'live-stream', alt: 'live camera stream',
      style: { display: 'block', width: '100%', height: 'auto', 'min-height': '120px', background: '#000' } });
    const overlay = h('canvas', { testid: 'live-overlay',
      style: { position: 'absolute', left: '0', top: '0', width: '100%', height: '100%', 'pointer-events': 'none' } });
    const view = h('div', { style: { position: 'relative', 'max-width': '960px' } }, img, overlay);
    const tiles = {
      fps: h('span.big', { testid: 'live-fps' }, '0'),
      sourceFps: h('span.big', { testid: 'live-source-fps' }, '0'),
      dropped: h('span.big', { testid: 'live-dropped' }, '0'),
      boxes: h('span.big', { testid: 'live-boxes' }, '0'),
    };
    const latency = Object.fromEntries(STAGES.map(([key]) => [key, {
      median: h('td.num', { testid: `live-latency-${key}` }, '–'), p99: h('td.num', '–'),
    }]));
    const latencyTable = h('table.table.compact', { testid: 'live-latency' },
      h('thead', h('tr', h('th', 'Stage'), h('th.num', 'median'), h('th.num', 'p99'))),
      h('tbody', STAGES.map(([key, label]) => h('tr', h('td', label), latency[key].median, latency[key].p99))));

    const startButton = h('button.primary', { type: 'button', testid: 'live-start', disabled: !canWrite }, 'Start');
    const stopButton = h('button', { type: 'button', testid: 'live-stop', disabled: !canWrite }, 'Stop');
    const toggle = async (action) => {
      try {
        const read = await ctx.api.post(`/camera/${action}`);
        settings.settings = read.settings;
        ctx.toast(action === 'start' ? 'Camera starting' : 'Camera stopping', 'info');
      } catch (err) {
        if (err instanceof ApiError) ctx.toast(err.detail, 'error');
        else throw err;
      }
    };
    startButton.addEventListener('click', () => toggle('start'));
    stopButton.addEventListener('click', () => toggle('stop'));

    const writable = datasets.filter((d) => canWrite && (ctx.user.role === 'admin' || d.owner_id === ctx.user.id || d.is_public));
    const captureSelect = h('select', { testid: 'live-capture-dataset' },
      writable.map((d) => h('option', { value: String(d.id) }, d.name)));
    const captureButton = h('button.primary', { type: 'button', testid: 'live-capture', disabled: !writable.length },
      'Capture frame');
    captureButton.addEventListener('click', async () => {
      captureButton.disabled = true;
      try {
        const result = await ctx.api.post('/camera/capture', { dataset_id: Number(captureSelect.value) });
        const message = result.duplicate
          ? `This frame is already image ${result.image_id}`
          : `Saved as image ${result.image_id} with ${result.boxes} pre-label${result.boxes === 1 ? '' : 's'}`;
        ctx.toast(message, 'ok');
      } catch (err) {
        if (err instanceof ApiError) ctx.toast(err.detail, 'error');
        else throw err;
      } finally {
        captureButton.disabled = false;
      }
    });

    root.append(h('section', { testid: 'live-page' },
      h('div.toolbar', h('h1', 'Live camera'), stateBadge, modelNote,
        h('span', { style: { flex: '1' } }), startButton, stopButton),
      errorLine,
      h('div', { style: { display: 'flex', gap: '1rem', 'flex-wrap': 'wrap', 'align-items': 'flex-start' } },
        h('div.card', { style: { flex: '3 1 480px' } }, view),
        h('div', { style: { flex: '1 1 260px' } },
          h('div.stat-tiles',
            h('div.tile', tiles.fps, 'FPS'),
            h('div.tile', tiles.sourceFps, 'source FPS'),
            h('div.tile', tiles.dropped, 'dropped'),
            h('div.tile', tiles.boxes, 'boxes')),
          h('div.card', h('h2', 'Latency per stage'), latencyTable),
          h('div.card', h('h2', 'Capture into a dataset'),
            writable.length
              ? h('div.inline-form', h('label', 'Dataset', captureSelect), captureButton)
              : h('p.muted', 'No dataset you can add images to.')))),
      settingsForm(settings, ctx, writable, (saved) => { settings.settings = saved.settings; })));

    // The stream: one MJPEG connection; the browser decodes it natively.
    img.src = `${API_PREFIX}/camera/stream`;

    let lastFrameAt = 0;
    const onStatus = (status) => {
      setText(stateBadge, status.state);
      stateBadge.className = `badge ${status.state === 'running' ? 'reviewed' : status.state === 'offline' || status.state === 'error' ? 'muted' : 'labeled'}`;
      setText(modelNote, status.model_id ? `model ${status.model_name || status.model_id} · ${status.model_note}` : status.model_note);
      setText(errorLine, status.error || '');
      setText(tiles.fps, Number(status.fps || 0).toFixed(1));
      setText(tiles.sourceFps, Number(status.source_fps || 0).toFixed(1));
      setText(tiles.dropped, formatNumber(status.dropped));
      for (const [key] of STAGES) {
        const t = (status.timings || {})[key];
        setText(latency[key].median, t ? ms(t.median) : '–');
        setText(latency[key].p99, t ? ms(t.p99) : '–');
      }
      if (status.state !== 'running' && Date.now() - lastFrameAt > 2000) {
        overlay.getContext('2d').clearRect(0, 0, overlay.width, overlay.height);
        overlay.dataset.boxes = '0';
      }
    };

    let socket = null;
    let closed = false;
    let retry = null;
    const connect = () => {
      const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
      socket = new WebSocket(`${scheme}://${location.host}${API_PREFIX}/camera/ws`);
      socket.addEventListener('message', (event) => {
        const message = JSON.parse(event.data);
        if (message.type === 'status') {
          onStatus(message);
        } else if (message.type === 'frame') {
          lastFrameAt = Date.now();
          drawBoxes(overlay, message);
          setText(tiles.boxes, String(message.detections.length));
        }
      });
      socket.addEventListener('close', () => {
        if (!closed) retry = setTimeout(connect, 2000);
      });
    };
    connect();

    return () => {
      closed = true;
      clearTimeout(retry);
      if (socket) socket.close();
      img.removeAttribute('src'); // ends the MJPEG connection
      img.src = 'data:,';
    };
  },
};
