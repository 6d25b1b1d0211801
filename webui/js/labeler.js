// The labeling canvas: draws an image and its boxes, and turns mouse/keys into box edits (in image pixels).

const HANDLE = 8; // handle size in screen px
const HIT = 6; // pick tolerance in screen px
const MIN_BOX = 2; // smallest box kept, in image px
const MIN_SCALE = 0.02;
const MAX_SCALE = 32;

const round2 = (v) => Math.round(v * 100) / 100;
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

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

export function sameBoxes(a, b) {
  if (a.length !== b.length) return false;
  const key = (x) => [x.class_id, round2(x.x1), round2(x.y1), round2(x.x2), round2(x.y2)].join(',');
  const ka = a.map(key).sort();
  const kb = b.map(key).sort();
  return ka.every((k, i) => k === kb[i]);
}

/**
 * Labeler(canvas, { classes, onChange(reason), onSelect(), onView() })
 * - setImage(img, width, height, boxes) shows an image with its boxes (image px), fitted.
 * - boxes, selected, activeClass, scale/offsetX/offsetY are readable; edits go through the methods so
 *   that every change records an undo step and calls onChange.
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
    this.drag = null;
    this.mouse = null; // last pointer position in canvas px
    this.spaceDown = false;
    this.frame = 0;
    this.drawCount = 0;
    this.cssW = 0;
    this.cssH = 0;
    this.bind();
  }

  // --- geometry ---------------------------------------------------------------------------------

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

  // --- content ----------------------------------------------------------------------------------

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
    if (this.undoStack.length > 200) this.undoStack.shift();
    this.redoStack = [];
  }

  changed(reason) {
    this.schedule();
    this.onChange(reason);
  }

  undo() {
    const state = this.undoStack.pop();
    if (!state) return false;
    this.redoStack.push(this.snapshot());
    this.boxes = state.boxes;
    this.selected = Math.min(state.selected, this.boxes.length - 1);
    this.onSelect();
    this.changed('undo');
    return true;
  }

  redo() {
    const state = this.redoStack.pop();
    if (!state) return false;
    this.undoStack.push(this.snapshot());
    this.boxes = state.boxes;
    this.selected = Math.min(state.selected, this.boxes.length - 1);
    this.onSelect();
    this.changed('redo');
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

  // --- hit testing ------------------------------------------------------------------------------

  handlesOf(box) {
    const a = this.toCanvas(box.x1, box.y1);
    const b = this.toCanvas(box.x2, box.y2);
    const mx = (a.x + b.x) / 2;
    const my = (a.y + b.y) / 2;
    return [
      ['nw', a.x, a.y], ['n', mx, a.y], ['ne', b.x, a.y], ['e', b.x, my],
      ['se', b.x, b.y], ['s', mx, b.y], ['sw', a.x, b.y], ['w', a.x, my],
    ];
  }

  hit(p) {
    const sel = this.boxes[this.selected];
    if (sel) {
      for (const [name, hx, hy] of this.handlesOf(sel)) {
        if (Math.abs(p.x - hx) <= HIT && Math.abs(p.y - hy) <= HIT) return { kind: 'handle', handle: name, index: this.selected };
      }
    }
    const q = this.toImage(p.x, p.y);
    const tol = HIT / this.scale;
    const inside = (b) => q.x >= b.x1 - tol && q.x <= b.x2 + tol && q.y >= b.y1 - tol && q.y <= b.y2 + tol;
    if (sel && inside(sel)) return { kind: 'box', index: this.selected };
    // Smallest box wins so nested boxes stay reachable.
    let best = -1;
    let bestArea = Infinity;
    this.boxes.forEach((b, i) => {
      const area = (b.x2 - b.x1) * (b.y2 - b.y1);
      if (inside(b) && area < bestArea) {
        best = i;
        bestArea = area;
      }
    });
    return best >= 0 ? { kind: 'box', index: best } : { kind: 'none' };
  }

  // --- input ------------------------------------------------------------------------------------

  bind() {
    const c = this.canvas;
    c.addEventListener('mousedown', (e) => this.mouseDown(e));
    this.onMove = (e) => this.mouseMove(e);
    this.onUp = (e) => this.mouseUp(e);
    window.addEventListener('mousemove', this.onMove);
    window.addEventListener('mouseup', this.onUp);
    c.addEventListener('mouseleave', () => {
      if (!this.drag) {
        this.mouse = null;
        this.schedule();
      }
    });
    c.addEventListener('wheel', (e) => {
      e.preventDefault();
      const p = this.eventPoint(e);
      const factor = Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015));
      this.zoomTo(this.scale * factor, p.x, p.y);
    }, { passive: false });
    c.addEventListener('contextmenu', (e) => e.preventDefault());
    c.addEventListener('auxclick', (e) => e.preventDefault());
  }

  destroy() {
    window.removeEventListener('mousemove', this.onMove);
    window.removeEventListener('mouseup', this.onUp);
    cancelAnimationFrame(this.frame);
  }

  mouseDown(e) {
    if (!this.img) return;
    const p = this.eventPoint(e);
    this.mouse = p;
    if (e.button === 1 || (e.button === 0 && this.spaceDown)) {
      e.preventDefault();
      this.drag = { kind: 'pan', start: p, ox: this.offsetX, oy: this.offsetY };
      this.updateCursor();
      return;
    }
    if (e.button !== 0) return;
    e.preventDefault();
    this.canvas.focus();
    const target = this.hit(p);
    if (target.kind === 'handle') {
      this.drag = { kind: 'resize', handle: target.handle, index: target.index, before: this.snapshot(), moved: false };
    } else if (target.kind === 'box') {
      this.select(target.index);
      const b = this.boxes[target.index];
      this.drag = { kind: 'move', index: target.index, start: this.toImage(p.x, p.y), orig: { ...b },
        before: this.snapshot(), moved: false };
    } else {
      if (this.selected !== -1) this.select(-1);
      const q = this.clampPoint(this.toImage(p.x, p.y));
      this.drag = { kind: 'draw', start: q, end: q };
    }
    this.schedule();
  }

  clampPoint(q) {
    return { x: clamp(q.x, 0, this.width), y: clamp(q.y, 0, this.height) };
  }

  mouseMove(e) {
    const p = this.eventPoint(e);
    const overCanvas = e.target === this.canvas;
    this.mouse = overCanvas || this.drag ? p : null;
    const d = this.drag;
    if (!d) {
      this.updateCursor();
      this.schedule();
      return;
    }
    if (d.kind === 'pan') {
      this.offsetX = d.ox + (p.x - d.start.x);
      this.offsetY = d.oy + (p.y - d.start.y);
      this.fitted = false;
      this.onView();
    } else if (d.kind === 'draw') {
      d.end = this.clampPoint(this.toImage(p.x, p.y));
    } else if (d.kind === 'move') {
      const q = this.toImage(p.x, p.y);
      const w = d.orig.x2 - d.orig.x1;
      const hgt = d.orig.y2 - d.orig.y1;
      const x1 = clamp(d.orig.x1 + q.x - d.start.x, 0, this.width - w);
      const y1 = clamp(d.orig.y1 + q.y - d.start.y, 0, this.height - hgt);
      Object.assign(this.boxes[d.index], { x1: round2(x1), y1: round2(y1), x2: round2(x1 + w), y2: round2(y1 + hgt) });
      d.moved = true;
    } else if (d.kind === 'resize') {
      const q = this.clampPoint(this.toImage(p.x, p.y));
      const b = this.boxes[d.index];
      if (d.handle.includes('w')) b.x1 = round2(q.x);
      if (d.handle.includes('e')) b.x2 = round2(q.x);
      if (d.handle.includes('n')) b.y1 = round2(q.y);
      if (d.handle.includes('s')) b.y2 = round2(q.y);
      d.moved = true;
    }
    this.schedule();
  }

  mouseUp() {
    const d = this.drag;
    if (!d) return;
    this.drag = null;
    if (d.kind === 'draw') {
      const box = normalizeBox({ class_id: this.activeClass, x1: d.start.x, y1: d.start.y, x2: d.end.x, y2: d.end.y });
      if (box.x2 - box.x1 >= MIN_BOX && box.y2 - box.y1 >= MIN_BOX && this.classes.length) {
        this.record();
        this.boxes.push(box);
        this.selected = this.boxes.length - 1;
        this.onSelect();
        this.changed('draw');
      }
    } else if ((d.kind === 'move' || d.kind === 'resize') && d.moved) {
      const b = this.boxes[d.index];
      const fixed = normalizeBox(b);
      if (fixed.x2 - fixed.x1 < MIN_BOX || fixed.y2 - fixed.y1 < MIN_BOX) {
        this.boxes = d.before.boxes; // collapsed by a resize: back out
      } else {
        this.boxes[d.index] = fixed;
        this.undoStack.push(d.before);
        this.redoStack = [];
        this.changed(d.kind);
      }
    }
    this.updateCursor();
    this.schedule();
  }

  setSpace(down) {
    this.spaceDown = down;
    this.updateCursor();
  }

  updateCursor() {
    let cursor = 'crosshair';
    if (this.drag && this.drag.kind === 'pan') cursor = 'grabbing';
    else if (this.spaceDown) cursor = 'grab';
    else if (this.drag && this.drag.kind === 'move') cursor = 'move';
    else if (this.mouse && !this.drag) {
      const t = this.hit(this.mouse);
      if (t.kind === 'handle') cursor = `${t.handle}-resize`;
      else if (t.kind === 'box') cursor = 'move';
    }
    this.canvas.style.cursor = cursor;
    this.crosshair = cursor === 'crosshair' || (this.drag && this.drag.kind === 'draw');
  }

  // --- drawing ----------------------------------------------------------------------------------

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  color(classId) {
    const c = this.classes[classId];
    return c ? c.color : '#ffffff';
  }

  draw() {
    const ctx = this.ctx;
    const dpr = this.canvas.width / Math.max(1, this.cssW);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#101317';
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.img) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.imageSmoothingEnabled = this.scale < 2;
    ctx.drawImage(this.img, this.offsetX, this.offsetY, this.width * this.scale, this.height * this.scale);
    ctx.font = '12px system-ui, sans-serif';
    ctx.textBaseline = 'bottom';
    this.boxes.forEach((b, i) => this.drawBox(b, i === this.selected));
    const d = this.drag;
    if (d && d.kind === 'draw') {
      const a = this.toCanvas(Math.min(d.start.x, d.end.x), Math.min(d.start.y, d.end.y));
      const z = this.toCanvas(Math.max(d.start.x, d.end.x), Math.max(d.start.y, d.end.y));
      ctx.setLineDash([6, 4]);
      ctx.lineWidth = 2;
      ctx.strokeStyle = this.color(this.activeClass);
      ctx.strokeRect(a.x, a.y, z.x - a.x, z.y - a.y);
      ctx.setLineDash([]);
    }
    if (this.mouse && this.crosshair && !this.spaceDown) {
      ctx.strokeStyle = 'rgba(255,255,255,0.55)';
      ctx.lineWidth = 1;
      ctx.setLineDash([4, 4]);
      ctx.beginPath();
      ctx.moveTo(0, Math.round(this.mouse.y) + 0.5);
      ctx.lineTo(this.cssW, Math.round(this.mouse.y) + 0.5);
      ctx.moveTo(Math.round(this.mouse.x) + 0.5, 0);
      ctx.lineTo(Math.round(this.mouse.x) + 0.5, this.cssH);
      ctx.stroke();
      ctx.setLineDash([]);
    }
    this.drawCount += 1;
  }

  drawBox(b, selected) {
    const ctx = this.ctx;
    const a = this.toCanvas(b.x1, b.y1);
    const z = this.toCanvas(b.x2, b.y2);
    const color = this.color(b.class_id);
    ctx.lineWidth = selected ? 3 : 2;
    ctx.strokeStyle = color;
    ctx.strokeRect(a.x, a.y, z.x - a.x, z.y - a.y);
    if (selected) {
      ctx.fillStyle = 'rgba(255,255,255,0.08)';
      ctx.fillRect(a.x, a.y, z.x - a.x, z.y - a.y);
    }
    const cls = this.classes[b.class_id];
    const label = cls ? cls.name : `class ${b.class_id}`;
    const tw = Math.min(ctx.measureText(label).width + 8, 240);
    // The tag sits above the box, or just inside it when the box touches the top of the view.
    const ty = a.y >= 16 ? a.y - 16 : a.y;
    ctx.fillStyle = color;
    ctx.fillRect(a.x - (selected ? 1.5 : 1), ty, tw, 16);
    ctx.fillStyle = '#000';
    ctx.fillText(label, a.x + 3, ty + 14, 232);
    if (selected) {
      ctx.fillStyle = '#fff';
      ctx.strokeStyle = '#000';
      ctx.lineWidth = 1;
      for (const [, hx, hy] of this.handlesOf(b)) {
        ctx.fillRect(hx - HANDLE / 2, hy - HANDLE / 2, HANDLE, HANDLE);
        ctx.strokeRect(hx - HANDLE / 2, hy - HANDLE / 2, HANDLE, HANDLE);
      }
    }
  }
}
