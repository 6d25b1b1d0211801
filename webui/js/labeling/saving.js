// Saving the boxes of the image being edited: autosave shortly after each change with the annotation version,
// a local draft until the server has them, the conflict dialog on 409, drafts found when an image opens, and a
// last save when the page unloads.

import { api, API_PREFIX, ApiError } from '../api.js';
import { toast } from '../dom.js';
import { updateImage } from '../image-index.js';
import { cacheAnnotations, cacheEntry } from './cache.js';
import { isPending, normalizeBox, sameBoxes } from './canvas/geometry.js';
import { askWhichVersion } from './conflict.js';
import { dropDraft, readDraft, writeDraft } from './drafts.js';

const SAVE_DELAY_MS = 300;

/** The status a save asks for: unlabeled while any model proposal is unreviewed, else what the user chose. */
export function statusFor(boxes, wantStatus) {
  if (boxes.some(isPending)) return 'unlabeled';
  return wantStatus || null; // null: the server's default, labeled
}

/**
 * A session is one image being edited: { id, meta, version, status, boxes, serverBoxes, dirty, saving, again,
 * conflict, wantStatus, timer } (navigation.js opens it). `state.session` is the one on screen; the one left
 * behind may still be saving, so everything here takes the session it works on.
 */
export function createSaver({ datasetId, classes, canWrite, labeler, state, panels }) {
  const onScreen = (s) => s === state.session;

  /** The server's annotations are now the session's (and the cached ones, and the grid's counts). */
  function adopt(s, saved) {
    s.version = saved.version;
    s.status = saved.status;
    cacheAnnotations(s.id, saved);
    updateImage(datasetId, s.id, { status: saved.status, box_count: saved.boxes.length, version: saved.version });
  }

  function markDirty(s) {
    s.dirty = true;
    writeDraft(s);
    if (onScreen(s)) panels.setSaveState('unsaved');
    clearTimeout(s.timer);
    s.timer = setTimeout(() => save(s), SAVE_DELAY_MS);
  }

  async function save(s) {
    clearTimeout(s.timer);
    if (!s.dirty || s.conflict) return s.saving;
    if (s.saving) {
      s.again = true;
      return s.saving;
    }
    const boxes = s.boxes.map(normalizeBox);
    const body = { version: s.version, boxes };
    const status = statusFor(boxes, s.wantStatus);
    if (status) body.status = status;
    s.dirty = false;
    if (onScreen(s)) panels.setSaveState('saving', 'saving…');
    const run = (async () => {
      try {
        const saved = await api.put(`/images/${s.id}/annotations`, body);
        adopt(s, saved);
        s.serverBoxes = saved.boxes;
        if (!s.dirty) dropDraft(s.id);
        if (onScreen(s)) {
          panels.setSaveState(s.dirty ? 'unsaved' : 'saved');
          panels.renderInfo(s);
        }
      } catch (err) {
        s.dirty = true;
        if (err instanceof ApiError && err.status === 409) {
          s.conflict = true;
          if (onScreen(s)) panels.setSaveState('conflict');
          if (s.saving === run) s.saving = null;
          await resolveConflict(s);
          return;
        }
        if (onScreen(s)) panels.setSaveState('error', 'not saved');
        if (!(err instanceof ApiError && err.status === 401)) {
          toast(`Not saved: ${err instanceof ApiError ? err.detail : err}`, 'error', 6000);
        }
      } finally {
        if (s.saving === run) s.saving = null;
      }
      if (s.again) {
        s.again = false;
        if (s.dirty) await save(s);
      }
    })();
    s.saving = run;
    return run;
  }

  /** 409: show both versions side by side and let the user choose; nothing is dropped silently. */
  async function resolveConflict(s) {
    let theirs;
    try {
      theirs = await api.get(`/images/${s.id}/annotations`);
    } catch (err) {
      s.conflict = false;
      toast(`Conflict, and the saved version could not be read: ${err.detail || err}`, 'error');
      return;
    }
    if (sameBoxes(s.boxes, theirs.boxes)) {
      // The same boxes were saved already (e.g. by the save sent while the page unloaded): nothing to choose.
      s.conflict = false;
      s.version = theirs.version;
      s.status = theirs.status;
      s.dirty = false;
      dropDraft(s.id);
      if (onScreen(s)) {
        panels.setSaveState('saved');
        panels.renderInfo(s);
      }
      return;
    }
    const img = await cacheEntry(s.id).img.catch(() => null);
    const choice = await askWhichVersion({ name: s.meta.original_name, mine: s.boxes, theirs, img, classes });
    s.conflict = false;
    s.version = theirs.version;
    s.status = theirs.status;
    if (choice === 'theirs') {
      s.boxes = theirs.boxes.map(normalizeBox);
      s.dirty = false;
      dropDraft(s.id);
      adopt(s, theirs);
      if (onScreen(s)) {
        labeler.replaceBoxes(s.boxes);
        panels.renderBoxes();
        panels.renderInfo(s);
        panels.setSaveState('saved');
      }
    } else if (choice === 'mine') {
      writeDraft(s);
      await save(s);
    } else {
      // Closed without a choice: keep the edits unsaved (and in the local draft); the next change asks again.
      writeDraft(s);
      if (onScreen(s)) panels.setSaveState('conflict', 'not saved (conflict)');
    }
  }

  /** An image just opened: boxes left unsaved here last time are put back (same version) or offered (newer). */
  function restoreDraft(s) {
    const draft = readDraft(s.id);
    if (!draft || !canWrite) return;
    if (sameBoxes(draft.boxes, s.boxes)) {
      dropDraft(s.id);
      return;
    }
    const mine = draft.boxes.map(normalizeBox);
    if (draft.base_version === s.version) {
      labeler.record();
      labeler.replaceBoxes(mine);
      s.boxes = mine.map((b) => ({ ...b }));
      markDirty(s);
      panels.renderBoxes();
      toast('Restored labels that were not saved yet', 'info');
    } else {
      s.boxes = mine;
      s.dirty = true;
      s.conflict = true;
      panels.setSaveState('conflict');
      resolveConflict(s);
    }
  }

  /** The status the image has, or will have once the save under way lands: what an undo step brings back. */
  function statusNow() {
    const s = state.session;
    if (!s) return null;
    return { status: s.dirty || s.saving ? statusFor(s.boxes, s.wantStatus) || 'labeled' : s.status };
  }

  /** The labeler changed the boxes: keep them in the session and save soon (a viewer's edit is put back). An
   * undo or redo also brings back the status the image had then (`restored`): undoing "Copy previous" on an
   * unlabeled image leaves it unlabeled, not labeled with no boxes. */
  function boxesEdited(reason, restored) {
    const s = state.session;
    if (!s) return;
    if (!canWrite) {
      toast('You can look but not change: viewers cannot label.', 'error');
      labeler.replaceBoxes(s.boxes);
      return;
    }
    s.boxes = labeler.boxes.map((b) => ({ ...b }));
    s.wantStatus = restored && restored.status ? restored.status : null;
    markDirty(s);
    panels.renderBoxes();
  }

  async function markReviewed() {
    const s = state.session;
    if (!s) return;
    const pending = s.boxes.filter(isPending).length;
    if (pending) {
      toast(`Accept or reject the ${pending} suggested box${pending === 1 ? '' : 'es'} first.`, 'error', 5000);
      return;
    }
    s.wantStatus = 'reviewed';
    s.dirty = true;
    writeDraft(s);
    await save(s);
    if (!state.session.dirty) toast('Marked as reviewed', 'ok');
  }

  /** beforeunload: the draft is in localStorage already; try to save it on the way out as well. */
  function saveOnUnload() {
    const s = state.session;
    if (s && s.dirty && !s.conflict) {
      const boxes = s.boxes.map(normalizeBox);
      const status = statusFor(boxes, s.wantStatus);
      fetch(`${API_PREFIX}/images/${s.id}/annotations`, {
        method: 'PUT', credentials: 'same-origin', keepalive: true,
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ version: s.version, boxes, ...(status ? { status } : {}) }),
      }).catch(() => {});
    }
  }

  return { save, restoreDraft, boxesEdited, statusNow, markReviewed, saveOnUnload };
}
