// A deep link to one box, from a model's evaluation (a false positive, a miss, a wrong class):
// #/datasets/:id/label/:imageId?box=x1,y1,x2,y2 (image pixels). The view zooms onto the box and a dashed
// marker shows it on that image, so the person sees at once what to fix (or that the label was right).
//
//   const focus = createFocus(labeler, boxFromQuery(ctx.query), imageId, () => state.drawnImageId);
//   focus.apply() once the image is drawn; focus.destroy() when the page closes.

/** The ?box= of the route, or null when absent or not four finite numbers with an area. */
export function boxFromQuery(query) {
  const parts = String((query && query.get('box')) || '').split(',').map(Number);
  if (parts.length !== 4 || !parts.every(Number.isFinite)) return null;
  const [x1, y1, x2, y2] = parts;
  return x2 > x1 && y2 > y1 ? { x1, y1, x2, y2 } : null;
}

export function createFocus(labeler, box, imageId, drawnImageId) {
  if (!box) return { apply() {}, destroy() {} };
  const originalDraw = labeler.draw.bind(labeler);
  labeler.draw = () => {
    originalDraw();
    if (drawnImageId() !== imageId) return;
    const a = labeler.toCanvas(box.x1, box.y1);
    const z = labeler.toCanvas(box.x2, box.y2);
    const ctx = labeler.ctx;
    ctx.save();
    ctx.strokeStyle = '#ffd23f';
    ctx.lineWidth = 2;
    ctx.setLineDash([4, 3]);
    ctx.strokeRect(a.x - 5, a.y - 5, z.x - a.x + 10, z.y - a.y + 10);
    ctx.restore();
  };
  return {
    box,
    apply() {
      if (drawnImageId() !== imageId) return;
      // The box takes about a third of the view, never less magnified than the whole image fitted.
      const fitted = labeler.scale;
      const scale = Math.max(fitted, Math.min(labeler.cssW / ((box.x2 - box.x1) * 3), labeler.cssH / ((box.y2 - box.y1) * 3)));
      labeler.centreOn((box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2, scale);
    },
    destroy() {
      labeler.draw = originalDraw;
    },
  };
}
