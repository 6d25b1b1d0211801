// Model proposals in the labeling view: "Suggest boxes" runs the deployed model on the image at the chosen
// confidence and puts its boxes in as proposals (source 'model'), drawn dashed with their confidence, like the
// pre-labels of camera captures. A proposal counts as a label only once a person accepts it (Enter, "Accept
// all", or by changing its class, moving or resizing it); X rejects it. While any proposal is unreviewed the
// image is saved as unlabeled (saving.js), so training never takes a model's guess for a person's label.
//
//   const suggestions = createSuggestions({ labeler, imageId: () => currentId });
//   actions.append(suggestions.controls); side.append(suggestions.section); suggestions.refresh(); ... destroy();

import { api, ApiError } from '../api.js';
import { h, toast } from '../dom.js';
import { isPending } from './canvas/geometry.js';

const CONFIDENCE_KEY = 'appliance.suggest.confidence';

function storedConfidence() {
  const value = Number(localStorage.getItem(CONFIDENCE_KEY));
  return value >= 0.05 && value <= 0.95 ? value : 0.25;
}

export function createSuggestions({ labeler, imageId }) {
  let requestedFor = null; // the image whose proposals came from this page's last request
  let busy = false;
  const list = h('ol.box-list', { testid: 'suggestion-list' });
  const note = h('p.small.muted', 'Dashed boxes are the model\'s guesses: Enter accepts the highlighted one, X rejects it.');
  const bulk = h('div.actions',
    h('button', { type: 'button', testid: 'accept-all', onclick: () => acceptAll() }, 'Accept all'),
    h('button', { type: 'button', testid: 'reject-all', onclick: () => rejectAll() }, 'Reject all'));
  const section = h('section', { testid: 'suggestions' }, h('h3', 'To review'), note, list, bulk);
  section.hidden = true;
  const button = h('button', { type: 'button', testid: 'suggest-boxes', title: 'run the deployed model on this image',
    onclick: () => suggest() }, 'Suggest boxes');
  const slider = h('input', { type: 'range', min: '0.05', max: '0.95', step: '0.05', value: String(storedConfidence()),
    testid: 'suggest-confidence', 'aria-label': 'confidence of suggestions' });
  const sliderValue = h('span.small', { testid: 'suggest-confidence-value' });
  const controls = h('span.suggest-controls', button,
    h('label.inline.small', { title: 'suggestions below this confidence are not shown' }, '≥', slider, sliderValue));
  const showValue = () => { sliderValue.textContent = Number(slider.value).toFixed(2); };
  showValue();
  slider.addEventListener('input', showValue);
  slider.addEventListener('change', () => {
    localStorage.setItem(CONFIDENCE_KEY, slider.value);
    // Proposals asked for here are asked again at the new confidence (they replace the unreviewed ones).
    if (requestedFor !== null && requestedFor === imageId() && pendingIndexes().length) suggest();
  });

  /** Indexes of the unreviewed proposals, most confident first. */
  function pendingIndexes() {
    return labeler.boxes.map((b, i) => i).filter((i) => isPending(labeler.boxes[i]))
      .sort((a, b) => (labeler.boxes[b].confidence ?? 0) - (labeler.boxes[a].confidence ?? 0));
  }

  /** The proposal Enter and X act on: the selected one, else the most confident. */
  function current() {
    const pending = pendingIndexes();
    return pending.includes(labeler.selected) ? labeler.selected : (pending[0] ?? -1);
  }

  function refresh() {
    const pending = pendingIndexes();
    const active = current();
    section.hidden = !pending.length;
    list.replaceChildren(...pending.map((i) => {
      const b = labeler.boxes[i];
      const cls = labeler.classes[b.class_id] || { name: `class ${b.class_id}`, color: '#fff' };
      return h('li', {
        testid: 'suggestion-item', class: i === active ? 'active' : '', style: { '--chip': cls.color },
        onclick: () => labeler.select(i),
      }, h('span.swatch.dashed'), h('span.name', cls.name),
      h('span.muted.small', b.confidence === null ? '' : b.confidence.toFixed(2)));
    }));
    button.dataset.count = String(pending.length);
  }

  async function suggest() {
    const id = imageId();
    if (!id || busy) return;
    busy = true;
    button.disabled = true;
    try {
      const answer = await api.post(`/images/${id}/suggestions`, { confidence: Number(slider.value) });
      if (imageId() !== id) return;
      requestedFor = id;
      labeler.replacePending(answer.detections.map((d) => ({
        class_id: d.class_id, ...d.box, source: 'model', confidence: Math.round(d.confidence * 1000) / 1000,
      })));
      if (!answer.detections.length) toast(`The model found nothing above ${Number(slider.value).toFixed(2)} on this image.`, 'info');
      if (answer.skipped_classes.length) toast(`Ignored classes not in this dataset: ${answer.skipped_classes.join(', ')}`, 'info');
    } catch (err) {
      toast(err instanceof ApiError ? err.detail : String(err), 'error', 6000);
    } finally {
      busy = false;
      button.disabled = false;
    }
    refresh();
    // Enter and X go to the proposals, not to the button that was just clicked.
    if (document.activeElement === button) labeler.canvas.focus({ preventScroll: true });
  }

  function acceptAll() {
    labeler.accept(pendingIndexes());
  }

  function rejectAll() {
    labeler.removeBoxes(pendingIndexes());
  }

  // The proposal Enter and X act on gets a second outline, so the keys never act on something unseen.
  const originalDraw = labeler.draw.bind(labeler);
  labeler.draw = () => {
    originalDraw();
    const i = current();
    const b = labeler.boxes[i];
    if (!b || i === labeler.selected) return;
    const a = labeler.toCanvas(b.x1, b.y1);
    const z = labeler.toCanvas(b.x2, b.y2);
    const ctx = labeler.ctx;
    ctx.save();
    ctx.strokeStyle = 'rgba(255,255,255,0.8)';
    ctx.lineWidth = 1;
    ctx.strokeRect(a.x - 3, a.y - 3, z.x - a.x + 6, z.y - a.y + 6);
    ctx.restore();
  };

  const onKeyDown = (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.tagName === 'BUTTON')) return;
    if (document.querySelector('.modal-backdrop')) return;
    const i = current();
    if (i < 0) return;
    if (e.key === 'Enter') labeler.accept([i]);
    else if (e.key === 'x' || e.key === 'X') labeler.removeBoxes([i]);
    else return;
    e.preventDefault();
    e.stopImmediatePropagation();
  };
  document.addEventListener('keydown', onKeyDown, true);

  return {
    button,
    controls,
    section,
    refresh,
    pendingCount: () => pendingIndexes().length,
    destroy() {
      document.removeEventListener('keydown', onKeyDown, true);
      labeler.draw = originalDraw;
    },
  };
}
