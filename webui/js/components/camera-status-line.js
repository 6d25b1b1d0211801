// What the Live header says about a camera: the model it runs (also while its source is away) and, when the
// source is lost, that it is being retried, how many times and since when (GET /cameras/{id}/status fields
// model_id, model_name, model_note, batch_sizes, state, source_lost_at, retries, error).

const clock = (unix) => new Date(unix * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });

/** The model part: "model shapes (#3) · model 3 (openvino CPU fp32), batches off: ... · frames per call size:
 * 120×1 30×2", or the note when none runs. */
export function modelText(status) {
  if (!status.model_id) return status.model_note || 'no model deployed';
  const name = status.model_name ? `${status.model_name} (#${status.model_id})` : `#${status.model_id}`;
  const batches = Object.entries(status.batch_sizes || {}).map(([size, n]) => `${n}×${size}`).join(' ');
  return `model ${name}${status.model_note ? ` · ${status.model_note}` : ''}${batches ? ` · frames per call size: ${batches}` : ''}`;
}

/** The source part while it is away: "source lost, retrying: 4 times since 10:32:05"; '' while it delivers. */
export function sourceText(status) {
  if (!['reconnecting', 'error'].includes(status.state) || !status.source_lost_at) return '';
  const since = clock(status.source_lost_at);
  if (!status.retries) return `source lost at ${since}, retrying`;
  return `source lost, retrying: ${status.retries} ${status.retries === 1 ? 'time' : 'times'} since ${since}`;
}
