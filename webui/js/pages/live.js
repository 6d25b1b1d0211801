// Live: every camera as a tile (its latest frame once a second, state and verdict), and one camera large:
// the MJPEG stream with boxes and zones drawn from the WebSocket, a large OK/NG verdict, shift counters,
// start/stop/trigger, per-stage latency, zones drawn on the image, the rules editor and the settings.
// Tiles poll single JPEGs: a browser keeps only ~6 connections per host, one stream per page is the budget.

import { API_PREFIX, ApiError } from '../api.js';
import { clearOverlay, drawOverlay, zoneTool } from '../components/camera-overlay.js';
import { rulesEditor, saveCamera, settingsForm } from '../components/camera-settings.js';
import { modelText, sourceText } from '../components/camera-status-line.js';
import { shadowCard } from '../components/shadow-card.js';
import { formatNumber } from '../components/format.js';
import { discoveryList, genicamPanel } from '../components/genicam-settings.js';
import { say } from '../components/message.js';
import { confirmDialog, h, setText } from '../dom.js';

const STAGES = [
  ['wait', 'Waiting for a frame'], ['capture', 'Capture (retrieve)'], ['wait_model', 'Waiting for the model'],
  ['inference', 'Inference'], ['postprocess', 'Postprocess'], ['rules', 'Rules'], ['encode', 'Encode'],
  ['frame_age', 'Frame age at publish'],
];
const ms = (v) => (v === undefined || v === null ? '–' : `${Number(v).toFixed(1)} ms`);
const LIVE_STATES = ['running', 'reconnecting', 'starting'];
const FRAME_STALE_S = 3; // as the box's X-Frame-Stale; ages are measured on the box's clock, not the browser's

// Age in seconds of the camera's newest frame by its status (both times from the box), null without one.
const statusFrameAge = (status) => (status.last_frame_at ? Math.max(0, status.updated_at - status.last_frame_at) : null);

function startOfDay() {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  return d;
}

function localInput(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function verdictStyle(el, verdict) {
  const colors = { ok: '#1f9d55', ng: '#d64545' };
  el.style.background = colors[verdict] || 'var(--bg2)';
  el.style.color = verdict ? '#fff' : 'var(--muted)';
  setText(el, verdict ? verdict.toUpperCase() : '—');
  el.dataset.verdict = verdict || '';
}

function addCameraForm(ctx) {
  const error = h('p.form-error', { testid: 'camera-add-error', role: 'alert' });
  const type = h('select', { name: 'source_type', testid: 'camera-add-type' }, ['file', 'url', 'v4l2', 'gstreamer', 'gige'].map((t) => h('option', { value: t }, t)));
  const source = h('input', { name: 'source', testid: 'camera-add-source', placeholder: '/media/usb/line.mp4' });
  const name = h('input', { name: 'name', required: true, testid: 'camera-add-name' });
  const discovery = discoveryList(ctx, (found) => {
    source.value = found.source;
    if (!name.value) name.value = `${found.model} ${found.serial}`;
  });
  type.addEventListener('change', () => { discovery.style.display = type.value === 'gige' ? '' : 'none'; });
  discovery.style.display = 'none';
  const form = h('form.inline-form', { testid: 'camera-add' },
    h('label', 'Name', name), h('label', 'Source type', type),
    h('label', { style: { flex: '1 1 18rem' } }, 'Source', source),
    h('button.primary', { type: 'submit', testid: 'camera-add-submit' }, 'Add camera'), error, discovery);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    setText(error, '');
    const v = Object.fromEntries(new FormData(form).entries());
    try {
      const created = await ctx.api.post('/cameras', { name: v.name.trim(), settings: { source_type: v.source_type, source: v.source.trim() } });
      ctx.navigate(`#/live?camera=${created.id}`);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      setText(error, err.detail);
    }
  });
  return form;
}

