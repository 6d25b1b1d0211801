// Charts on a canvas, our own code (labels drawn with fillText, never as HTML): bar charts (dataset statistics),
// line charts per epoch (training) or per time bucket (event report), stacked bars over time (OK/NG per hour).

/** Size the canvas's pixels to its CSS box and the device pixel ratio; a cleared 2d context in CSS px. */
function prepare(canvas, cssW, cssH) {
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(cssW * dpr);
  canvas.height = Math.round(cssH * dpr);
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, cssW, cssH);
  return g;
}

/**
 * barChart(canvas, bars, { horizontal, valueFormat })
 * bars: [{ label, value, color }]. The canvas is sized to its CSS box and the device pixel ratio.
 */
export function barChart(canvas, bars, { horizontal = true, valueFormat = (v) => v.toLocaleString('en-US') } = {}) {
  const cssW = canvas.clientWidth || 480;
  const rowH = 26;
  const cssH = horizontal ? Math.max(60, bars.length * rowH + 16) : canvas.clientHeight || 220;
  canvas.style.height = `${cssH}px`;
  const g = prepare(canvas, cssW, cssH);
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

/** A plot area on the canvas: the 2d context in CSS px, theme colours, padding and the plot's size. */
function frame(canvas, pad) {
  const width = canvas.clientWidth || 480;
  const height = canvas.clientHeight || 220;
  const g = prepare(canvas, width, height);
  const styles = getComputedStyle(document.body);
  g.font = '12px system-ui, sans-serif';
  return {
    g,
    width,
    height,
    pad,
    text: styles.getPropertyValue('--muted').trim() || '#9aa4b2',
    line: styles.getPropertyValue('--line').trim() || '#333b47',
    plotW: Math.max(10, width - pad.left - pad.right),
    plotH: Math.max(10, height - pad.top - pad.bottom),
  };
}

/** Five horizontal grid lines from lo to hi, each labelled on the left. */
function grid(f, y, lo, hi, format) {
  const { g, pad, plotW } = f;
  g.strokeStyle = f.line;
  g.fillStyle = f.text;
  g.lineWidth = 1;
  g.textAlign = 'right';
  for (let k = 0; k <= 4; k += 1) {
    const v = lo + ((hi - lo) * k) / 4;
    g.beginPath();
    g.moveTo(pad.left, y(v));
    g.lineTo(pad.left + plotW, y(v));
    g.stroke();
    g.fillText(format(v), pad.left - 4, y(v) + 4);
  }
}

const SERIES_COLORS = ['#4ea1ff', '#ff8c42', '#5cd65c', '#e05cff', '#ffd23f', '#ff5c7a'];

/**
 * A line chart on a canvas: series = [{label, values: [number|null]}], x = epoch 1..n (or what `xLabel(i)` says,
 * one label every `step` points). Sized to its box and the device pixel ratio; the number of points drawn is kept
 * in data-points.
 */
export function lineChart(canvas, title, series, {
  xLabel = (i) => String(i + 1), step: xStep = 0, emptyText = 'waiting for the first epoch…', valueFormat = null,
} = {}) {
  const f = frame(canvas, { left: 46, right: 12, top: 22, bottom: 38 });
  const { g, height, pad, plotW, plotH, text } = f;
  const n = Math.max(0, ...series.map((s) => s.values.length));
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  g.fillStyle = text;
  g.fillText(title, pad.left, 14);
  canvas.dataset.points = String(n);
  if (!n || !all.length) {
    g.fillText(emptyText, pad.left + 8, pad.top + plotH / 2);
    return;
  }
  let lo = Math.min(0, ...all);
  let hi = Math.max(...all);
  if (hi - lo < 1e-9) hi = lo + 1;
  hi += (hi - lo) * 0.05;
  const x = (i) => pad.left + (n === 1 ? plotW / 2 : (i / (n - 1)) * plotW);
  const y = (v) => pad.top + plotH - ((v - lo) / (hi - lo)) * plotH;
  grid(f, y, lo, hi, valueFormat || ((v) => v.toFixed(hi - lo < 1 ? 3 : 2)));
  g.textAlign = 'center';
  const step = xStep || Math.max(1, Math.ceil(n / 10));
  for (let i = 0; i < n; i += step) g.fillText(xLabel(i), x(i), pad.top + plotH + 14);
  g.textAlign = 'left';
  let legendX = pad.left;
  series.forEach((s, index) => {
    const color = SERIES_COLORS[index % SERIES_COLORS.length];
    g.strokeStyle = color;
    g.fillStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    let started = false;
    s.values.forEach((v, i) => {
      if (v === null || v === undefined || !Number.isFinite(v)) return;
      if (started) g.lineTo(x(i), y(v));
      else g.moveTo(x(i), y(v));
      started = true;
    });
    g.stroke();
    s.values.forEach((v, i) => {
      if (v === null || v === undefined || !Number.isFinite(v)) return;
      g.beginPath();
      g.arc(x(i), y(v), 2.5, 0, Math.PI * 2);
      g.fill();
    });
    g.fillRect(legendX, height - 12, 10, 3);
    g.fillText(s.label, legendX + 14, height - 7);
    legendX += 22 + g.measureText(s.label).width;
  });
}

/**
 * Stacked bars over time on a canvas: bars = [{label, values: [number, ...]}], series = [{label, color}] (one per
 * value, bottom first). Sized to its box and the device pixel ratio; the number of bars is kept in data-points.
 */
export function stackedBars(canvas, bars, series, { emptyText = 'nothing yet' } = {}) {
  const f = frame(canvas, { left: 46, right: 12, top: 12, bottom: 38 });
  const { g, height, pad, plotW, plotH, text } = f;
  const totals = bars.map((b) => b.values.reduce((a, v) => a + v, 0));
  canvas.dataset.points = String(bars.length);
  canvas.dataset.total = String(totals.reduce((a, v) => a + v, 0));
  g.fillStyle = text;
  if (!bars.length || !Math.max(0, ...totals)) {
    g.fillText(emptyText, pad.left + 8, pad.top + plotH / 2);
  }
  const max = Math.max(1, ...totals);
  const y = (v) => pad.top + plotH - (v / max) * plotH;
  grid(f, y, 0, max, (v) => Math.round(v).toLocaleString('en-US'));
  const slot = plotW / Math.max(1, bars.length);
  bars.forEach((b, i) => {
    let base = 0;
    b.values.forEach((v, k) => {
      if (!v) return;
      g.fillStyle = series[k].color;
      const top = y(base + v);
      g.fillRect(pad.left + i * slot + slot * 0.15, top, Math.max(1, slot * 0.7), Math.max(1, y(base) - top));
      base += v;
    });
  });
  g.fillStyle = text;
  g.textAlign = 'center';
  const step = Math.max(1, Math.ceil(bars.length / Math.max(1, Math.floor(plotW / 48))));
  for (let i = 0; i < bars.length; i += step) g.fillText(bars[i].label, pad.left + (i + 0.5) * slot, pad.top + plotH + 14);
  g.textAlign = 'left';
  let legendX = pad.left;
  for (const s of series) {
    g.fillStyle = s.color;
    g.fillRect(legendX, height - 12, 10, 8);
    g.fillStyle = text;
    g.fillText(s.label, legendX + 14, height - 4);
    legendX += 26 + g.measureText(s.label).width;
  }
}
