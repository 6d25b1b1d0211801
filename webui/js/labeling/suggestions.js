// Pre-labeling for the labeling view: "Suggest boxes" runs the deployed model on the current image and shows its
// boxes as dashed proposals. Enter accepts the highlighted proposal (it becomes a normal box, saved like any
// other), X rejects it; "Accept all" / "Reject all" do the rest. Self-contained: the label page only mounts it.
//
//   const suggestions = createSuggestions({ labeler, imageId: () => currentId });
//   actions.append(suggestions.button); side.append(suggestions.section); ... suggestions.destroy();

import { api, ApiError } from '../api.js';
import { h, toast } from '../dom.js';

export function createSuggestions({ labeler, imageId, confidence = 0.25 }) {
  let proposals = []; // [{class_id, class_name, confidence, box}]
  let forImage = null;
  let current = 0;
  const list = h('ol.box-list', { testid: 'suggestion-list' });
  const section = h('section', { testid: 'suggestions' }, h('h3', 'Suggestions'), list);
  section.hidden = true;
  const button = h('button', { type: 'button', testid: 'suggest-boxes', title: 'run the deployed model on this image',
    onclick: () => suggest() }, 'Suggest boxes');

  function render() {
    if (forImage !== imageId()) {
      proposals = [];
      forImage = null;
    }
    section.hidden = !proposals.length;
    list.replaceChildren(...proposals.map((p, i) => h('li', {
      testid: 'suggestion-item', class: i === current ? 'active' : '',
      onclick: () => { current = i; render(); labeler.schedule(); },
    }, `${p.class_name} ${p.confidence.toFixed(2)}`)));
    if (proposals.length) {
      list.append(h('li.muted', 'Enter accepts, X rejects'),
        h('li', h('button', { type: 'button', testid: 'accept-all', onclick: () => acceptAll() }, 'Accept all'), ' ',
          h('button', { type: 'button', testid: 'reject-all', onclick: () => clearAll() }, 'Reject all')));
    }
    button.dataset.count = String(proposals.length);
  }

  async function suggest() {
    const id = imageId();
    if (!id) return;
    button.disabled = true;
    try {
      const answer = await api.post(`/images/${id}/suggestions`, { confidence });
      if (imageId() !== id) return;
      proposals = answer.detections;
      forImage = id;
      current = 0;
      if (!proposals.length) toast('The model found nothing on this image.', 'info');
      if (answer.skipped_classes.length) toast(`Ignored classes not in this dataset: ${answer.skipped_classes.join(', ')}`, 'info');
    } catch (err) {
      toast(err instanceof ApiError ? err.detail : String(err), 'error', 6000);
    } finally {
      button.disabled = false;
    }
    render();
    labeler.schedule();
  }

  function take(indexes) {
    const chosen = indexes.map((i) => proposals[i]).filter(Boolean);
    proposals = proposals.filter((_, i) => !indexes.includes(i));
    current = Math.min(current, Math.max(0, proposals.length - 1));
    return chosen;
  }

  function accept() {
    const [p] = take([current]);
    if (p) labeler.addBoxes([{ class_id: p.class_id, ...p.box }]);
    render();
    labeler.schedule();
  }

  function acceptAll() {
    const all = take(proposals.map((_, i) => i));
    if (all.length) labeler.addBoxes(all.map((p) => ({ class_id: p.class_id, ...p.box })));
    render();
    labeler.schedule();
  }

  function reject() {
    take([current]);
    render();
    labeler.schedule();
  }

  function clearAll() {
    proposals = [];
    render();
    labeler.schedule();
  }

  // Proposals are drawn dashed over the labeler's own drawing.
  const originalDraw = labeler.draw.bind(labeler);
  labeler.draw = () => {
    originalDraw();
    if (forImage !== imageId()) {
      if (proposals.length) queueMicrotask(render);
      return;
    }
    const ctx = labeler.ctx;
    ctx.save();
    ctx.setLineDash([5, 4]);
    proposals.forEach((p, i) => {
      const a = labeler.toCanvas(p.box.x1, p.box.y1);
      const z = labeler.toCanvas(p.box.x2, p.box.y2);
      ctx.lineWidth = i === current ? 3 : 1.5;
      ctx.strokeStyle = labeler.color(p.class_id);
      ctx.strokeRect(a.x, a.y, z.x - a.x, z.y - a.y);
    });
    ctx.restore();
  };

  const onKeyDown = (e) => {
    if (!proposals.length || forImage !== imageId()) return;
    const t = e.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT')) return;
    if (document.querySelector('.modal-backdrop')) return;
    if (e.key === 'Enter') accept();
    else if (e.key === 'x' || e.key === 'X') reject();
    else return;
    e.preventDefault();
    e.stopImmediatePropagation();
  };
  document.addEventListener('keydown', onKeyDown, true);

  return {
    button,
    section,
    destroy() {
      document.removeEventListener('keydown', onKeyDown, true);
      labeler.draw = originalDraw;
    },
  };
}
