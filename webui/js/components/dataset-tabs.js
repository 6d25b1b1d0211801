// The head of every page of one dataset: its name and the tabs (images, label, statistics, settings, transfer).

import { h } from '../dom.js';

/** Tabs shown on every page of one dataset. */
export function datasetTabs(dataset, active) {
  const tab = (key, href, text) => h('a', { href, class: key === active ? 'active' : '', testid: `tab-${key}` }, text);
  return h('div.dataset-head',
    h('h1', { testid: 'dataset-title' }, dataset.name),
    h('nav.tabs', { testid: 'dataset-tabs' },
      tab('images', `#/datasets/${dataset.id}`, 'Images'),
      tab('label', `#/datasets/${dataset.id}/label/first`, 'Label'),
      tab('stats', `#/datasets/${dataset.id}/stats`, 'Statistics'),
      tab('settings', `#/datasets/${dataset.id}/settings`, 'Settings'),
      tab('transfer', `#/imports?dataset=${dataset.id}`, 'Import / export')));
}
