// The mouse on the labeling canvas: drag to draw a box, click to select, drag a box to move it or a handle to
// resize it, middle button or Space+drag to pan, wheel to zoom at the cursor. Edits go through the labeler, which
// records the undo step and reports the change.

import { clamp, hitTest, MIN_BOX, normalizeBox, round2 } from './geometry.js';

/** Listen to the mouse for this labeler; returns the function that stops listening outside the canvas. */
export function bindPointer(labeler) {
  const c = labeler.canvas;
  c.addEventListener('mousedown', (e) => mouseDown(labeler, e));
  const onMove = (e) => mouseMove(labeler, e);
  const onUp = () => mouseUp(labeler);
  // Moves and the release are followed outside the canvas too, so a drag does not stick at its edge.
  window.addEventListener('mousemove', onMove);
  window.addEventListener('mouseup', onUp);
  c.addEventListener('mouseleave', () => {
    if (!labeler.drag) {
      labeler.mouse = null;
      labeler.schedule();
    }
  });
  c.addEventListener('wheel', (e) => {
    e.preventDefault();
    const p = labeler.eventPoint(e);
    const factor = Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015));
    labeler.zoomTo(labeler.scale * factor, p.x, p.y);
  }, { passive: false });
  c.addEventListener('contextmenu', (e) => e.preventDefault());
  c.addEventListener('auxclick', (e) => e.preventDefault());
  return () => {
    window.removeEventListener('mousemove', onMove);
    window.removeEventListener('mouseup', onUp);
  };
}

function clampPoint(labeler, q) {
  return { x: clamp(q.x, 0, labeler.width), y: clamp(q.y, 0, labeler.height) };
}

function mouseDown(labeler, e) {
  if (!labeler.img) return;
  const p = labeler.eventPoint(e);
  labeler.mouse = p;
  if (e.button === 1 || (e.button === 0 && labeler.spaceDown)) {
    e.preventDefault();
    labeler.drag = { kind: 'pan', start: p, ox: labeler.offsetX, oy: labeler.offsetY };
    updateCursor(labeler);
    return;
  }
  if (e.button !== 0) return;
  e.preventDefault();
  labeler.canvas.focus();
  const target = hitTest(labeler, p);
  if (target.kind === 'handle') {
    labeler.drag = { kind: 'resize', handle: target.handle, index: target.index, before: labeler.snapshot(), moved: false };
  } else if (target.kind === 'box') {
    labeler.select(target.index);
    const b = labeler.boxes[target.index];
    labeler.drag = { kind: 'move', index: target.index, start: labeler.toImage(p.x, p.y), orig: { ...b },
      before: labeler.snapshot(), moved: false };
  } else {
    if (labeler.selected !== -1) labeler.select(-1);
    const q = clampPoint(labeler, labeler.toImage(p.x, p.y));
    labeler.drag = { kind: 'draw', start: q, end: q };
  }
  labeler.schedule();
}

function mouseMove(labeler, e) {
  const p = labeler.eventPoint(e);
  const overCanvas = e.target === labeler.canvas;
  labeler.mouse = overCanvas || labeler.drag ? p : null;
  const d = labeler.drag;
  if (!d) {
    updateCursor(labeler);
    labeler.schedule();
    return;
  }
  if (d.kind === 'pan') {
    labeler.offsetX = d.ox + (p.x - d.start.x);
    labeler.offsetY = d.oy + (p.y - d.start.y);
    labeler.fitted = false;
    labeler.onView();
  } else if (d.kind === 'draw') {
    d.end = clampPoint(labeler, labeler.toImage(p.x, p.y));
  } else if (d.kind === 'move') {
    const q = labeler.toImage(p.x, p.y);
    const w = d.orig.x2 - d.orig.x1;
    const hgt = d.orig.y2 - d.orig.y1;
    const x1 = clamp(d.orig.x1 + q.x - d.start.x, 0, labeler.width - w);
    const y1 = clamp(d.orig.y1 + q.y - d.start.y, 0, labeler.height - hgt);
    Object.assign(labeler.boxes[d.index], { x1: round2(x1), y1: round2(y1), x2: round2(x1 + w), y2: round2(y1 + hgt) });
    d.moved = true;
  } else if (d.kind === 'resize') {
    const q = clampPoint(labeler, labeler.toImage(p.x, p.y));
    const b = labeler.boxes[d.index];
    if (d.handle.includes('w')) b.x1 = round2(q.x);
    if (d.handle.includes('e')) b.x2 = round2(q.x);
    if (d.handle.includes('n')) b.y1 = round2(q.y);
    if (d.handle.includes('s')) b.y2 = round2(q.y);
    d.moved = true;
  }
  labeler.schedule();
}

function mouseUp(labeler) {
  const d = labeler.drag;
  if (!d) return;
  labeler.drag = null;
  if (d.kind === 'draw') {
    const box = normalizeBox({ class_id: labeler.activeClass, x1: d.start.x, y1: d.start.y, x2: d.end.x, y2: d.end.y });
    if (box.x2 - box.x1 >= MIN_BOX && box.y2 - box.y1 >= MIN_BOX && labeler.classes.length) {
      labeler.record();
      labeler.boxes.push(box);
      labeler.selected = labeler.boxes.length - 1;
      labeler.onSelect();
      labeler.changed('draw');
    }
  } else if ((d.kind === 'move' || d.kind === 'resize') && d.moved) {
    const b = labeler.boxes[d.index];
    const fixed = normalizeBox(b);
    if (fixed.x2 - fixed.x1 < MIN_BOX || fixed.y2 - fixed.y1 < MIN_BOX) {
      labeler.boxes = d.before.boxes; // collapsed by a resize: back out
    } else {
      labeler.boxes[d.index] = fixed;
      labeler.undoStack.push(d.before);
      labeler.redoStack = [];
      labeler.changed(d.kind);
    }
  }
  updateCursor(labeler);
  labeler.schedule();
}

/** The cursor says what a click would do here; the crosshair is drawn only while a click would draw a box. */
export function updateCursor(labeler) {
  const d = labeler.drag;
  let cursor = 'crosshair';
  if (d && d.kind === 'pan') cursor = 'grabbing';
  else if (labeler.spaceDown) cursor = 'grab';
  else if (d && d.kind === 'move') cursor = 'move';
  else if (labeler.mouse && !d) {
    const t = hitTest(labeler, labeler.mouse);
    if (t.kind === 'handle') cursor = `${t.handle}-resize`;
    else if (t.kind === 'box') cursor = 'move';
  }
  labeler.canvas.style.cursor = cursor;
  labeler.crosshair = cursor === 'crosshair' || (d && d.kind === 'draw');
}
