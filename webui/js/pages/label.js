// The labeling view: one image at a time on a canvas, keyboard-driven, autosaved with the annotation version.

import { api, ApiError, imageUrl } from '../api.js';
import { h, modal, toast } from '../dom.js';
import { getIndex, pageSize, setFocus, updateImage } from '../image-index.js';
import { Labeler, normalizeBox, sameBoxes } from '../labeler.js';
import { createSuggestions } from '../suggest.js';
import { datasetTabs } from './dataset.js';

const SAVE_DELAY_MS = 300;
const CACHE_SIZE = 40;
// Neighbours kept loaded in the image list around the current image: the next page is asked for this far
// from a window's edge (at most a quarter page), so next/previous do not wait for it.
const LIST_MARGIN = 30;
const DRAFT_PREFIX = 'appliance.draft.';

// Decoded images and annotations survive page changes, so coming back to the labeler is instant.
const cache = new Map();

function cacheEntry(id) {
  let entry = cache.get(id);
  if (entry) {
    cache.delete(id); // refresh LRU position
    cache.set(id, entry);
    return entry;
  }
  const img = new Image();
  img.decoding = 'async';
  img.src = imageUrl(id);
  entry = {
    img: img.decode().then(() => img),
    ann: api.get(`/images/${id}/annotations`),
    fetchedAt: performance.now(),
  };
  entry.img.catch(() => cache.delete(id));
  entry.ann.catch(() => cache.delete(id));
  cache.set(id, entry);
  while (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value);
  return entry;
}

