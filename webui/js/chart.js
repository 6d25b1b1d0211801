// A small horizontal/vertical bar chart on a canvas (our own code; labels drawn with fillText, never as HTML).

/**
 * barChart(canvas, bars, { horizontal, title })
 * bars: [{ label, value, color }]. The canvas is sized to its CSS box and the device pixel ratio.
 */
export function barChart(canvas, bars, { horizontal = true, valueFormat = (v) => v.toLocaleString('en-US') } = {}) {
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || 480;
  const rowH = 26;
  const cssH = horizontal ? Math.max(60, bars.length * rowH + 16) : canvas.clientHeight || 220;
  canvas.style.height = `${cssH}px`;
  canvas.width = Math.round(cssW * dpr);
  canvas.height = Math.round(cssH * dpr);
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, cssW, cssH);
  const style = getComputedStyle(canvas);
  const text = style.color || '#ddd';
  g.font = '13px system-ui, sans-serif';
  const max = Math.max(1, ...bars.map((b) => b.value));
  if (horizontal) {
    const labelW = Math.min(180, Math.max(60, ...bars.map((b) => g.measureText(b.label).width + 12)));
    const valueW = 70;
    const plotW = Math.max(10, cssW - labelW - valueW);
    bars.forEach((b, i) => {
      const y = 8 + i * rowH;
      g.fillStyle = text;
      g.textBaseline = 'middle';
      g.textAlign = 'right';
      g.fillText(b.label, labelW - 8, y + rowH / 2 - 2, labelW - 10);
      const w = (b.value / max) * plotW;
      g.fillStyle = b.color || '#4dabf7';
      g.fillRect(labelW, y + 3, Math.max(w, b.value ? 2 : 0), rowH - 10);
      g.fillStyle = text;
      g.textAlign = 'left';
      g.fillText(valueFormat(b.value), labelW + w + 6, y + rowH / 2 - 2);
    });
  } else {
    const bottom = 34;
    const top = 20;
    const plotH = cssH - bottom - top;
    const slot = cssW / Math.max(1, bars.length);
    bars.forEach((b, i) => {
      const x = i * slot;
      const hgt = (b.value / max) * plotH;
      g.fillStyle = b.color || '#4dabf7';
      g.fillRect(x + slot * 0.15, top + plotH - hgt, slot * 0.7, Math.max(hgt, b.value ? 2 : 0));
      g.fillStyle = text;
      g.textAlign = 'center';
      g.textBaseline = 'bottom';
      g.fillText(valueFormat(b.value), x + slot / 2, top + plotH - hgt - 2, slot);
      g.textBaseline = 'top';
      g.fillText(b.label, x + slot / 2, top + plotH + 6, slot - 2);
    });
  }
  return canvas;
}
