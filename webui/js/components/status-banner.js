// The banner under the top bar that says when the box cannot do its main job: no worker (jobs wait), a worker
// that cannot train here, no camera process. Polls GET /system/processes while someone is logged in.

import { api } from '../api.js';
import { clear, h } from '../dom.js';
import { inline } from './markdown.js';

const EVERY_MS = 15000;
let timer = null;
let running = false;

async function refresh(target) {
  try {
    const status = await api.get('/system/processes', { redirectOn401: false });
    render(target, status.warnings || []);
  } catch {
    render(target, ['The appliance is not answering; retrying.']);
  }
}

function render(target, warnings) {
  clear(target);
  target.hidden = warnings.length === 0;
  for (const text of warnings) {
    // The warnings name commands in `backticks`: shown as code, never as literal backticks.
    target.append(h('p', { testid: 'status-warning', role: 'status' }, ...inline(`${text[0].toUpperCase()}${text.slice(1)}.`)));
  }
}

/** Start (or restart) polling; call after login. */
export function startStatusBanner() {
  const target = document.getElementById('status-banner');
  if (!target) return;
  stopStatusBanner();
  running = true;
  const tick = async () => {
    await refresh(target);
    if (running) timer = setTimeout(tick, EVERY_MS);
  };
  tick();
}

/** Stop polling and hide the banner (logout, session expired). */
export function stopStatusBanner() {
  running = false;
  if (timer) clearTimeout(timer);
  timer = null;
  const target = document.getElementById('status-banner');
  if (target) render(target, []);
}
