// Numbers, metrics and durations as the console shows them.

// A model whose mAP50 is under this finds (almost) nothing: the console says "not usable" rather than "completed".
export const UNUSABLE_MAP50 = 0.05;

export function formatNumber(n) {
  return Number(n || 0).toLocaleString('en-US');
}

/** A metric such as mAP50 with `digits` decimals; '–' when there is none. */
export function formatMetric(value, digits = 3) {
  return value === null || value === undefined || Number.isNaN(Number(value)) ? '–' : Number(value).toFixed(digits);
}

/** Seconds as m:ss or h:mm:ss; '' when unknown. */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '';
  const s = Math.max(0, Math.round(seconds));
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, '0');
  return hours ? `${hours}:${String(minutes).padStart(2, '0')}:${rest}` : `${minutes}:${rest}`;
}

// "Saved as image 12 with 3 pre-labels to review; 2 left out (1 class not in the dataset, 1 no area ...)":
// what a send-to-dataset answered, every detection accounted for.
export function savedFrameText(r) {
  if (r.duplicate) return `Already in the dataset as image ${r.image_id}${leftOutText(r.left_out)}`;
  return `Saved as image ${r.image_id} with ${r.boxes} pre-label${r.boxes === 1 ? '' : 's'} to review${leftOutText(r.left_out)}`;
}

function leftOutText(leftOut) {
  const reasons = Object.entries(leftOut || {});
  const total = reasons.reduce((sum, [, n]) => sum + n, 0);
  return total ? `; ${total} box${total === 1 ? '' : 'es'} left out (${reasons.map(([why, n]) => `${n} ${why}`).join(', ')})` : '';
}
