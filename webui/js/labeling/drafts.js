// Unsaved boxes of an image in localStorage, with the version they were based on: they survive a reload, a lost
// session or a closed tab, and are offered again when the image is opened next.

const DRAFT_PREFIX = 'appliance.draft.';

export function readDraft(id) {
  try {
    const raw = localStorage.getItem(DRAFT_PREFIX + id);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

export function writeDraft(session) {
  try {
    localStorage.setItem(DRAFT_PREFIX + session.id, JSON.stringify({
      base_version: session.version, boxes: session.boxes, status: session.wantStatus || null,
      saved_at: new Date().toISOString(),
    }));
  } catch {
    /* storage full or disabled: the autosave still runs */
  }
}

export function dropDraft(id) {
  try {
    localStorage.removeItem(DRAFT_PREFIX + id);
  } catch {
    /* ignore */
  }
}
