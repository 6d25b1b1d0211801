// The conflict dialog: another change was saved while this one was being edited. Both versions are shown side by
// side (previews and counts per class) and the user chooses; nothing is dropped silently.

import { h, modal } from '../dom.js';

/** Resolves with 'mine', 'theirs', or undefined when the dialog was closed without a choice. */
export function askWhichVersion({ name, mine, theirs, img, classes }) {
  const when = theirs.updated_at ? new Date(theirs.updated_at).toLocaleString() : 'unknown time';
  return modal('Someone else changed this image', (close) => [
    h('p', `While you were editing "${name}", another change was saved `
      + `(version ${theirs.version}, ${when}). Choose which boxes to keep.`),
    h('div.conflict-columns',
      h('div.conflict-side', { testid: 'conflict-mine' },
        h('h3', `Your version: ${mine.length} boxes`), preview(img, theirs.width, theirs.height, mine, classes),
        boxSummary(mine, classes)),
      h('div.conflict-side', { testid: 'conflict-theirs' },
        h('h3', `Saved version: ${theirs.boxes.length} boxes`),
        preview(img, theirs.width, theirs.height, theirs.boxes, classes), boxSummary(theirs.boxes, classes))),
    h('div.actions',
      h('button', { type: 'button', testid: 'conflict-take-theirs', onclick: () => close('theirs') },
        'Use the saved version'),
      h('button.primary', { type: 'button', testid: 'conflict-keep-mine', onclick: () => close('mine') },
        'Keep my version')),
  ], { testid: 'conflict-dialog', wide: true });
}

function boxSummary(boxes, classes) {
  const counts = new Map();
  for (const b of boxes) counts.set(b.class_id, (counts.get(b.class_id) || 0) + 1);
  return h('ul.summary', [...counts].map(([cid, n]) => h('li', h('span.swatch', {
    style: { '--chip': (classes[cid] || {}).color || '#fff' },
  }), `${(classes[cid] || { name: `class ${cid}` }).name}: ${n}`)));
}

function preview(img, width, height, boxes, classes) {
  const maxW = 360;
  const scale = Math.min(maxW / width, 240 / height, 1 * 4);
  const c = h('canvas.preview', { width: Math.round(width * scale), height: Math.round(height * scale) });
  const g = c.getContext('2d');
  if (img) g.drawImage(img, 0, 0, c.width, c.height);
  g.lineWidth = 2;
  for (const b of boxes) {
    g.strokeStyle = (classes[b.class_id] || {}).color || '#fff';
    g.strokeRect(b.x1 * scale, b.y1 * scale, (b.x2 - b.x1) * scale, (b.y2 - b.y1) * scale);
  }
  return c;
}
