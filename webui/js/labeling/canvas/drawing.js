// Painting the labeling canvas: the image at the current zoom, its boxes with class tags (a model's proposals
// dashed, with their confidence, until a person accepts them), the box being drawn, the selected box's handles
// and the crosshair. Where each tag lands is kept for hit testing (a drag on a tag moves its box).

import { handlesOf, isPending, TAG_H } from './geometry.js';

const HANDLE = 8; // handle size in screen px

export function drawLabeler(labeler) {
  const ctx = labeler.ctx;
  const canvas = labeler.canvas;
  const dpr = canvas.width / Math.max(1, labeler.cssW);
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = '#101317';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  labeler.tagRects = [];
  if (!labeler.img) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.imageSmoothingEnabled = labeler.scale < 2;
  ctx.drawImage(labeler.img, labeler.offsetX, labeler.offsetY, labeler.width * labeler.scale, labeler.height * labeler.scale);
  ctx.font = '12px system-ui, sans-serif';
  ctx.textBaseline = 'bottom';
  // The selected box is painted last, so its tag and handles are on top.
  labeler.boxes.forEach((b, i) => { if (i !== labeler.selected) drawBox(labeler, b, i, false); });
  const sel = labeler.boxes[labeler.selected];
  if (sel) drawBox(labeler, sel, labeler.selected, true);
  const d = labeler.drag;
  if (d && d.kind === 'draw' && d.dragging) {
    const a = labeler.toCanvas(Math.min(d.start.x, d.end.x), Math.min(d.start.y, d.end.y));
    const z = labeler.toCanvas(Math.max(d.start.x, d.end.x), Math.max(d.start.y, d.end.y));
    ctx.setLineDash([6, 4]);
    ctx.lineWidth = 2;
    ctx.strokeStyle = labeler.color(labeler.activeClass);
    ctx.strokeRect(a.x, a.y, z.x - a.x, z.y - a.y);
    ctx.setLineDash([]);
  }
  const mouse = labeler.mouse;
  if (mouse && labeler.crosshair && !labeler.spaceDown) {
    ctx.strokeStyle = 'rgba(255,255,255,0.55)';
    ctx.lineWidth = 1;
    ctx.setLineDash([4, 4]);
    ctx.beginPath();
    ctx.moveTo(0, Math.round(mouse.y) + 0.5);
    ctx.lineTo(labeler.cssW, Math.round(mouse.y) + 0.5);
    ctx.moveTo(Math.round(mouse.x) + 0.5, 0);
    ctx.lineTo(Math.round(mouse.x) + 0.5, labeler.cssH);
    ctx.stroke();
    ctx.setLineDash([]);
  }
  labeler.drawCount += 1;
}

/** The text of a box's tag: the class, and for a proposal its confidence and a question mark. */
export function tagText(labeler, b) {
  const cls = labeler.classes[b.class_id];
  const name = cls ? cls.name : `class ${b.class_id}`;
  if (!isPending(b)) return name;
  return `${name} ${b.confidence === null || b.confidence === undefined ? '' : `${b.confidence.toFixed(2)} `}?`;
}

function drawBox(labeler, b, index, selected) {
  const ctx = labeler.ctx;
  const a = labeler.toCanvas(b.x1, b.y1);
  const z = labeler.toCanvas(b.x2, b.y2);
  const color = labeler.color(b.class_id);
  const pending = isPending(b);
  ctx.lineWidth = selected ? 3 : 2;
  ctx.strokeStyle = color;
  ctx.setLineDash(pending ? [6, 4] : []);
  ctx.strokeRect(a.x, a.y, z.x - a.x, z.y - a.y);
  ctx.setLineDash([]);
  if (selected) {
    ctx.fillStyle = 'rgba(255,255,255,0.08)';
    ctx.fillRect(a.x, a.y, z.x - a.x, z.y - a.y);
  }
  const label = tagText(labeler, b);
  const tw = Math.min(ctx.measureText(label).width + 8, 240);
  // The tag sits above the box, or just inside it when the box touches the top of the view.
  const ty = a.y >= TAG_H ? a.y - TAG_H : a.y;
  const tx = a.x - (selected ? 1.5 : 1);
  if (pending) {
    // A proposal's tag is an outline: it reads as "not a label yet" at a glance.
    ctx.fillStyle = 'rgba(16,19,23,0.85)';
    ctx.fillRect(tx, ty, tw, TAG_H);
    ctx.strokeStyle = color;
    ctx.lineWidth = 1;
    ctx.strokeRect(tx + 0.5, ty + 0.5, tw - 1, TAG_H - 1);
    ctx.fillStyle = color;
  } else {
    ctx.fillStyle = color;
    ctx.fillRect(tx, ty, tw, TAG_H);
    ctx.fillStyle = '#000';
  }
  ctx.fillText(label, a.x + 3, ty + 14, 232);
  labeler.tagRects.push({ index, x: tx, y: ty, w: tw, h: TAG_H });
  if (selected) {
    ctx.fillStyle = '#fff';
    ctx.strokeStyle = '#000';
    ctx.lineWidth = 1;
    for (const [, hx, hy] of handlesOf(labeler, b)) {
      ctx.fillRect(hx - HANDLE / 2, hy - HANDLE / 2, HANDLE, HANDLE);
      ctx.strokeRect(hx - HANDLE / 2, hy - HANDLE / 2, HANDLE, HANDLE);
    }
  }
}
