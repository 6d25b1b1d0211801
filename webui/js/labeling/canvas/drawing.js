// Painting the labeling canvas: the image at the current zoom, its boxes with class tags, the box being drawn,
// the selected box's handles and the crosshair.

import { handlesOf } from './geometry.js';

const HANDLE = 8; // handle size in screen px

export function drawLabeler(labeler) {
  const ctx = labeler.ctx;
  const canvas = labeler.canvas;
  const dpr = canvas.width / Math.max(1, labeler.cssW);
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = '#101317';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!labeler.img) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.imageSmoothingEnabled = labeler.scale < 2;
  ctx.drawImage(labeler.img, labeler.offsetX, labeler.offsetY, labeler.width * labeler.scale, labeler.height * labeler.scale);
  ctx.font = '12px system-ui, sans-serif';
  ctx.textBaseline = 'bottom';
  labeler.boxes.forEach((b, i) => drawBox(labeler, b, i === labeler.selected));
  const d = labeler.drag;
  if (d && d.kind === 'draw') {
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

function drawBox(labeler, b, selected) {
  const ctx = labeler.ctx;
  const a = labeler.toCanvas(b.x1, b.y1);
  const z = labeler.toCanvas(b.x2, b.y2);
  const color = labeler.color(b.class_id);
  ctx.lineWidth = selected ? 3 : 2;
  ctx.strokeStyle = color;
  ctx.strokeRect(a.x, a.y, z.x - a.x, z.y - a.y);
  if (selected) {
    ctx.fillStyle = 'rgba(255,255,255,0.08)';
    ctx.fillRect(a.x, a.y, z.x - a.x, z.y - a.y);
  }
  const cls = labeler.classes[b.class_id];
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
    for (const [, hx, hy] of handlesOf(labeler, b)) {
      ctx.fillRect(hx - HANDLE / 2, hy - HANDLE / 2, HANDLE, HANDLE);
      ctx.strokeRect(hx - HANDLE / 2, hy - HANDLE / 2, HANDLE, HANDLE);
    }
  }
}
