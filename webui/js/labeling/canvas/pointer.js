// The mouse on the labeling canvas. What a left-button drag does is decided where it starts, and the cursor
// says it before the button goes down:
// - on a handle of the selected box: resize it;            - on the selected box or any box's tag: move it;
// - anywhere else, on other boxes too: draw a new box;      - with Shift held: always draw a new box.
// A click (no drag) on a box selects it, on the image deselects. Middle button or Space+drag pans, the wheel
// zooms at the cursor. Edits go through the labeler, which records the undo step and reports the change.

import { clamp, hitTest, MIN_BOX, normalizeBox, round2 } from './geometry.js';

const CLICK_SLOP = 3; // screen px a press may wander and still be a click

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

/** What a left-button press at canvas point p would start: 'resize', 'move' or 'draw' (with its target). */
export function intentAt(labeler, p, shift) {
  if (shift) return { kind: 'draw', pick: -1 };
  const target = hitTest(labeler, p);
  if (target.kind === 'handle') return { kind: 'resize', handle: target.handle, index: target.index };
  if (target.kind === 'tag' || (target.kind === 'box' && target.selected)) return { kind: 'move', index: target.index };
  // On an unselected box a click selects it, but a drag draws a new (nested or overlapping) box.
  return { kind: 'draw', pick: target.kind === 'box' ? target.index : -1 };
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
  const intent = intentAt(labeler, p, e.shiftKey);
  if (intent.kind === 'resize') {
    labeler.drag = { kind: 'resize', handle: intent.handle, index: intent.index, before: labeler.snapshot(), moved: false };
  } else if (intent.kind === 'move') {
    if (labeler.selected !== intent.index) labeler.select(intent.index);
    const b = labeler.boxes[intent.index];
    labeler.drag = { kind: 'move', index: intent.index, start: labeler.toImage(p.x, p.y), orig: { ...b },
      before: labeler.snapshot(), moved: false };
  } else {
    const q = clampPoint(labeler, labeler.toImage(p.x, p.y));
    // A press that has not moved yet: a click when released here, a new box once it is dragged.
    labeler.drag = { kind: 'draw', start: q, end: q, pick: intent.pick, from: p, dragging: false };
  }
  updateCursor(labeler);
  labeler.schedule();
}

function mouseMove(labeler, e) {
  const p = labeler.eventPoint(e);
  const overCanvas = e.target === labeler.canvas;
  labeler.mouse = overCanvas || labeler.drag ? p : null;
  labeler.shiftDown = e.shiftKey;
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
    if (!d.dragging && Math.hypot(p.x - d.from.x, p.y - d.from.y) > CLICK_SLOP) d.dragging = true;
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
  if (d.kind === 'draw' && !d.dragging) {
    labeler.select(d.pick); // a click: select the box under it, or nothing
  } else if (d.kind === 'draw') {
    const box = normalizeBox({ class_id: labeler.activeClass, x1: d.start.x, y1: d.start.y, x2: d.end.x, y2: d.end.y });
    if (box.x2 - box.x1 >= MIN_BOX && box.y2 - box.y1 >= MIN_BOX && labeler.classes.length) {
      labeler.record();
      labeler.boxes.push(box);
      // The new box is not selected: a class key pressed next sets the class of the next box, never this one.
      labeler.selected = -1;
      labeler.onSelect();
      labeler.changed('draw');
    }
  } else if ((d.kind === 'move' || d.kind === 'resize') && d.moved) {
    const b = labeler.boxes[d.index];
    const fixed = normalizeBox(b);
    if (fixed.x2 - fixed.x1 < MIN_BOX || fixed.y2 - fixed.y1 < MIN_BOX) {
      labeler.boxes = d.before.boxes; // collapsed by a resize: back out
    } else {
      // A proposal moved or resized by a person has been reviewed: it is theirs now.
      labeler.boxes[d.index] = { ...fixed, source: fixed.source === 'model' ? 'manual' : fixed.source,
        confidence: fixed.source === 'model' ? null : fixed.confidence };
      labeler.undoStack.push(d.before);
      labeler.redoStack = [];
      labeler.changed(d.kind);
    }
  }
  updateCursor(labeler);
  labeler.schedule();
}

/** The cursor says what a press would do here; the crosshair is drawn only while a drag would draw a box. */
export function updateCursor(labeler) {
  const d = labeler.drag;
  let cursor = 'crosshair';
  if (d && d.kind === 'pan') cursor = 'grabbing';
  else if (labeler.spaceDown) cursor = 'grab';
  else if (d && d.kind === 'move') cursor = 'move';
  else if (d && d.kind === 'resize') cursor = `${d.handle}-resize`;
  else if (labeler.mouse && !d) {
    const intent = intentAt(labeler, labeler.mouse, labeler.shiftDown);
    if (intent.kind === 'resize') cursor = `${intent.handle}-resize`;
    else if (intent.kind === 'move') cursor = 'move';
    else if (intent.pick >= 0) cursor = 'cell'; // a click selects this box, a drag draws a new one inside it
  }
  labeler.canvas.style.cursor = cursor;
  labeler.cursorIntent = cursor;
  labeler.crosshair = cursor === 'crosshair' || cursor === 'cell' || Boolean(d && d.kind === 'draw');
}
