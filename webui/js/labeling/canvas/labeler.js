// The labeling canvas tool: an image with its boxes (in image px), the view onto it (zoom, pan) and the box
// edits with undo. Box maths and hit testing: geometry.js; painting: drawing.js; the mouse: pointer.js.

import { drawLabeler } from './drawing.js';
import { clamp, isPending, normalizeBox } from './geometry.js';
import { bindPointer, updateCursor } from './pointer.js';

const MIN_SCALE = 0.02;
const MAX_SCALE = 32;
const UNDO_STEPS = 200;

/**
 * Labeler(canvas, { classes, onChange(reason, restored), onSelect(), onView(), stateOf() })
 * - setImage(img, width, height, boxes, history) shows an image with its boxes (image px), fitted; `history`
 *   ({ undo, redo } from history() when the image was left) brings its undo steps back.
 * - boxes, selected, activeClass, scale/offsetX/offsetY are readable; edits go through the methods so
 *   that every change records an undo step and calls onChange.
 * - activeClass is the class of the next box drawn; a box changes class only while selected, and only a click
 *   (or the box list, or a drag on its tag) selects one: a box just drawn is not selected.
 * - Boxes with source 'model' are proposals (suggestions, camera pre-labels) until accepted.
 * - draw() paints now, schedule() on the next frame; a caller may wrap draw() to paint over it (suggestions.js).
 * - stateOf() gives what else an undo step must bring back with the boxes (the image's status: undoing a copy
 *   leaves the image as unlabeled as it was); undo and redo hand it to onChange as `restored`.
 */
export class Labeler {
  constructor(canvas, { classes, onChange, onSelect, onView, stateOf }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.classes = classes;
    this.onChange = onChange || (() => {});
    this.onSelect = onSelect || (() => {});
    this.onView = onView || (() => {});
    this.stateOf = stateOf || (() => null);
    this.img = null;
    this.width = 0;
    this.height = 0;
    this.boxes = [];
    this.selected = -1;
    this.activeClass = 0;
    this.scale = 1;
    this.offsetX = 0;
    this.offsetY = 0;
    this.fitted = true;
    this.undoStack = [];
    this.redoStack = [];
    this.drag = null; // the mouse gesture under way (pointer.js): pan, draw, move or resize
    this.mouse = null; // last pointer position in canvas px
    this.spaceDown = false;
    this.shiftDown = false; // Shift: a drag draws a new box wherever it starts
    this.crosshair = false;
    this.cursorIntent = 'crosshair'; // the cursor shown: what a press would do (pointer.js)
    this.tagRects = []; // where each box's class tag was painted, in canvas px (drawing.js)
    this.frame = 0;
    this.drawCount = 0;
    this.cssW = 0;
    this.cssH = 0;
    this.unbindPointer = bindPointer(this);
  }

  // --- the view ---------------------------------------------------------------------------------

  toImage(cx, cy) {
    return { x: (cx - this.offsetX) / this.scale, y: (cy - this.offsetY) / this.scale };
  }

  toCanvas(x, y) {
    return { x: x * this.scale + this.offsetX, y: y * this.scale + this.offsetY };
  }

  /** Client (viewport) coordinates of an image point: what a mouse would need to hit it. */
  toClient(x, y) {
    const rect = this.canvas.getBoundingClientRect();
    const p = this.toCanvas(x, y);
    return { x: rect.left + p.x, y: rect.top + p.y };
  }

  eventPoint(event) {
    const rect = this.canvas.getBoundingClientRect();
    return { x: event.clientX - rect.left, y: event.clientY - rect.top };
  }

  resize() {
    // A dataset without classes shows a message in place of the canvas: nothing to size then.
    if (!this.canvas.parentElement) return;
    const rect = this.canvas.parentElement.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    this.cssW = Math.max(1, Math.floor(rect.width));
    this.cssH = Math.max(1, Math.floor(rect.height));
    this.canvas.width = Math.round(this.cssW * dpr);
    this.canvas.height = Math.round(this.cssH * dpr);
    this.canvas.style.width = `${this.cssW}px`;
    this.canvas.style.height = `${this.cssH}px`;
    if (this.fitted) this.fit();
    this.draw();
  }

  fit() {
    if (!this.width) return;
    const pad = 16;
    const scale = Math.min((this.cssW - pad * 2) / this.width, (this.cssH - pad * 2) / this.height);
    this.scale = clamp(scale > 0 ? scale : 1, MIN_SCALE, MAX_SCALE);
    this.offsetX = Math.round((this.cssW - this.width * this.scale) / 2);
    this.offsetY = Math.round((this.cssH - this.height * this.scale) / 2);
    this.fitted = true;
    this.onView();
    this.schedule();
  }

  /** Zoom to `scale` keeping the canvas point (cx, cy) fixed (default: the centre). */
  zoomTo(scale, cx = this.cssW / 2, cy = this.cssH / 2) {
    scale = clamp(scale, MIN_SCALE, MAX_SCALE);
    const p = this.toImage(cx, cy);
    this.scale = scale;
    this.offsetX = Math.round(cx - p.x * scale);
    this.offsetY = Math.round(cy - p.y * scale);
    this.fitted = false;
    this.onView();
    this.schedule();
  }

  /** Zoom to `scale` with the image point (x, y) in the middle of the view (a deep link to one box). */
  centreOn(x, y, scale) {
    this.scale = clamp(scale, MIN_SCALE, MAX_SCALE);
    this.offsetX = Math.round(this.cssW / 2 - x * this.scale);
    this.offsetY = Math.round(this.cssH / 2 - y * this.scale);
    this.fitted = false;
    this.onView();
    this.schedule();
  }

