// The console shell: hash router, top navigation, session handling, and the PAGES registry.
// HOW TO ADD A PAGE: (1) write webui/js/pages/<name>.js with `export default { route: '#/things/:id', title: 'Things',
// nav: 'Things' (optional top-nav label), admin: true (optional), public: true (optional), render(root, params, ctx) }`;
// (2) import it below and add it to PAGES; (3) list each new module in the modulepreload links of webui/index.html.
// render() fills `root` with dom.js h(); params are the :route parts as strings; it may return a cleanup function
// (sync or async) called when the user leaves. ctx holds api, user, navigate(hash), setTitle(text), toast(msg, kind),
// query (URLSearchParams of '#/path?x=1'), signal (aborted on leave).
// pages/ holds page modules only: components live in components/ (dataset tabs, the virtual grid, charts,
// formats, dialogs); a page too big for one file gets a folder of its parts (labeling/ for pages/label.js).

import { api, ApiError, onUnauthorized } from './api.js';
import { startStatusBanner, stopStatusBanner } from './components/status-banner.js';
import { clear, h, toast } from './dom.js';
import datasetsPage from './pages/datasets.js';
import datasetPage from './pages/dataset.js';
import datasetSettingsPage from './pages/dataset-settings.js';
import importsPage from './pages/imports.js';
import labelPage from './pages/label.js';
import eventsPage from './pages/events.js';
import fleetPage from './pages/fleet.js';
import livePage from './pages/live.js';
import loginPage from './pages/login.js';
import manualPage from './pages/manual.js';
import setupPage from './pages/setup.js';
import statsPage from './pages/stats.js';
import { trainingListPage } from './pages/training.js';
import { trainingJobPage } from './pages/training-job.js';
import modelsPage from './pages/models.js';
import modelEvaluationPage from './pages/model-evaluation.js';
import modelComparePage from './pages/model-compare.js';
import outputsPage from './pages/outputs.js';
import tryItPage from './pages/tryit.js';
import usersPage from './pages/users.js';
import auditPage from './pages/audit.js';

export const PAGES = [
  setupPage,
  loginPage,
  datasetsPage,
  datasetPage,
  datasetSettingsPage,
  importsPage,
  labelPage,
  statsPage,
  trainingListPage,
  trainingJobPage,
  modelsPage,
  modelEvaluationPage,
  modelComparePage,
  tryItPage,
  livePage,
  eventsPage,
  outputsPage,
  fleetPage,
  usersPage,
  manualPage,
  auditPage,
];

const DEFAULT_ROUTE = '#/datasets';
const NEXT_KEY = 'appliance.next';

const state = {
  user: null,
  setup: null,
  cleanup: null,
  abort: null,
  renderSeq: 0,
};

