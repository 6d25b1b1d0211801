// Box maths of the labeling canvas, in image pixels: normal form, comparison, resize handles and hit testing.

export const HIT = 6; // pick tolerance in screen px
export const MIN_BOX = 2; // smallest box kept, in image px
export const TAG_H = 16; // height of a box's class tag in screen px

export const round2 = (v) => Math.round(v * 100) / 100;
export const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

/** A box as the API stores it: corners ordered, coordinates to 1/100 px, a source and a confidence. */
export function normalizeBox(b) {
  return {
    class_id: b.class_id,
    x1: round2(Math.min(b.x1, b.x2)),
    y1: round2(Math.min(b.y1, b.y2)),
    x2: round2(Math.max(b.x1, b.x2)),
    y2: round2(Math.max(b.y1, b.y2)),
    source: b.source || 'manual',
    confidence: b.confidence ?? null,
  };
}

/** A model's proposal (a suggestion or a camera pre-label) that no person has accepted yet. */
export const isPending = (b) => b.source === 'model';

/** The same boxes in any order (class, corners and whether a person accepted them; confidence does not count). */
export function sameBoxes(a, b) {
  if (a.length !== b.length) return false;
  const key = (x) => [x.class_id, round2(x.x1), round2(x.y1), round2(x.x2), round2(x.y2), isPending(x)].join(',');
  const ka = a.map(key).sort();
  const kb = b.map(key).sort();
  return ka.every((k, i) => k === kb[i]);
}

/** The eight resize handles of a box in canvas px: [name, x, y], named by compass direction. */
export function handlesOf(labeler, box) {
  const a = labeler.toCanvas(box.x1, box.y1);
  const b = labeler.toCanvas(box.x2, box.y2);
  const mx = (a.x + b.x) / 2;
  const my = (a.y + b.y) / 2;
  return [
    ['nw', a.x, a.y], ['n', mx, a.y], ['ne', b.x, a.y], ['e', b.x, my],
    ['se', b.x, b.y], ['s', mx, b.y], ['sw', a.x, b.y], ['w', a.x, my],
  ];
}

/**
 * What is under the canvas point p:
 * - { kind: 'handle', handle, index }: a resize handle of the selected box;
 * - { kind: 'tag', index }: the class tag of a box (drawing.js records where each tag was painted);
 * - { kind: 'box', index, selected }: the smallest box containing p (nested boxes stay reachable);
 * - { kind: 'none' }.
 * Only the selected box moves under a drag: pointer.js draws a new box from any other box.
 */
export function hitTest(labeler, p) {
  const sel = labeler.boxes[labeler.selected];
  if (sel) {
    for (const [name, hx, hy] of handlesOf(labeler, sel)) {
      if (Math.abs(p.x - hx) <= HIT && Math.abs(p.y - hy) <= HIT) return { kind: 'handle', handle: name, index: labeler.selected };
    }
  }
  // Tags painted last lie on top: search from the end.
  const tags = labeler.tagRects || [];
  for (let i = tags.length - 1; i >= 0; i -= 1) {
    const t = tags[i];
    if (labeler.boxes[t.index] && p.x >= t.x && p.x <= t.x + t.w && p.y >= t.y && p.y <= t.y + t.h) {
      return { kind: 'tag', index: t.index };
    }
  }
  const q = labeler.toImage(p.x, p.y);
  const tol = HIT / labeler.scale;
  const inside = (b) => q.x >= b.x1 - tol && q.x <= b.x2 + tol && q.y >= b.y1 - tol && q.y <= b.y2 + tol;
  let best = -1;
  let bestArea = Infinity;
  labeler.boxes.forEach((b, i) => {
    const area = (b.x2 - b.x1) * (b.y2 - b.y1);
    // On equal areas the selected box wins, so a selected box can always be moved.
    if (inside(b) && (area < bestArea || (area === bestArea && i === labeler.selected))) {
      best = i;
      bestArea = area;
    }
  });
  return best >= 0 ? { kind: 'box', index: best, selected: best === labeler.selected } : { kind: 'none' };
}