  actualSize() {
    this.zoomTo(1);
    // Centre the image when it fits at 1:1 so pixels line up on whole canvas pixels.
    if (this.width <= this.cssW && this.height <= this.cssH) {
      this.offsetX = Math.round((this.cssW - this.width) / 2);
      this.offsetY = Math.round((this.cssH - this.height) / 2);
      this.schedule();
    }
  }

  setSpace(down) {
    this.spaceDown = down;
    updateCursor(this);
  }

  setShift(down) {
    if (this.shiftDown === down) return;
    this.shiftDown = down;
    updateCursor(this);
    this.schedule();
  }

  // --- content and edits ------------------------------------------------------------------------

  setImage(img, width, height, boxes, history = null) {
    this.img = img;
    this.width = width;
    this.height = height;
    this.boxes = boxes.map(normalizeBox);
    this.selected = -1;
    this.undoStack = history ? history.undo : [];
    this.redoStack = history ? history.redo : [];
    this.drag = null;
    if (!this.cssW) this.resize();
    this.fit();
    this.draw();
  }

  /** Replace the boxes (from the server or a conflict choice) without an undo step. */
  replaceBoxes(boxes) {
    this.boxes = boxes.map(normalizeBox);
    this.selected = -1;
    this.schedule();
  }

  /** The undo steps of the image on screen, to give back to setImage when it is shown again. */
  history() {
    return { undo: this.undoStack, redo: this.redoStack };
  }

  snapshot() {
    return { boxes: this.boxes.map((b) => ({ ...b })), selected: this.selected, state: this.stateOf() };
  }

  record() {
    this.undoStack.push(this.snapshot());
    if (this.undoStack.length > UNDO_STEPS) this.undoStack.shift();
    this.redoStack = [];
  }

  changed(reason, restored = null) {
    this.schedule();
    this.onChange(reason, restored);
  }

  undo() {
    return this.restore(this.undoStack, this.redoStack, 'undo');
  }

  redo() {
    return this.restore(this.redoStack, this.undoStack, 'redo');
  }

  /** Undo and redo: take the last state of `from`, keeping the present one on `to`. */
  restore(from, to, reason) {
    const state = from.pop();
    if (!state) return false;
    to.push(this.snapshot());
    this.boxes = state.boxes.map((b) => ({ ...b }));
    // Nothing comes back selected: a class key after an undo must not change a box the user did not pick.
    this.selected = -1;
    this.onSelect();
    this.changed(reason, state.state);
    return true;
  }

  select(i) {
    this.selected = i >= 0 && this.boxes[i] ? i : -1;
    this.onSelect();
    this.schedule();
  }

  setClass(classId) {
    if (classId < 0 || classId >= this.classes.length) return;
    this.activeClass = classId;
    const box = this.boxes[this.selected];
    if (box && (box.class_id !== classId || isPending(box))) {
      this.record();
      // A person choosing the class of a proposal has reviewed it: it is theirs now.
      this.boxes[this.selected] = { ...box, class_id: classId, source: 'manual', confidence: null };
      this.changed('class');
    }
    this.onSelect();
    this.schedule();
  }

  deleteSelected() {
    if (this.selected < 0) return;
    this.record();
    this.boxes.splice(this.selected, 1);
    this.selected = -1;
    this.onSelect();
    this.changed('delete');
  }

  /** Proposals become a person's boxes (source 'manual'), as one undo step. */
  accept(indexes) {
    const chosen = indexes.filter((i) => this.boxes[i] && isPending(this.boxes[i]));
    if (!chosen.length) return;
    this.record();
    for (const i of chosen) this.boxes[i] = { ...this.boxes[i], source: 'manual', confidence: null };
    this.onSelect();
    this.changed('accept');
  }

  /** Remove boxes by index as one undo step (rejected proposals). */
  removeBoxes(indexes) {
    const gone = new Set(indexes.filter((i) => this.boxes[i]));
    if (!gone.size) return;
    this.record();
    this.boxes = this.boxes.filter((_, i) => !gone.has(i));
    this.selected = -1;
    this.onSelect();
    this.changed('reject');
  }

  /** The model's proposals now: every pending box is replaced by `boxes` (source 'model'), as one undo step. */
  replacePending(boxes) {
    this.record();
    this.boxes = this.boxes.filter((b) => !isPending(b));
    this.selected = -1;
    this.pushClipped(boxes.map((b) => ({ ...b, source: 'model' })));
    this.onSelect();
    this.changed('suggest');
  }

  /** Add boxes (copied from the previous image) as one undo step, clipped to the image. */
  addBoxes(boxes) {
    if (!boxes.length) return;
    this.record();
    this.pushClipped(boxes);
    this.changed('copy');
  }

  pushClipped(boxes) {
    for (const b of boxes) {
      const box = normalizeBox({
        ...b,
        x1: clamp(b.x1, 0, this.width), y1: clamp(b.y1, 0, this.height),
        x2: clamp(b.x2, 0, this.width), y2: clamp(b.y2, 0, this.height),
      });
      if (box.class_id < this.classes.length && box.x2 - box.x1 >= 1 && box.y2 - box.y1 >= 1) this.boxes.push(box);
    }
  }

  // --- painting ---------------------------------------------------------------------------------

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  draw() {
    drawLabeler(this);
  }

  color(classId) {
    const c = this.classes[classId];
    return c ? c.color : '#ffffff';
  }

  destroy() {
    this.unbindPointer();
    cancelAnimationFrame(this.frame);
  }
}
