// What judged an inspection event: the model (id and version) and the revision of the camera's settings that was in
// force (its rules, the failing ones marked, its zones, thresholds, mode and every other setting, camera features
// included), read from GET /cameras/{id}/revisions/{revision}. Used by the Events page.

import { ApiError } from '../api.js';
import { h } from '../dom.js';

const WRAP = { 'overflow-wrap': 'anywhere' };

function condition(rule) {
  if (rule.condition === 'between') return `between ${rule.count} and ${rule.max_count ?? rule.count}`;
  if (rule.condition === 'present' || rule.condition === 'absent') return rule.condition;
  return `${rule.condition} ${rule.count}`;
}

function rulesTable(rules, failing) {
  if (!rules.length) return h('p.muted', 'No rules: every inspection was OK.');
  return h('table.table.compact', { testid: 'revision-rules' },
    h('thead', h('tr', ['Rule', 'Zone', 'Classes', 'Confidence', 'Condition'].map((t) => h('th', t)))),
    h('tbody', rules.map((rule) => h('tr', {
      testid: 'revision-rule',
      class: failing.includes(rule.name) ? 'row-error' : '',
      dataset: { name: rule.name, failing: String(failing.includes(rule.name)) },
    }, h('td', rule.name), h('td', rule.zone || 'whole frame'), h('td', { style: WRAP }, rule.classes.join(', ') || 'any'),
    h('td', `≥ ${rule.min_confidence}`), h('td', condition(rule))))));
}

function otherSettings(settings) {
  const shown = Object.entries(settings).filter(([key]) => key !== 'rules' && key !== 'zones');
  return h('ul.plain', { testid: 'revision-settings', style: WRAP }, shown.map(([key, value]) =>
    h('li', h('span.muted', `${key.replace(/_/g, ' ')}: `), typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value))));
}

/** A card that fills itself with what judged `event`; `api` is ctx.api. */
export function judgedBy(api, event) {
  const model = event.model_id
    ? h('p', { testid: 'event-model' }, `Model ${event.model_id}`, event.model_version ? h('span.muted', ` · ${event.model_version}`) : null)
    : h('p.muted', { testid: 'event-model' }, 'No model ran.');
  const box = h('div', { testid: 'event-revision' }, h('p.muted', 'Loading the settings that judged it…'));
  const card = h('div.card', { testid: 'event-judged-by' }, h('h3', 'What judged it'), model, box);
  if (event.settings_revision === null || event.settings_revision === undefined) {
    box.replaceChildren(h('p.muted', 'This event was recorded before settings revisions were kept.'));
    return card;
  }
  api.get(`/cameras/${event.camera_id}/revisions/${event.settings_revision}`).then((revision) => {
    const s = revision.settings;
    const since = new Date(revision.created_at).toLocaleString();
    box.replaceChildren(
      h('p', { testid: 'revision-title' }, `Settings revision ${revision.id}`,
        h('span.muted', ` · from ${since}${revision.created_by ? ` by ${revision.created_by}` : ''}`),
        h(`span.badge${revision.current ? '' : '.muted'}`, { style: { 'margin-left': '.5rem' } },
          revision.current ? 'current' : 'replaced since')),
      h('h4', 'Rules'), rulesTable(s.rules, event.failing_rules),
      h('h4', 'Zones'), s.zones.length
        ? h('ul.plain', { testid: 'revision-zones' }, s.zones.map((z) => h('li', { testid: 'revision-zone' }, `${z.name}: ${z.points.length} points`)))
        : h('p.muted', 'No zones: rules count the whole frame.'),
      h('h4', 'Other settings'), otherSettings(s));
  }).catch((err) => {
    if (!(err instanceof ApiError)) throw err;
    box.replaceChildren(h('p.muted', { testid: 'revision-missing' },
      err.status === 404 ? `Settings revision ${event.settings_revision} is no longer kept.` : err.detail));
  });
  return card;
}
