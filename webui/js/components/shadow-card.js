// The Live page's shadow card for one camera: run a candidate model beside the camera's own on the same
// frames (on spare time only), its agreement over the last N inspections, "promote" once N were shadowed
// (one action) and the undo of the last promotion (one action), and the inspections where the two disagreed,
// each sendable to a dataset with either model's boxes as pre-labels.
//
//   const card = shadowCard(ctx, camera, models); parent.append(card.el); ... card.stop();

import { API_PREFIX, errorText } from '../api.js';
import { h, setText } from '../dom.js';
import { formatNumber, savedFrameText } from './format.js';

const POLL_MS = 2000;
const SHOWN_EVENTS = 8;

const percent = (part, whole) => (whole ? `${Math.round((100 * part) / whole)} %` : '–');

export function shadowCard(ctx, camera, models) {
  const { api } = ctx;
  const isAdmin = ctx.user.role === 'admin';
  const canWrite = ctx.user.role !== 'viewer';
  const body = h('div', { testid: 'shadow-body' });
  const error = h('p.form-error', { role: 'alert', testid: 'shadow-error' });
  const el = h('details.card', { testid: 'shadow-card', open: true }, h('summary', 'Shadow a candidate model'), error, body);
  let timer = null;
  let stopped = false;
  let datasets = null;
  const name = (id) => (models.find((m) => m.id === id) || { name: `model ${id}` }).name;

  let formOpen = false; // a "send to a dataset" form being filled in is not redrawn under the user's hand

  async function act(run) {
    setText(error, '');
    try {
      await run();
    } catch (err) {
      setText(error, errorText(err));
    }
    formOpen = false;
    await refresh();
  }

  function startForm(overview) {
    const choices = models.filter((m) => m.ready && m.id !== overview.camera_model_id);
    const select = h('select', { testid: 'shadow-model' }, choices.map((m) => h('option', { value: String(m.id) }, `${m.name} (#${m.id})`)));
    const windowInput = h('input', { type: 'number', min: '10', max: '100000', value: '200', testid: 'shadow-window', style: { width: '7rem' } });
    return h('div.inline-form',
      h('label', 'Candidate', select), h('label', 'Judge it over the last … inspections', windowInput),
      h('button', { type: 'button', testid: 'shadow-start', disabled: !canWrite || !choices.length,
        title: choices.length ? 'runs beside the camera\'s model, only on spare time' : 'no other exported model to shadow',
        onclick: () => act(() => api.put(`/cameras/${camera.id}/shadow`, { model_id: Number(select.value), window: Number(windowInput.value) })) },
      'Start shadow'));
  }

  function figures(shadow) {
    const s = shadow.status;
    if (!s) return h('p.muted', { testid: 'shadow-state' }, shadow.promote_note);
    return h('div',
      h('p', { testid: 'shadow-state' }, `${s.state}${s.backend ? ` (${s.backend})` : ''}${s.error ? `: ${s.error}` : ''}`),
      h('div.stat-tiles',
        h('div.tile', h('span.big', { testid: 'shadow-agreement' }, percent(s.window_agreed, s.window_shadowed)),
          `same verdict, ${s.window_agreed} of the last ${s.window_shadowed}`),
        h('div.tile', h('span.big', { testid: 'shadow-same-boxes' }, percent(s.window_same_boxes, s.window_shadowed)), 'same boxes'),
        h('div.tile', h('span.big', { testid: 'shadow-shadowed' }, formatNumber(s.shadowed)), `shadowed · ${formatNumber(s.skipped)} skipped`)),
      h('p.small.muted', { testid: 'shadow-boxes' },
        `Over the window: ${s.window_deployed_only} box(es) only the camera's model found, ${s.window_candidate_only} only the candidate, `
        + `${s.window_class_changed} of another class. Candidate inference ${s.candidate_ms === null ? '–' : `${s.candidate_ms} ms`}; `
        + `${s.disagreements_kept} disagreement(s) kept${s.disagreements_dropped ? `, ${s.disagreements_dropped} not stored` : ''}.`));
  }

  async function sendForm(event, line) {
    if (datasets === null) datasets = await api.get('/datasets').catch(() => []);
    const select = h('select', { testid: 'shadow-send-dataset' }, datasets.map((d) => h('option', { value: String(d.id) }, d.name)));
    const boxes = h('select', { testid: 'shadow-send-boxes' },
      h('option', { value: 'candidate' }, 'candidate\'s boxes'), h('option', { value: 'deployed' }, 'camera model\'s boxes'));
    const send = h('button.small', { type: 'button', testid: 'shadow-send', onclick: () => act(async () => {
      const saved = await api.post(`/shadow-events/${event.id}/dataset`, { dataset_id: Number(select.value), boxes: boxes.value });
      ctx.toast(savedFrameText(saved), 'ok');
    }) }, 'Send');
    line.replaceChildren(select, boxes, send);
    formOpen = true;
  }

  function eventRow(event) {
    const when = new Date(event.ts * 1000).toLocaleTimeString();
    const actions = h('span');
    return h('li', { testid: 'shadow-event', dataset: { id: String(event.id) } },
      `${when}: camera model ${event.deployed.verdict.toUpperCase()}, candidate ${event.candidate.verdict.toUpperCase()} `,
      event.has_snapshot ? h('a', { href: `${API_PREFIX}/shadow-events/${event.id}/snapshot`, target: '_blank', rel: 'noopener' }, 'frame') : null,
      ' ', canWrite && event.has_snapshot ? h('button.link', { type: 'button', testid: 'shadow-send-open', onclick: () => sendForm(event, actions) }, 'send to a dataset…') : null,
      actions);
  }

  function render(overview, events) {
    const running = overview.camera_model_id ? `${overview.camera_model_name} (#${overview.camera_model_id})` : 'no model';
    const parts = [h('p', { testid: 'shadow-camera-model' }, `This camera runs ${running}.`)];
    const shadow = overview.shadow;
    if (shadow) {
      parts.push(h('p', { testid: 'shadow-candidate' }, `Candidate: ${shadow.model_name} (#${shadow.model_id}), judged over the last ${shadow.window} inspections.`),
        figures(shadow),
        h('div.actions', { style: { 'justify-content': 'flex-start' } },
          h('button.primary', { type: 'button', testid: 'shadow-promote', disabled: !isAdmin || !shadow.can_promote,
            title: isAdmin ? shadow.promote_note : 'only an admin changes what a camera runs',
            onclick: () => act(() => api.post(`/cameras/${camera.id}/shadow/promote`)) }, 'Promote'),
          h('span.small.muted', { testid: 'shadow-promote-note' }, shadow.promote_note),
          h('button', { type: 'button', testid: 'shadow-stop', disabled: !canWrite,
            onclick: () => act(() => api.del(`/cameras/${camera.id}/shadow`)) }, 'Stop shadow')));
    } else {
      parts.push(startForm(overview));
    }
    const p = overview.last_promotion;
    if (p) {
      const from = p.from_model_id === null ? 'the box\'s deployed model' : name(p.from_model_id);
      parts.push(h('p', { testid: 'shadow-promotion' },
        `${p.undone_at ? 'Undone: promotion' : 'Promoted'} ${name(p.to_model_id)} (was ${from}) on ${p.promoted_at.slice(0, 16).replace('T', ' ')}, `
        + `after ${p.agreed} of ${p.shadowed} agreeing inspections. `,
        p.can_undo ? h('button.small', { type: 'button', testid: 'shadow-undo', disabled: !isAdmin,
          onclick: () => act(() => api.post(`/cameras/${camera.id}/shadow/promotions/${p.id}/undo`)) }, 'Undo') : null));
    }
    if (events.length) {
      parts.push(h('h4', 'Where they disagreed'), h('ul.small', { testid: 'shadow-events' }, events.map(eventRow)));
    }
    body.replaceChildren(...parts);
  }

  async function refresh() {
    clearTimeout(timer);
    if (stopped) return;
    try {
      if (!formOpen) {
        const [overview, page] = await Promise.all([api.get(`/cameras/${camera.id}/shadow`),
          api.get(`/cameras/${camera.id}/shadow/events?limit=${SHOWN_EVENTS}`)]);
        if (!stopped) render(overview, page.items);
      }
    } catch (err) {
      setText(error, errorText(err));
    }
    if (!stopped) timer = setTimeout(refresh, POLL_MS);
  }
  refresh();
  return { el, stop() { stopped = true; clearTimeout(timer); } };
}
