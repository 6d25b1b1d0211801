// Moving between the images of the labeling page: open one (from the cache, then the neighbours in the
// background), previous / next across the edges of the loaded list windows, next unlabeled, copy the previous
// image's boxes, and the first image to show.

import { api, ApiError } from '../api.js';
import { toast } from '../dom.js';
import { pageSize, setFocus } from '../image-index.js';
import { cacheEntry } from './cache.js';
import { normalizeBox, sameBoxes } from './canvas/geometry.js';

// Neighbours kept loaded in the image list around the current image: the next page is asked for this far
// from a window's edge (at most a quarter page), so next/previous do not wait for it.
const LIST_MARGIN = 30;
// Images whose undo steps are kept while the page is open (the oldest left first).
const HISTORY_IMAGES = 100;

export function createNavigation({ datasetId, index, filterQuery, labeler, state, panels, saver }) {
  let showSeq = 0;
  // Undo steps per image, with the boxes they lead to: coming back to an image whose boxes are still those,
  // Ctrl+Z undoes what was done there before leaving it.
  const histories = new Map();

  function keepHistory(session) {
    if (!session || state.drawnImageId !== session.id) return;
    histories.delete(session.id);
    histories.set(session.id, { ...labeler.history(), boxes: session.boxes.map((b) => ({ ...b })) });
    while (histories.size > HISTORY_IMAGES) histories.delete(histories.keys().next().value);
  }

  async function show(id, { replaceUrl = true } = {}) {
    const seq = ++showSeq;
    const previous = state.session;
    if (previous && previous.dirty) saver.save(previous);
    if (previous && previous.id !== id) keepHistory(previous);
    const entry = cacheEntry(id);
    let img;
    let ann;
    try {
      [img, ann] = await Promise.all([entry.img, entry.ann]);
    } catch (err) {
      if (seq !== showSeq) return;
      if (err instanceof ApiError && err.status === 401) return;
      toast(err instanceof ApiError ? err.detail : `Image ${id} could not be loaded`, 'error');
      return;
    }
    if (seq !== showSeq || state.leaving) return;
    const meta = index.get(id) || (await api.get(`/images/${id}`));
    if (seq !== showSeq || state.leaving) return;
    const session = {
      id, meta, version: ann.version, status: ann.status, boxes: ann.boxes.map(normalizeBox),
      serverBoxes: ann.boxes, dirty: false, saving: null, again: false, conflict: false, wantStatus: null,
    };
    state.session = session;
    const kept = histories.get(id);
    labeler.setImage(img, ann.width, ann.height, session.boxes, kept && sameBoxes(kept.boxes, session.boxes) ? kept : null);
    state.drawnImageId = id;
    setFocus(datasetId, id);
    if (replaceUrl) history.replaceState(null, '', `#/datasets/${datasetId}/label/${id}${filterQuery}`);
    panels.renderInfo(session);
    panels.renderBoxes();
    panels.renderClasses();
    panels.setSaveState('saved');
    if (document.activeElement !== panels.canvas && !document.querySelector('.modal-backdrop')) {
      panels.canvas.focus({ preventScroll: true });
    }
    saver.restoreDraft(session);
    // Network work for the neighbours starts after this frame is on screen.
    setTimeout(() => {
      if (session !== state.session) return;
      prefetchAround(id);
      revalidate(session, entry);
    }, 0);
  }

  /** A cached annotation may be old: check the server and take its boxes if nothing was edited here. */
  async function revalidate(s, entry) {
    if (performance.now() - entry.fetchedAt < 2000) return;
    try {
      const fresh = await api.get(`/images/${s.id}/annotations`);
      entry.ann = Promise.resolve(fresh);
      entry.fetchedAt = performance.now();
      if (s !== state.session || s.dirty || s.saving || fresh.version === s.version) return;
      s.version = fresh.version;
      s.status = fresh.status;
      s.boxes = fresh.boxes.map(normalizeBox);
      labeler.replaceBoxes(s.boxes);
      panels.renderBoxes();
      panels.renderInfo(s);
    } catch {
      /* the next save will tell */
    }
  }

  function prefetchAround(id) {
    const pos = index.indexOf(id);
    if (pos < 0) return;
    const warm = () => {
      for (const p of [pos + 1, pos + 2, pos - 1]) {
        const item = index.at(p);
        if (item) cacheEntry(item.id);
      }
    };
    warm();
    // Grow the list window (before=/after= pages) before next/previous reaches its edge.
    const margin = Math.min(LIST_MARGIN, Math.floor(pageSize() / 4));
    if (!index.covered(pos - margin, pos + margin + 1)) {
      index.ensureRange(pos - margin, pos + margin + 1).then(warm).catch(() => {});
    }
  }

  // The commands below read state.session anew after each wait: the image on screen may have changed meanwhile.
  async function go(step) {
    if (!state.session) return;
    let pos = index.indexOf(state.session.id);
    if (pos < 0) {
      await index.ensureId(state.session.id).catch(() => false);
      pos = index.indexOf(state.session.id);
    }
    const target = pos + step;
    if (target < 0) {
      toast('This is the first image');
      return;
    }
    // Across the edge of the loaded window: one page from the window's edge (before= or after=).
    if (!index.at(target)) await index.ensureRange(target, target + 1);
    const item = index.at(target);
    if (!item) {
      toast('This is the last image');
      return;
    }
    await show(item.id);
  }

  async function nextUnlabeled() {
    if (!state.session) return;
    const find = (after) => api.get(`/datasets/${datasetId}/images${api.qs({ status: 'unlabeled', after, limit: 2 })}`);
    let page = await find(state.session.id);
    let item = page.items.find((i) => i.id !== state.session.id);
    if (!item) {
      page = await find(0);
      item = page.items.find((i) => i.id !== state.session.id);
    }
    if (!item) {
      toast('Every image is labeled', 'ok');
      return;
    }
    await show(item.id);
  }

  async function copyPrevious() {
    if (!state.session) return;
    const pos = index.indexOf(state.session.id);
    if (pos > 0 && !index.at(pos - 1)) await index.ensureRange(pos - 1, pos);
    const prev = pos > 0 ? index.at(pos - 1) : null;
    if (!prev) {
      toast('There is no previous image');
      return;
    }
    const ann = await cacheEntry(prev.id).ann;
    if (!ann.boxes.length) {
      toast('The previous image has no boxes');
      return;
    }
    labeler.addBoxes(ann.boxes.map((b) => ({ ...b, source: 'manual', confidence: null })));
    toast(`Copied ${ann.boxes.length} boxes from the previous image`, 'ok');
  }

  /** '#/…/label/first': the first unlabeled image (the first of the list under a filter); null when none. */
  async function firstImageId({ filtered }) {
    await index.ensure(1);
    const unlabeled = await api.get(`/datasets/${datasetId}/images${api.qs({ status: 'unlabeled', limit: 1 })}`);
    const first = filtered ? index.at(0) : (unlabeled.items[0] || index.at(0));
    return first ? first.id : null;
  }

  return { show, go, nextUnlabeled, copyPrevious, firstImageId };
}