function compile(route) {
  const parts = route.replace(/^#\/?/, '').split('/').filter(Boolean);
  return (path) => {
    const segments = path.split('/').filter(Boolean);
    if (segments.length !== parts.length) return null;
    const params = {};
    for (let i = 0; i < parts.length; i += 1) {
      if (parts[i].startsWith(':')) {
        try {
          params[parts[i].slice(1)] = decodeURIComponent(segments[i]);
        } catch {
          return null; // a malformed %-escape in a typed URL: "not found", not a blank page
        }
      } else if (parts[i] !== segments[i]) {
        return null;
      }
    }
    return params;
  };
}

const MATCHERS = PAGES.map((page) => ({ page, match: compile(page.route) }));

function parseHash(hash) {
  const raw = (hash || '').replace(/^#\/?/, '');
  const [path, query = ''] = raw.split('?');
  return { path, query: new URLSearchParams(query) };
}

export function navigate(hash, { replace = false } = {}) {
  if (!hash.startsWith('#')) hash = `#${hash}`;
  if (location.hash === hash) {
    route();
  } else if (replace) {
    history.replaceState(null, '', hash);
    route();
  } else {
    location.hash = hash;
  }
}

function renderNav(current) {
  const nav = document.getElementById('nav');
  const menu = document.getElementById('usermenu');
  clear(nav);
  clear(menu);
  if (!state.user) return;
  for (const page of PAGES) {
    if (!page.nav || (page.admin && state.user.role !== 'admin') || page.route.includes(':')) continue;
    const active = current && current.nav === page.nav;
    const slug = page.nav.toLowerCase().replace(/[^a-z0-9]+/g, '-');
    nav.append(h('a', { href: page.route, class: active ? 'active' : '', testid: `nav-${slug}` }, page.nav));
  }
  menu.append(
    h('span.user', { testid: 'current-user' }, state.user.username),
    h('span.role', { testid: 'current-role' }, state.user.role),
    h('button.link', { type: 'button', testid: 'logout', onclick: logout }, 'Log out'),
  );
}

async function logout() {
  await leavePage();
  try {
    await api.post('/auth/logout');
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
  }
  state.user = null;
  stopStatusBanner();
  navigate('#/login');
}

async function leavePage() {
  const cleanup = state.cleanup;
  state.cleanup = null;
  if (state.abort) state.abort.abort();
  state.abort = null;
  if (typeof cleanup === 'function') {
    try {
      // A page may save on leave; don't let a hung save block the console for long.
      await Promise.race([cleanup(), new Promise((r) => setTimeout(r, 4000))]);
    } catch (err) {
      console.warn('page cleanup failed', err);
    }
  }
}

function pageTitle(text) {
  document.title = text ? `${text} · Appliance` : 'Appliance console';
}

async function loadSession() {
  // One request that answers 200 logged in or not: the first load shows no failed request in the browser.
  const session = await api.get('/auth/session', { redirectOn401: false });
  state.setup = { needs_setup: session.setup_required, registration_enabled: session.registration_enabled };
  state.user = session.user;
  if (state.user) startStatusBanner();
}

async function route() {
  const seq = ++state.renderSeq;
  await leavePage();
  if (seq !== state.renderSeq) return;
  const { path, query } = parseHash(location.hash);
  if (!path) {
    history.replaceState(null, '', DEFAULT_ROUTE);
    return route();
  }
  if (state.setup === null || (state.user === null && !state.setup.needs_setup)) {
    try {
      await loadSession();
    } catch (err) {
      showFatal(err);
      return;
    }
    if (seq !== state.renderSeq) return;
  }
  let found = null;
  for (const { page, match } of MATCHERS) {
    const params = match(path);
    if (params) {
      found = { page, params };
      break;
    }
  }
  if (state.setup.needs_setup && (!found || found.page !== setupPage)) {
    history.replaceState(null, '', '#/setup');
    return route();
  }
  if (found && found.page === setupPage && !state.setup.needs_setup) {
    history.replaceState(null, '', state.user ? DEFAULT_ROUTE : '#/login');
    return route();
  }
  if (found && !found.page.public && !state.user) {
    sessionStorage.setItem(NEXT_KEY, location.hash);
    history.replaceState(null, '', '#/login');
    return route();
  }
  const root = document.getElementById('page');
  clear(root);
  root.className = '';
  renderNav(found && found.page);
  if (!found) {
    pageTitle('Not found');
    root.append(h('section.card', { testid: 'not-found' }, h('h1', 'Page not found'),
      h('p', h('a', { href: DEFAULT_ROUTE }, 'Back to the datasets'))));
    return;
  }
  if (found.page.admin && state.user && state.user.role !== 'admin') {
    pageTitle('Forbidden');
    root.append(h('section.card', { testid: 'forbidden' }, h('h1', 'Admins only'),
      h('p', 'This page is for administrators.')));
    return;
  }
  pageTitle(found.page.title);
  root.dataset.page = found.page.route;
  const abort = new AbortController();
  state.abort = abort;
  const ctx = makeContext(query, abort.signal);
  try {
    const cleanup = await found.page.render(root, found.params, ctx);
    if (seq !== state.renderSeq || abort.signal.aborted) {
      if (typeof cleanup === 'function') cleanup();
    } else {
      state.cleanup = cleanup || null;
    }
  } catch (err) {
    if (abort.signal.aborted) return;
    if (err instanceof ApiError && err.status === 401) return; // already on its way to login
    console.warn(err);
    root.append(h('section.card.error', { testid: 'page-error' }, h('h2', 'Something went wrong'),
      h('p', err instanceof ApiError ? err.detail : String(err && err.message ? err.message : err))));
  }
}

function makeContext(query, signal) {
  return {
    api,
    get user() {
      return state.user;
    },
    query,
    signal,
    navigate,
    toast,
    setTitle: pageTitle,
    /** After setup or login: remember the user and go where they were heading. */
    signedIn(user, { wasSetup = false } = {}) {
      state.user = user;
      startStatusBanner();
      if (wasSetup && state.setup) state.setup.needs_setup = false;
      const next = sessionStorage.getItem(NEXT_KEY);
      sessionStorage.removeItem(NEXT_KEY);
      navigate(next && !next.startsWith('#/login') && !next.startsWith('#/setup') ? next : DEFAULT_ROUTE);
    },
  };
}

function showFatal(err) {
  const root = document.getElementById('page');
  clear(root);
  root.append(h('section.card.error', { testid: 'fatal' }, h('h1', 'The appliance is not answering'),
    h('p', err instanceof ApiError ? err.detail : String(err)),
    h('button', { type: 'button', onclick: () => location.reload() }, 'Retry')));
}

onUnauthorized(() => {
  if (!state.user) return;
  state.user = null;
  stopStatusBanner();
  const { path } = parseHash(location.hash);
  if (!path.startsWith('login')) sessionStorage.setItem(NEXT_KEY, location.hash);
  navigate('#/login?expired=1');
});

window.addEventListener('hashchange', () => route());
route();