function tile(camera, selected, ctx) {
  const img = h('img', { alt: '', style: { width: '100%', height: '90px', 'object-fit': 'contain', background: '#000', display: 'block' } });
  const verdict = h('span.badge', { testid: 'tile-verdict' });
  const state = h('span.muted', { testid: 'tile-state' }, '…');
  const stale = h('span.badge.warn', { testid: 'tile-stale', hidden: true });
  const el = h('button', { type: 'button', testid: `camera-tile-${camera.id}`, onclick: () => ctx.navigate(`#/live?camera=${camera.id}`),
    style: { width: '170px', padding: '.3rem', 'text-align': 'left', border: selected ? '2px solid var(--accent, #3b82f6)' : '1px solid var(--line)', background: 'var(--bg2)', 'border-radius': 'var(--radius)' } },
  img, h('strong.tile-name', { testid: 'tile-name', title: camera.name }, camera.name), h('div.tile-caption', verdict, state, stale));
  el.dataset.stale = 'false';
  // The frame with the box's word on its age: during an outage the last picture stays, marked stale.
  const showFrame = async () => {
    const response = await fetch(`${API_PREFIX}/cameras/${camera.id}/frame`, { credentials: 'same-origin', cache: 'no-store' }).catch(() => null);
    if (!response || !response.ok) { img.removeAttribute('src'); img.style.visibility = 'hidden'; return; }
    const isStale = response.headers.get('X-Frame-Stale') === 'true';
    const age = Math.round(Number(response.headers.get('X-Frame-Age-Ms') || 0) / 1000);
    const url = URL.createObjectURL(await response.blob());
    img.onload = () => URL.revokeObjectURL(url);
    img.src = url;
    img.style.visibility = 'visible';
    img.style.opacity = isStale ? '0.35' : '1';
    el.dataset.stale = String(isStale);
    stale.hidden = !isStale;
    setText(stale, isStale ? `stale ${age} s` : '');
  };
  el.update = (status) => {
    setText(state, status.state);
    const live = status.state === 'running';
    verdictStyle(verdict, live ? status.verdict : null);
    if (live || status.state === 'reconnecting') showFrame();
    else {
      img.removeAttribute('src');
      img.style.visibility = 'hidden';
      el.dataset.stale = 'false';
      stale.hidden = true;
    }
  };
  return el;
}

