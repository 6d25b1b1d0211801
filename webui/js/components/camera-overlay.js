// Drawing over a camera image: zones (named polygons) and the model's boxes, in the image's own pixels;
// and the zone tool (click to add points, double-click or "Finish" to close the polygon).
// Used by the Live page (over the MJPEG stream) and the Events page (over a snapshot).

import { defaultColor } from '../palette.js';

const ZONE_COLOR = '#ffd400';

function sizeTo(canvas, width, height) {
  if (width && height && (canvas.width !== width || canvas.height !== height)) {
    canvas.width = width;
    canvas.height = height;
  }
}

function drawPolygon(g, points, scale, { closed = true, label = '' } = {}) {
  if (!points.length) return;
  g.beginPath();
  g.moveTo(points[0][0], points[0][1]);
  for (const [x, y] of points.slice(1)) g.lineTo(x, y);
  if (closed) g.closePath();
  g.stroke();
  for (const [x, y] of points) g.fillRect(x - 2 * scale, y - 2 * scale, 4 * scale, 4 * scale);
  if (label) g.fillText(label, points[0][0] + 4 * scale, points[0][1] + 4 * scale);
}

/** Zones, boxes and a zone being drawn; `frame` is {width, height, detections}. */
export function drawOverlay(canvas, frame, zones = [], draft = null) {
  sizeTo(canvas, frame.width, frame.height);
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, canvas.width, canvas.height);
  const scale = Math.max(1, canvas.width / 640);
  g.font = `${Math.round(12 * scale)}px sans-serif`;
  g.textBaseline = 'top';
  g.lineWidth = 2 * scale;
  g.setLineDash([6 * scale, 4 * scale]);
  g.strokeStyle = ZONE_COLOR;
  g.fillStyle = ZONE_COLOR;
  for (const zone of zones) drawPolygon(g, zone.points, scale, { label: zone.name });
  if (draft && draft.length) drawPolygon(g, draft, scale, { closed: false });
  g.setLineDash([]);
  for (const d of frame.detections || []) {
    const color = defaultColor(d.class_id);
    g.strokeStyle = color;
    g.strokeRect(d.x1, d.y1, d.x2 - d.x1, d.y2 - d.y1);
    const label = `${d.class_name} ${(d.confidence * 100).toFixed(0)}%`;
    const width = g.measureText(label).width + 6 * scale;
    const y = d.y1 >= 16 * scale ? d.y1 - 16 * scale : d.y1;
    g.fillStyle = color;
    g.fillRect(d.x1, y, width, 16 * scale);
    g.fillStyle = '#000';
    g.fillText(label, d.x1 + 3 * scale, y + 2 * scale);
  }
  canvas.dataset.boxes = String((frame.detections || []).length);
  canvas.dataset.zones = String(zones.length);
}

export function clearOverlay(canvas) {
  canvas.getContext('2d').clearRect(0, 0, canvas.width, canvas.height);
  canvas.dataset.boxes = '0';
}

/**
 * The zone tool on `canvas` (which must have the image's size): clicks add points in image pixels,
 * a double-click (or finish()) closes the polygon and calls onFinish(points). Returns {points, finish, cancel}.
 */
export function zoneTool(canvas, { onChange, onFinish }) {
  const points = [];
  const toImage = (event) => {
    const rect = canvas.getBoundingClientRect();
    return [
      Math.round(((event.clientX - rect.left) / rect.width) * canvas.width),
      Math.round(((event.clientY - rect.top) / rect.height) * canvas.height),
    ];
  };
  const click = (event) => {
    if (event.detail > 1) return; // the clicks of a double-click add one point, not three
    points.push(toImage(event));
    onChange(points);
  };
  const dblclick = (event) => {
    event.preventDefault();
    tool.finish();
  };
  canvas.style.pointerEvents = 'auto';
  canvas.style.cursor = 'crosshair';
  canvas.addEventListener('click', click);
  canvas.addEventListener('dblclick', dblclick);
  const stop = () => {
    canvas.removeEventListener('click', click);
    canvas.removeEventListener('dblclick', dblclick);
    canvas.style.pointerEvents = 'none';
    canvas.style.cursor = '';
  };
  const tool = {
    points,
    finish() {
      stop();
      onFinish(points.length >= 3 ? points.slice() : null);
    },
    cancel() {
      stop();
      onFinish(null);
    },
  };
  return tool;
}