function readDraft(id) {
  try {
    const raw = localStorage.getItem(DRAFT_PREFIX + id);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

function writeDraft(session) {
  try {
    localStorage.setItem(DRAFT_PREFIX + session.id, JSON.stringify({
      base_version: session.version, boxes: session.boxes, status: session.wantStatus || null,
      saved_at: new Date().toISOString(),
    }));
  } catch {
    /* storage full or disabled: the autosave still runs */
  }
}

function dropDraft(id) {
  try {
    localStorage.removeItem(DRAFT_PREFIX + id);
  } catch {
    /* ignore */
  }
}

const HELP = [
  ['Drag on the image', 'draw a box with the active class'],
  ['Click a box / drag it / drag a handle', 'select / move / resize'],
  ['1 … 9', 'choose the class (changes the selected box)'],
  ['Del, Backspace', 'delete the selected box'],
  ['Ctrl+Z, Ctrl+Shift+Z (Ctrl+Y)', 'undo, redo'],
  ['D or →, A or ←', 'next, previous image'],
  ['N', 'next unlabeled image'],
  ['C', 'copy the boxes of the previous image'],
  ['R', 'mark the image as reviewed'],
  ['Wheel, + / -', 'zoom at the cursor, zoom in / out'],
  ['Space+drag, middle button drag', 'pan'],
  ['F, 0', 'fit to screen, actual size (100 %)'],
  ['Esc', 'deselect, cancel, close'],
  ['?', 'this help'],
];

export default {
  route: '#/datasets/:id/label/:imageId',
  title: 'Label',
  async render(root, params, ctx) {
    const datasetId = Number(params.id);
    const status = ctx.query.get('status') || null;
    const classParam = ctx.query.get('class');
    const classId = classParam === null || classParam === '' ? null : Number(classParam);
    const filterQuery = api.qs({ status, class: classId });
    const index = getIndex(datasetId, { status, class_id: classId }, { fresh: true });
    // A deep link: the image, its boxes and the page of the list around it load with the dataset.
    const linked = Number(params.imageId);
    let located = null;
    if (Number.isInteger(linked) && linked > 0) {
      cacheEntry(linked);
      located = index.ensureId(linked).catch(() => false);
    }
    const dataset = await api.get(`/datasets/${datasetId}`, { signal: ctx.signal });
    const classes = dataset.classes;
    const canWrite = ctx.user.role !== 'viewer';
    ctx.setTitle(`${dataset.name} · label`);
    root.className = 'fill';

    // --- layout ---
    const canvas = h('canvas', { testid: 'label-canvas', tabindex: 0, 'aria-label': 'image to label' });
    const stage = h('div.stage', { testid: 'stage' }, canvas);
    const nameEl = h('span.image-name', { testid: 'image-name' });
    const posEl = h('span.muted', { testid: 'image-position' });
    const statusEl = h('span.badge', { testid: 'image-status' });
    const saveEl = h('span.save-state', { testid: 'save-state', dataset: { state: 'saved' } }, 'saved');
    const zoomEl = h('span.muted', { testid: 'zoom-level' });
    const classList = h('ol.class-list', { testid: 'class-list' });
    const boxList = h('ol.box-list', { testid: 'box-list' });
    const help = h('div.help-overlay.hidden', { testid: 'help-overlay', role: 'dialog' },
      h('div.card', h('h2', 'Keyboard shortcuts'),
        h('table.keys', HELP.map(([k, v]) => h('tr', h('td', h('kbd', k)), h('td', v)))),
        h('p.muted', 'Every change is saved automatically. Press ? or Esc to close.')));
    const button = (text, testid, onclick, title) => h('button', { type: 'button', testid, onclick, title }, text);
    const actions = h('div.label-actions',
      button('‹ Prev', 'prev-image', () => go(-1), 'A or ←'),
      button('Next ›', 'next-image', () => go(1), 'D or →'),
      button('Next unlabeled', 'next-unlabeled', () => nextUnlabeled(), 'N'),
      canWrite ? button('Copy previous', 'copy-previous', () => copyPrevious(), 'C') : null,
      canWrite ? button('Mark reviewed', 'mark-reviewed', () => markReviewed(), 'R') : null,
      button('Fit', 'zoom-fit', () => labeler.fit(), 'F'),
      button('100 %', 'zoom-actual', () => labeler.actualSize(), '0'),
      button('?', 'help-button', () => toggleHelp(), 'keyboard shortcuts'));
    const side = h('aside.label-side', { testid: 'label-side' },
      h('section', h('h3', 'Classes'), classList),
      h('section', h('h3', 'Boxes'), boxList),
      h('section.small.muted', 'Press ? for shortcuts.'));
    root.append(
      datasetTabs(dataset, 'label'),
      h('div.label-bar', nameEl, posEl, statusEl, h('span.spacer'), zoomEl, saveEl),
      actions,
      h('div.labeler', side, stage),
      help);

    if (!classes.length) {
      stage.replaceChildren(h('p.empty', { testid: 'no-classes' }, 'This dataset has no classes yet. ',
        h('a', { href: `#/datasets/${datasetId}/settings` }, 'Add classes in the settings'), ' first.'));
    }

    // --- state ---
    let session = null; // { id, meta, version, status, boxes, dirty, saving, again, timer, conflict }
    let showSeq = 0;
    let drawnImageId = null;
    let leaving = false;

    const labeler = new Labeler(canvas, {
      classes,
      onChange: () => {
        if (!session) return;
        if (!canWrite) {
          toast('You can look but not change: viewers cannot label.', 'error');
          labeler.replaceBoxes(session.boxes);
          return;
        }
        session.boxes = labeler.boxes.map((b) => ({ ...b }));
        session.wantStatus = null;
        markDirty(session);
        renderBoxes();
      },
      onSelect: () => {
        renderClasses();
        renderBoxes();
      },
      onView: () => {
        zoomEl.textContent = `${Math.round(labeler.scale * 100)} %`;
      },
    });

    // Pre-labeling: proposals of the deployed model (webui/js/suggest.js).
    const suggestions = canWrite ? createSuggestions({ labeler, imageId: () => session && session.id }) : null;
    if (suggestions) {
      actions.append(suggestions.button);
      side.append(suggestions.section);
    }

    function setSaveState(state, text = state) {
      saveEl.dataset.state = state;
      saveEl.textContent = text;
    }

    function renderClasses() {
      classList.replaceChildren(...classes.map((c, i) => h('li', {
        testid: 'class-item', class: i === labeler.activeClass ? 'active' : '', dataset: { classId: i },
        style: { '--chip': c.color }, onclick: () => labeler.setClass(i),
      }, h('kbd', i < 9 ? String(i + 1) : ''), h('span.swatch'), h('span.name', c.name))));
    }

    function renderBoxes() {
      boxList.replaceChildren(...labeler.boxes.map((b, i) => {
        const c = classes[b.class_id] || { name: `class ${b.class_id}`, color: '#fff' };
        return h('li', {
          testid: 'box-item', class: i === labeler.selected ? 'active' : '', style: { '--chip': c.color },
          onclick: () => labeler.select(i),
        }, h('span.swatch'), h('span.name', c.name),
        h('span.muted.small', `${Math.round(b.x2 - b.x1)}×${Math.round(b.y2 - b.y1)}`));
      }));
      if (!labeler.boxes.length) boxList.append(h('li.muted', 'No boxes. Drag on the image to draw one.'));
    }

    function renderInfo() {
      if (!session) return;
      nameEl.textContent = session.meta.original_name;
      const pos = index.indexOf(session.id);
      posEl.textContent = pos >= 0 ? `${pos + 1} / ${index.total}` : '';
      statusEl.textContent = session.status;
      statusEl.className = `badge ${session.status}`;
    }

    // --- saving ---
    function markDirty(s) {
      s.dirty = true;
      writeDraft(s);
      if (s === session) setSaveState('unsaved');
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
      if (s.wantStatus) body.status = s.wantStatus;
      s.dirty = false;
      if (s === session) setSaveState('saving', 'saving…');
      const run = (async () => {
        try {
          const saved = await api.put(`/images/${s.id}/annotations`, body);
          s.version = saved.version;
          s.status = saved.status;
          s.serverBoxes = saved.boxes;
          const entry = cache.get(s.id);
          if (entry) entry.ann = Promise.resolve(saved);
          updateImage(datasetId, s.id, { status: saved.status, box_count: saved.boxes.length, version: saved.version });
          if (!s.dirty) dropDraft(s.id);
          if (s === session) {
            setSaveState(s.dirty ? 'unsaved' : 'saved');
            renderInfo();
          }
        } catch (err) {
          s.dirty = true;
          if (err instanceof ApiError && err.status === 409) {
            s.conflict = true;
            if (s === session) setSaveState('conflict');
            if (s.saving === run) s.saving = null;
            await resolveConflict(s);
            return;
          }
          if (s === session) setSaveState('error', 'not saved');
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

    function boxSummary(boxes) {
      const counts = new Map();
      for (const b of boxes) counts.set(b.class_id, (counts.get(b.class_id) || 0) + 1);
      return h('ul.summary', [...counts].map(([cid, n]) => h('li', h('span.swatch', {
        style: { '--chip': (classes[cid] || {}).color || '#fff' },
      }), `${(classes[cid] || { name: `class ${cid}` }).name}: ${n}`)));
    }

    function preview(img, width, height, boxes) {
      const maxW = 360;
      const scale = Math.min(maxW / width, 240 / height, 1 * 4);
      const c = h('canvas.preview', { width: Math.round(width * scale), height: Math.round(height * scale) });
      const g = c.getContext('2d');
      if (img) g.drawImage(img, 0, 0, c.width, c.height);
      g.lineWidth = 2;
      for (const b of boxes) {
        g.strokeStyle = (classes[b.class_id] || {}).color || '#fff';
        g.strokeRect(b.x1 * scale, b.y1 * scale, (b.x2 - b.x1) * scale, (b.y2 - b.y1) * scale);
      }
      return c;
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
        if (s === session) {
          setSaveState('saved');
          renderInfo();
        }
        return;
      }
      const img = await cacheEntry(s.id).img.catch(() => null);
      const when = theirs.updated_at ? new Date(theirs.updated_at).toLocaleString() : 'unknown time';
      const choice = await modal('Someone else changed this image', (close) => [
        h('p', `While you were editing "${s.meta.original_name}", another change was saved `
          + `(version ${theirs.version}, ${when}). Choose which boxes to keep.`),
        h('div.conflict-columns',
          h('div.conflict-side', { testid: 'conflict-mine' },
            h('h3', `Your version: ${s.boxes.length} boxes`), preview(img, theirs.width, theirs.height, s.boxes),
            boxSummary(s.boxes)),
          h('div.conflict-side', { testid: 'conflict-theirs' },
            h('h3', `Saved version: ${theirs.boxes.length} boxes`),
            preview(img, theirs.width, theirs.height, theirs.boxes), boxSummary(theirs.boxes))),
        h('div.actions',
          h('button', { type: 'button', testid: 'conflict-take-theirs', onclick: () => close('theirs') },
            'Use the saved version'),
          h('button.primary', { type: 'button', testid: 'conflict-keep-mine', onclick: () => close('mine') },
            'Keep my version')),
      ], { testid: 'conflict-dialog', wide: true });
      s.conflict = false;
      s.version = theirs.version;
      s.status = theirs.status;
      if (choice === 'theirs') {
        s.boxes = theirs.boxes.map(normalizeBox);
        s.dirty = false;
        dropDraft(s.id);
        const entry = cache.get(s.id);
        if (entry) entry.ann = Promise.resolve(theirs);
        updateImage(datasetId, s.id, { status: theirs.status, box_count: theirs.boxes.length, version: theirs.version });
        if (s === session) {
          labeler.replaceBoxes(s.boxes);
          renderBoxes();
          renderInfo();
          setSaveState('saved');
        }
      } else if (choice === 'mine') {
        writeDraft(s);
        await save(s);
      } else {
        // Closed without a choice: keep the edits unsaved (and in the local draft); the next change asks again.
        writeDraft(s);
        if (s === session) setSaveState('conflict', 'not saved (conflict)');
      }
    }

    // --- showing images ---
    async function show(id, { replaceUrl = true } = {}) {
      const seq = ++showSeq;
      const previous = session;
      if (previous && previous.dirty) save(previous);
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
      if (seq !== showSeq || leaving) return;
      const meta = index.get(id) || (await api.get(`/images/${id}`));
      if (seq !== showSeq || leaving) return;
      session = {
        id, meta, version: ann.version, status: ann.status, boxes: ann.boxes.map(normalizeBox),
        serverBoxes: ann.boxes, dirty: false, saving: null, again: false, conflict: false, wantStatus: null,
      };
      labeler.setImage(img, ann.width, ann.height, session.boxes);
      drawnImageId = id;
      setFocus(datasetId, id);
      if (replaceUrl) history.replaceState(null, '', `#/datasets/${datasetId}/label/${id}${filterQuery}`);
      renderInfo();
      renderBoxes();
      renderClasses();
      setSaveState('saved');
      if (document.activeElement !== canvas && !document.querySelector('.modal-backdrop')) {
        canvas.focus({ preventScroll: true });
      }
      restoreDraft(session);
      // Network work for the neighbours starts after this frame is on screen.
      const current = session;
      setTimeout(() => {
        if (current !== session) return;
        prefetchAround(id);
        revalidate(current, entry);
      }, 0);
    }

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
        renderBoxes();
        toast('Restored labels that were not saved yet', 'info');
      } else {
        s.boxes = mine;
        s.dirty = true;
        s.conflict = true;
        setSaveState('conflict');
        resolveConflict(s);
      }
    }

    /** A cached annotation may be old: check the server and take its boxes if nothing was edited here. */
    async function revalidate(s, entry) {
      if (performance.now() - entry.fetchedAt < 2000) return;
      try {
        const fresh = await api.get(`/images/${s.id}/annotations`);
        entry.ann = Promise.resolve(fresh);
        entry.fetchedAt = performance.now();
        if (s !== session || s.dirty || s.saving || fresh.version === s.version) return;
        s.version = fresh.version;
        s.status = fresh.status;
        s.boxes = fresh.boxes.map(normalizeBox);
        labeler.replaceBoxes(s.boxes);
        renderBoxes();
        renderInfo();
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

    async function go(step) {
      if (!session) return;
      let pos = index.indexOf(session.id);
      if (pos < 0) {
        await index.ensureId(session.id).catch(() => false);
        pos = index.indexOf(session.id);
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
      if (!session) return;
      const find = (after) => api.get(`/datasets/${datasetId}/images${api.qs({ status: 'unlabeled', after, limit: 2 })}`);
      let page = await find(session.id);
      let item = page.items.find((i) => i.id !== session.id);
      if (!item) {
        page = await find(0);
        item = page.items.find((i) => i.id !== session.id);
      }
      if (!item) {
        toast('Every image is labeled', 'ok');
        return;
      }
      await show(item.id);
    }

    async function copyPrevious() {
      if (!session) return;
      const pos = index.indexOf(session.id);
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

    async function markReviewed() {
      if (!session) return;
      session.wantStatus = 'reviewed';
      session.dirty = true;
      writeDraft(session);
      await save(session);
      if (!session.dirty) toast('Marked as reviewed', 'ok');
    }

    function toggleHelp(force) {
      const hidden = force === undefined ? !help.classList.contains('hidden') : !force;
      help.classList.toggle('hidden', hidden);
    }
    help.addEventListener('mousedown', () => toggleHelp(false));

    // --- keys ---
    const onKeyDown = (e) => {
      const t = e.target;
      if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable)) return;
      if (document.querySelector('.modal-backdrop')) return;
      const key = e.key;
      const lower = key.length === 1 ? key.toLowerCase() : key;
      const mod = e.ctrlKey || e.metaKey;
      if (mod) {
        if (lower === 'z' && !e.shiftKey) labeler.undo();
        else if ((lower === 'z' && e.shiftKey) || lower === 'y') labeler.redo();
        else return;
        e.preventDefault();
        return;
      }
      if (e.altKey) return;
      if (key === '?') {
        toggleHelp();
      } else if (key === 'Escape') {
        if (!help.classList.contains('hidden')) toggleHelp(false);
        else if (labeler.drag) {
          labeler.drag = null;
          labeler.schedule();
        } else labeler.select(-1);
      } else if (key === ' ') {
        labeler.setSpace(true);
      } else if (/^[1-9]$/.test(key)) {
        labeler.setClass(Number(key) - 1);
      } else if (key === 'Delete' || key === 'Backspace') {
        labeler.deleteSelected();
      } else if (lower === 'd' || key === 'ArrowRight') {
        go(1);
      } else if (lower === 'a' || key === 'ArrowLeft') {
        go(-1);
      } else if (lower === 'n') {
        nextUnlabeled();
      } else if (lower === 'f') {
        labeler.fit();
      } else if (key === '0') {
        labeler.actualSize();
      } else if (key === '+' || key === '=') {
        labeler.zoomTo(labeler.scale * 1.25);
      } else if (key === '-' || key === '_') {
        labeler.zoomTo(labeler.scale / 1.25);
      } else if (lower === 'c' && canWrite) {
        copyPrevious();
      } else if (lower === 'r' && canWrite) {
        markReviewed();
      } else {
        return;
      }
      e.preventDefault();
    };
    const onKeyUp = (e) => {
      if (e.key === ' ') labeler.setSpace(false);
    };
    const onBlur = () => labeler.setSpace(false);
    const onBeforeUnload = () => {
      // The draft is in localStorage already; try to save it on the way out as well.
      if (session && session.dirty && !session.conflict) {
        fetch(`/api/v1/images/${session.id}/annotations`, {
          method: 'PUT', credentials: 'same-origin', keepalive: true,
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ version: session.version, boxes: session.boxes.map(normalizeBox) }),
        }).catch(() => {});
      }
    };
    document.addEventListener('keydown', onKeyDown);
    document.addEventListener('keyup', onKeyUp);
    window.addEventListener('blur', onBlur);
    window.addEventListener('beforeunload', onBeforeUnload);
    const resizeObserver = new ResizeObserver(() => labeler.resize());
    resizeObserver.observe(stage);

    // Read-only view for tests and benchmarks (no behaviour hangs on it).
    const hook = {
      get imageId() { return session ? session.id : null; },
      get drawnImageId() { return drawnImageId; },
      get boxes() { return labeler.boxes.map((b) => ({ ...b })); },
      get zoom() { return labeler.scale; },
      get offset() { return { x: labeler.offsetX, y: labeler.offsetY }; },
      get selected() { return labeler.selected; },
      get activeClass() { return labeler.activeClass; },
      get version() { return session ? session.version : null; },
      get status() { return session ? session.status : null; },
      get saveState() { return saveEl.dataset.state; },
      get drawCount() { return labeler.drawCount; },
      get cachedImages() { return [...cache.keys()]; },
      toClient: (x, y) => labeler.toClient(x, y),
    };
    window.__labeler = Object.freeze(hook);

    labeler.resize();
    renderClasses();

    // --- first image ---
    let startId = params.imageId === 'first' ? null : Number(params.imageId);
    if (startId === null) {
      await index.ensure(1);
      const unlabeled = await api.get(`/datasets/${datasetId}/images${api.qs({ status: 'unlabeled', limit: 1 })}`);
      const first = (status || classId !== null) ? index.at(0) : (unlabeled.items[0] || index.at(0));
      if (!first) {
        stage.replaceChildren(h('p.empty', { testid: 'no-images' }, 'No images to label. ',
          h('a', { href: `#/datasets/${datasetId}` }, 'Upload some first.')));
      } else {
        startId = first.id;
      }
    }
    if (startId !== null && classes.length) {
      await (startId === linked && located ? located : index.ensureId(startId).catch(() => false));
      await show(startId);
    }

    return async () => {
      leaving = true;
      document.removeEventListener('keydown', onKeyDown);
      document.removeEventListener('keyup', onKeyUp);
      window.removeEventListener('blur', onBlur);
      window.removeEventListener('beforeunload', onBeforeUnload);
      resizeObserver.disconnect();
      if (suggestions) suggestions.destroy();
      labeler.destroy();
      if (window.__labeler === hook) delete window.__labeler;
      if (session && (session.dirty || session.saving)) {
        try {
          await save(session);
        } catch {
          /* the draft stays in localStorage */
        }
      }
    };
  },
};