export default {
  route: '#/live',
  title: 'Live',
  nav: 'Live',
  async render(root, params, ctx) {
    const [cameras, models] = await Promise.all([
      ctx.api.get('/cameras', { signal: ctx.signal }),
      ctx.api.get('/models', { signal: ctx.signal }).catch(() => []),
    ]);
    const isAdmin = ctx.user && ctx.user.role === 'admin';
    const canWrite = ctx.user && ctx.user.role !== 'viewer';
    const chosen = Number(ctx.query.get('camera')) || (cameras[0] && cameras[0].id);
    const camera = cameras.find((c) => c.id === chosen) || cameras[0];
    const tiles = cameras.map((c) => tile(c, camera && c.id === camera.id, ctx));
    const timers = [];
    const page = h('section', { testid: 'live-page' },
      h('div.toolbar', h('h1', 'Live'), h('span', { style: { flex: '1' } })),
      h('div', { testid: 'camera-grid', style: { display: 'flex', gap: '.6rem', 'flex-wrap': 'wrap', 'margin-bottom': '.8rem' } }, tiles),
      isAdmin ? h('details.card', { open: !cameras.length }, h('summary', 'Add a camera'), addCameraForm(ctx)) : null);
    root.append(page);
    const pollTiles = async () => {
      try {
        const statuses = await ctx.api.get('/cameras/status', { signal: ctx.signal });
        for (const status of statuses) tiles.find((t) => t.dataset.testid === `camera-tile-${status.camera_id}`)?.update(status);
      } catch (err) {
        if (!(err instanceof ApiError)) return;
      }
    };
    pollTiles();
    timers.push(setInterval(pollTiles, 1000));
    if (!camera) {
      page.append(h('p.muted', { testid: 'live-empty' }, isAdmin ? 'No camera yet: add one above.' : 'No camera yet: an admin adds cameras.'));
      return () => timers.forEach(clearInterval);
    }

    // --- the selected camera -------------------------------------------------------------------------
    const stateBadge = h('span.badge', { testid: 'live-state' }, '…');
    const modelNote = h('span.muted', { testid: 'live-model' });
    const sourceNote = h('span.warn', { testid: 'live-source' });
    const errorLine = h('p.form-error', { testid: 'live-error', role: 'status' });
    const staleLine = h('p.badge.warn', { testid: 'live-stale', hidden: true });
    const actionError = h('p.form-error', { testid: 'live-action-error', role: 'alert' });
    const img = h('img', { testid: 'live-stream', alt: `${camera.name} live`,
      style: { display: 'block', 'max-width': '100%', 'max-height': 'calc(100vh - 230px)', 'min-height': '120px', background: '#000' } });
    const overlay = h('canvas', { testid: 'live-overlay', style: { position: 'absolute', left: '0', top: '0', width: '100%', height: '100%', 'pointer-events': 'none' } });
    const placeholder = h('p.muted', { testid: 'live-placeholder', style: { padding: '2rem' } }, 'Not streaming.');
    const view = h('div', { style: { position: 'relative', display: 'inline-block', 'max-width': '100%' } }, img, overlay);
    const verdict = h('div', { testid: 'live-verdict', style: { 'font-size': '3rem', 'font-weight': '700', 'text-align': 'center', padding: '.4rem', 'border-radius': 'var(--radius)' } });
    const failing = h('p', { testid: 'live-failing', style: { 'min-height': '1.2em', margin: '.3rem 0' } });
    // Where the camera's events go when the data disk is full or below its reserve (verdicts go on regardless).
    const storageNote = h('p.warn', { testid: 'live-storage', role: 'status', hidden: true });
    const since = h('input', { type: 'datetime-local', testid: 'live-since', value: localInput(startOfDay()) });
    const counts = { ok: h('span.big', { testid: 'live-count-ok' }, '0'), ng: h('span.big', { testid: 'live-count-ng' }, '0') };
    const tiles2 = { fps: h('span.big', { testid: 'live-fps' }, '–'), sourceFps: h('span.big', { testid: 'live-source-fps' }, '–'),
      dropped: h('span.big', { testid: 'live-dropped' }, '–'), boxes: h('span.big', { testid: 'live-boxes' }, '–') };
    const latency = Object.fromEntries(STAGES.map(([key]) => [key, { median: h('td.num', { testid: `live-latency-${key}` }, '–'), p99: h('td.num', '–') }]));
    const button = (label, testid, enabled, cls = 'button') => h(cls, { type: 'button', testid, disabled: !enabled }, label);
    const startButton = button('Start', 'live-start', canWrite, 'button.primary');
    const stopButton = button('Stop', 'live-stop', canWrite);
    const triggerButton = button('Trigger inspection', 'live-trigger', canWrite);
    const drawBar = h('div.inline-form', { testid: 'zone-bar', style: { display: 'none', 'margin-bottom': '.5rem' } });
    const stage = h('div.card', { testid: 'live-stage', style: { flex: '3 1 480px', 'text-align': 'center' } }, drawBar, view, placeholder);
    const genicam = genicamPanel();
    const form = settingsForm(ctx, camera, models, () => { editor.refresh(); redraw(); });

    let frame = null;
    let draft = null;
    let streaming = false;
    const redraw = () => { if (frame) drawOverlay(overlay, frame, camera.settings.zones, draft && draft.points); };
    const stopStream = () => {
      streaming = false;
      img.removeAttribute('src');
      img.style.display = 'none';
      placeholder.style.display = '';
      frame = null;
      clearOverlay(overlay);
      for (const t of Object.values(tiles2)) setText(t, '–');
    };
    const startStream = () => {
      if (streaming) return;
      streaming = true;
      img.style.display = 'block';
      placeholder.style.display = 'none';
      img.src = `${API_PREFIX}/cameras/${camera.id}/stream`;
    };

    const act = async (action) => {
      setText(actionError, '');
      try {
        if (action === 'trigger') {
          const accepted = await ctx.api.post(`/cameras/${camera.id}/trigger`);
          say(actionError, `Trigger ${accepted.trigger_id} sent…`, 'info');
          for (let i = 0; i < 40; i += 1) {
            await new Promise((r) => setTimeout(r, 250));
            const t = await ctx.api.get(`/cameras/${camera.id}/triggers/${accepted.trigger_id}`);
            if (t.status === 'done') {
              const event = await ctx.api.get(`/events/${t.event_id}`);
              say(actionError, `Inspection ${event.id}: ${event.verdict.toUpperCase()}${event.failing_rules.length ? ` (${event.failing_rules.join(', ')})` : ''}`, 'ok');
              return;
            }
            if (t.status === 'expired') { say(actionError, `Trigger ${t.id} expired: ${t.detail}`); return; }
          }
        } else {
          Object.assign(camera, await ctx.api.post(`/cameras/${camera.id}/${action}`));
          if (action === 'stop') stopStream();
        }
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        say(actionError, err.detail);
      }
    };
    startButton.addEventListener('click', () => act('start'));
    stopButton.addEventListener('click', () => act('stop'));
    triggerButton.addEventListener('click', () => act('trigger'));

    const editor = rulesEditor(ctx, camera, {
      models,
      onSaved: () => { editor.refresh(); redraw(); },
      onDrawZone: () => {
        if (!frame) { setText(editor.error, 'Start the camera first: zones are drawn on the live image.'); return; }
        const name = h('input', { testid: 'zone-name', placeholder: 'zone name', required: true });
        const finish = h('button.primary', { type: 'button', testid: 'zone-finish' }, 'Finish zone');
        const cancel = h('button', { type: 'button', testid: 'zone-cancel' }, 'Cancel');
        drawBar.replaceChildren(h('span', 'Click the corners on the image, then'), name, finish, cancel);
        drawBar.style.display = '';
        stage.scrollIntoView({ block: 'start' }); // the button is below the fold: show the bar and the image
        name.focus({ preventScroll: true });
        draft = zoneTool(overlay, {
          onChange: redraw,
          onFinish: async (points) => {
            drawBar.style.display = 'none';
            draft = null;
            const zoneName = name.value.trim() || `zone ${camera.settings.zones.length + 1}`;
            if (points && await saveCamera(ctx, camera, { settings: { zones: [...camera.settings.zones, { name: zoneName, points }] } }, editor.error)) {
              ctx.toast(`Zone "${zoneName}" saved`, 'ok');
              editor.refresh();
            }
            redraw();
          },
        });
        finish.addEventListener('click', () => draft && draft.finish());
        cancel.addEventListener('click', () => draft && draft.cancel());
      },
    });

    const shadow = shadowCard(ctx, camera, models);
    page.append(h('div', { testid: 'live-camera' },
      h('div.toolbar', h('h2', camera.name), stateBadge, modelNote, sourceNote, h('span', { style: { flex: '1' } }), startButton, stopButton, triggerButton,
        isAdmin ? h('button', { type: 'button', testid: 'camera-delete', onclick: async () => {
          if (!(await confirmDialog('Delete camera', `Delete "${camera.name}"? Its events stay in the history.`))) return;
          await ctx.api.del(`/cameras/${camera.id}`);
          ctx.navigate('#/live');
        } }, 'Delete') : null),
      actionError, errorLine, staleLine,
      h('div', { style: { display: 'flex', gap: '1rem', 'flex-wrap': 'wrap', 'align-items': 'flex-start' } },
        stage,
        h('div', { style: { flex: '1 1 260px' } },
          verdict, failing, storageNote,
          h('div.card', h('h3', 'Shift counters'), h('label', 'since', since),
            h('div.stat-tiles', h('div.tile', counts.ok, 'OK'), h('div.tile', counts.ng, 'NG'))),
          h('div.stat-tiles', h('div.tile', tiles2.fps, 'FPS'), h('div.tile', tiles2.sourceFps, 'source FPS'),
            h('div.tile', tiles2.dropped, 'dropped'), h('div.tile', tiles2.boxes, 'boxes')),
          h('details.card', h('summary', 'Latency per stage'), h('table.table.compact', { testid: 'live-latency' },
            h('thead', h('tr', h('th', 'Stage'), h('th.num', 'median'), h('th.num', 'p99'))),
            h('tbody', STAGES.map(([key, label]) => h('tr', h('td', label), latency[key].median, latency[key].p99))))),
          genicam)),
      editor,
      shadow.el,
      form));
    stopStream();

    const onStatus = (status) => {
      setText(stateBadge, status.state);
      stateBadge.className = `badge ${status.state === 'running' ? 'reviewed' : ['offline', 'error', 'stopped'].includes(status.state) ? 'muted' : 'labeled'}`;
      setText(modelNote, modelText(status));
      setText(sourceNote, sourceText(status));
      setText(errorLine, status.error || '');
      storageNote.hidden = !status.storage_note;
      setText(storageNote, status.storage_note ? `${status.storage_note[0].toUpperCase()}${status.storage_note.slice(1)}.` : '');
      startButton.disabled = !canWrite || status.state !== 'stopped';
      stopButton.disabled = !canWrite || status.state === 'stopped';
      startButton.title = status.state === 'stopped' ? 'start the camera' : 'the camera is on';
      genicam.update(status);
      if (status.genicam) form.genicam.showRanges(status.genicam.ranges);
      const age = statusFrameAge(status);
      const isStale = age !== null && age > FRAME_STALE_S && LIVE_STATES.includes(status.state);
      staleLine.hidden = !isStale;
      setText(staleLine, isStale ? `No live picture: the newest frame is ${Math.round(age)} s old` : '');
      const live = status.state === 'running' && !isStale;
      if (live) startStream(); else if (streaming || frame) stopStream();
      if (!live) {
        verdictStyle(verdict, null);
        setText(failing, '');
      }
      if (live) {
        setText(tiles2.fps, Number(status.fps || 0).toFixed(1));
        setText(tiles2.sourceFps, Number(status.source_fps || 0).toFixed(1));
        setText(tiles2.dropped, formatNumber(status.dropped));
      }
      for (const [key] of STAGES) {
        const t = live ? (status.timings || {})[key] : null;
        setText(latency[key].median, t ? ms(t.median) : '–');
        setText(latency[key].p99, t ? ms(t.p99) : '–');
      }
    };
    const pollCounters = async () => {
      const from = new Date(since.value || startOfDay()).getTime() / 1000;
      try {
        const c = await ctx.api.get(`/events/counters?since=${from}&camera_id=${camera.id}`, { signal: ctx.signal });
        const mine = c.cameras[0] || { ok: 0, ng: 0 };
        setText(counts.ok, formatNumber(mine.ok));
        setText(counts.ng, formatNumber(mine.ng));
      } catch (err) {
        if (!(err instanceof ApiError)) return;
      }
    };
    since.addEventListener('change', pollCounters);
    pollCounters();
    timers.push(setInterval(pollCounters, 2000));

    let socket = null;
    let closed = false;
    let retry = null;
    const connect = () => {
      const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
      socket = new WebSocket(`${scheme}://${location.host}${API_PREFIX}/cameras/${camera.id}/ws`);
      socket.addEventListener('message', (event) => {
        const message = JSON.parse(event.data);
        if (message.type === 'status') onStatus(message);
        else if (message.type === 'frame' && streaming) {
          frame = message;
          redraw();
          verdictStyle(verdict, message.verdict);
          setText(failing, message.failing_rules.length ? `Failing: ${message.failing_rules.join(', ')}` : '');
          setText(tiles2.boxes, String(message.detections.length));
          overlay.dataset.seq = String(message.seq);
        }
      });
      socket.addEventListener('close', () => { if (!closed) retry = setTimeout(connect, 2000); });
    };
    connect();

    return () => {
      closed = true;
      shadow.stop();
      clearTimeout(retry);
      timers.forEach(clearInterval);
      if (socket) socket.close();
      img.removeAttribute('src'); // ends the MJPEG connection
      img.src = 'data:,';
    };
  },
};
