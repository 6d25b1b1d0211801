// Box maths of the labeling canvas, in image pixels: normal form, comparison, resize handles and hit testing.

export const HIT = 6; // pick tolerance in screen px
export const MIN_BOX = 2; // smallest box kept, in image px

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

/** The same boxes in any order (class and corners; source and confidence do not count). */
export function sameBoxes(a, b) {
  if (a.length !== b.length) return false;
  const key = (x) => [x.class_id, round2(x.x1), round2(x.y1), round2(x.x2), round2(x.y2)].join(',');
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

/** What is under the canvas point p: a handle of the selected box, a box, or nothing. */
export function hitTest(labeler, p) {
  const sel = labeler.boxes[labeler.selected];
  if (sel) {
    for (const [name, hx, hy] of handlesOf(labeler, sel)) {
      if (Math.abs(p.x - hx) <= HIT && Math.abs(p.y - hy) <= HIT) return { kind: 'handle', handle: name, index: labeler.selected };
    }
  }
  const q = labeler.toImage(p.x, p.y);
  const tol = HIT / labeler.scale;
  const inside = (b) => q.x >= b.x1 - tol && q.x <= b.x2 + tol && q.y >= b.y1 - tol && q.y <= b.y2 + tol;
  if (sel && inside(sel)) return { kind: 'box', index: labeler.selected };
  // Smallest box wins so nested boxes stay reachable.
  let best = -1;
  let bestArea = Infinity;
  labeler.boxes.forEach((b, i) => {
    const area = (b.x2 - b.x1) * (b.y2 - b.y1);
    if (inside(b) && area < bestArea) {
      best = i;
      bestArea = area;
    }
  });
  return best >= 0 ? { kind: 'box', index: best } : { kind: 'none' };
}
