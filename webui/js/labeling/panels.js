// The labeling page's layout: the dataset tabs, the info bar (name, position, status, zoom, save state), the
// action buttons, the class and box lists, the stage holding the canvas, and the help overlay.

import { datasetTabs } from '../components/dataset-tabs.js';
import { h } from '../dom.js';
import { isPending } from './canvas/geometry.js';
import { SHORTCUTS } from './keys.js';

/**
 * createPanels({ dataset, index, canWrite, commands, labeler }) -> { nodes, canvas, actions, side, ... }
 * `labeler` is a function returning the canvas tool (it is made after the canvas); `commands` are called by the
 * buttons: { go(step), nextUnlabeled(), copyPrevious(), markReviewed(), deleteImage() }.
 */
export function createPanels({ dataset, index, canWrite, commands, labeler }) {
  const classes = dataset.classes;
  const canvas = h('canvas', { testid: 'label-canvas', tabindex: 0, 'aria-label': 'image to label' });
  const stage = h('div.stage', { testid: 'stage' }, canvas);
  const nameEl = h('span.image-name', { testid: 'image-name' });
  const posEl = h('span.muted', { testid: 'image-position' });
  const statusEl = h('span.badge', { testid: 'image-status' });
  const saveEl = h('span.save-state', { testid: 'save-state', dataset: { state: 'saved' } }, 'saved');
  const zoomEl = h('span.muted', { testid: 'zoom-level' });
  const nextClassEl = h('span.small.muted', { testid: 'next-class' });
  const classList = h('ol.class-list', { testid: 'class-list' });
  const boxList = h('ol.box-list', { testid: 'box-list' });
  const help = h('div.help-overlay.hidden', { testid: 'help-overlay', role: 'dialog' },
    h('div.card', h('h2', 'Keyboard shortcuts'),
      h('table.keys', SHORTCUTS.map(([k, v]) => h('tr', h('td', h('kbd', k)), h('td', v)))),
      h('p.muted', 'Every change is saved automatically. Press ? or Esc to close.')));
  const button = (text, testid, onclick, title) => h('button', { type: 'button', testid, onclick, title }, text);
  const actions = h('div.label-actions',
    button('‹ Prev', 'prev-image', () => commands.go(-1), 'A or ←'),
    button('Next ›', 'next-image', () => commands.go(1), 'D or →'),
    button('Next unlabeled', 'next-unlabeled', () => commands.nextUnlabeled(), 'N'),
    canWrite ? button('Copy previous', 'copy-previous', () => commands.copyPrevious(), 'C') : null,
    canWrite ? button('Mark reviewed', 'mark-reviewed', () => commands.markReviewed(), 'R') : null,
    button('Fit', 'zoom-fit', () => labeler().fit(), 'F'),
    button('100 %', 'zoom-actual', () => labeler().actualSize(), '0'),
    button('?', 'help-button', () => toggleHelp(), 'keyboard shortcuts'),
    h('span.spacer'),
    canWrite ? h('button.danger', { type: 'button', testid: 'delete-image', onclick: () => commands.deleteImage(),
      title: 'delete this image from the dataset' }, 'Delete image') : null);
  const side = h('aside.label-side', { testid: 'label-side' },
    h('section', h('h3', 'Classes'), classList, nextClassEl),
    h('section', h('h3', 'Boxes'), boxList),
    h('section.small.muted', 'Press ? for shortcuts.'));
  const nodes = [
    datasetTabs(dataset, 'label'),
    h('div.label-bar', nameEl, posEl, statusEl, h('span.spacer'), zoomEl, saveEl),
    actions,
    h('div.labeler', side, stage),
    help,
  ];

  if (!classes.length) {
    stage.replaceChildren(h('p.empty', { testid: 'no-classes' }, 'This dataset has no classes yet. ',
      h('a', { href: `#/datasets/${dataset.id}/settings` }, 'Add classes in the settings'), ' first.'));
  }

  function toggleHelp(force) {
    const hidden = force === undefined ? !help.classList.contains('hidden') : !force;
    help.classList.toggle('hidden', hidden);
  }
  help.addEventListener('mousedown', () => toggleHelp(false));

  // 'active': the class of the next box drawn; 'of-selected': the class of the box selected now.
  function renderClasses() {
    const tool = labeler();
    const sel = tool.boxes[tool.selected];
    nextClassEl.textContent = classes[tool.activeClass] ? `next box: ${classes[tool.activeClass].name}` : '';
    classList.replaceChildren(...classes.map((c, i) => h('li', {
      testid: 'class-item', class: [i === tool.activeClass ? 'active' : '', sel && sel.class_id === i ? 'of-selected' : ''].join(' '),
      dataset: { classId: i }, style: { '--chip': c.color }, onclick: () => tool.setClass(i),
      title: sel ? 'class of the next box, and of the selected box' : 'class of the next box',
    }, h('kbd', i < 9 ? String(i + 1) : ''), h('span.swatch'), h('span.name', c.name))));
  }

  const boxesShown = []; // called after each renderBoxes (suggestions.js lists the proposals)

  /** A person's boxes (proposals are listed by suggestions.js until accepted). */
  function renderBoxes() {
    const tool = labeler();
    for (const listener of boxesShown) listener();
    const mine = tool.boxes.map((b, i) => [b, i]).filter(([b]) => !isPending(b));
    boxList.replaceChildren(...mine.map(([b, i]) => {
      const c = classes[b.class_id] || { name: `class ${b.class_id}`, color: '#fff' };
      return h('li', {
        testid: 'box-item', class: i === tool.selected ? 'active' : '', style: { '--chip': c.color },
        onclick: () => tool.select(i),
      }, h('span.swatch'), h('span.name', c.name),
      h('span.muted.small', `${Math.round(b.x2 - b.x1)}×${Math.round(b.y2 - b.y1)}`));
    }));
    if (!mine.length) boxList.append(h('li.muted', 'No boxes. Drag on the image to draw one.'));
  }

  /** Name, position in the list and status of the image on screen. */
  function renderInfo(session) {
    if (!session) return;
    nameEl.textContent = session.meta.original_name;
    const pos = index.indexOf(session.id);
    posEl.textContent = pos >= 0 ? `${pos + 1} / ${index.total}` : '';
    statusEl.textContent = session.status;
    statusEl.className = `badge ${session.status}`;
  }

  return {
    nodes,
    canvas,
    stage,
    actions,
    side,
    renderClasses,
    renderBoxes,
    onBoxesRendered: (listener) => boxesShown.push(listener),
    renderInfo,
    toggleHelp,
    helpOpen: () => !help.classList.contains('hidden'),
    setSaveState(state, text = state) {
      saveEl.dataset.state = state;
      saveEl.textContent = text;
    },
    saveState: () => saveEl.dataset.state,
    showZoom() {
      zoomEl.textContent = `${Math.round(labeler().scale * 100)} %`;
    },
    showNoImages() {
      stage.replaceChildren(h('p.empty', { testid: 'no-images' }, 'No images to label. ',
        h('a', { href: `#/datasets/${dataset.id}` }, 'Upload some first.')));
    },
  };
}
