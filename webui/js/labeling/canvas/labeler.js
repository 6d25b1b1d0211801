// The labeling canvas tool: an image with its boxes (in image px), the view onto it (zoom, pan) and the box
// edits with undo. Box maths and hit testing: geometry.js; painting: drawing.js; the mouse: pointer.js.

import { drawLabeler } from './drawing.js';
import { clamp, normalizeBox } from './geometry.js';
import { bindPointer, updateCursor } from './pointer.js';

const MIN_SCALE = 0.02;
const MAX_SCALE = 32;
const UNDO_STEPS = 200;

/**
 * Labeler(canvas, { classes, onChange(reason), onSelect(), onView() })
 * - setImage(img, width, height, boxes) shows an image with its boxes (image px), fitted.
 * - boxes, selected, activeClass, scale/offsetX/offsetY are readable; edits go through the methods so
 *   that every change records an undo step and calls onChange.
 * - draw() paints now, schedule() on the next frame; a caller may wrap draw() to paint over it (suggestions.js).
 */
export class Labeler {
  constructor(canvas, { classes, onChange, onSelect, onView }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.classes = classes;
    this.onChange = onChange || (() => {});
    this.onSelect = onSelect || (() => {});
    this.onView = onView || (() => {});
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
    this.crosshair = false;
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

  // --- content and edits ------------------------------------------------------------------------

  setImage(img, width, height, boxes) {
    this.img = img;
    this.width = width;
    this.height = height;
    this.boxes = boxes.map(normalizeBox);
    this.selected = -1;
    this.undoStack = [];
    this.redoStack = [];
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

  snapshot() {
    return { boxes: this.boxes.map((b) => ({ ...b })), selected: this.selected };
  }

  record() {
    this.undoStack.push(this.snapshot());
    if (this.undoStack.length > UNDO_STEPS) this.undoStack.shift();
    this.redoStack = [];
  }

  changed(reason) {
    this.schedule();
    this.onChange(reason);
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
    this.boxes = state.boxes;
    this.selected = Math.min(state.selected, this.boxes.length - 1);
    this.onSelect();
    this.changed(reason);
    return true;
  }

  select(i) {
    this.selected = i;
    if (i >= 0 && this.boxes[i]) this.activeClass = this.boxes[i].class_id;
    this.onSelect();
    this.schedule();
  }

  setClass(classId) {
    if (classId < 0 || classId >= this.classes.length) return;
    this.activeClass = classId;
    const box = this.boxes[this.selected];
    if (box && box.class_id !== classId) {
      this.record();
      box.class_id = classId;
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

  /** Add boxes (copied from the previous image, accepted suggestions) as one undo step, clipped to the image. */
  addBoxes(boxes) {
    if (!boxes.length) return;
    this.record();
    for (const b of boxes) {
      const box = normalizeBox({
        ...b,
        x1: clamp(b.x1, 0, this.width), y1: clamp(b.y1, 0, this.height),
        x2: clamp(b.x2, 0, this.width), y2: clamp(b.y2, 0, this.height),
      });
      if (box.class_id < this.classes.length && box.x2 - box.x1 >= 1 && box.y2 - box.y1 >= 1) this.boxes.push(box);
    }
    this.changed('copy');
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
