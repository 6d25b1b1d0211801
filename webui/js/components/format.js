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
