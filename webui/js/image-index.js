// Ordered image lists per (dataset, filter), shared by the grid and the labeler: a sparse window onto a list
// of any length.
//
// The API pages by keyset (after=<id> forward, before=<id> backward, around=<id> for the page holding one
// image) and gives every page its `offset` (the position of its first item) and the list's `total`. Items are
// kept by position; `runs` are the loaded windows ([start, end) position ranges, sorted, merged when they
// touch). A deep link loads one page around its image; the grid and the labeler then grow the window in both
// directions. A grid scrolled far from any window seeks: it guesses the id at that position from the windows
// it has (ids rise with the position) and asks for the page after that id, which tells where it landed.
//
//   const index = getIndex(datasetId, { status, class_id });
//   await index.ensureId(17);            // one request (around=17) unless image 17 is loaded already
//   index.indexOf(17); index.at(pos); index.get(17); index.total;
//   await index.ensureRange(from, to);   // positions [from, to) loaded (clamped to the list)
//   index.want(from, to);                // the same in the background, latest call wins (the grid)

import { api, ApiError } from './api.js';

let PAGE = 500;
const MAX_STEPS = 24; // steps (a request or a few each) one ensureRange/want burst makes before it gives up

/** Page size of the list requests; tests make it small so window edges are a few key presses away. */
export function setPageSize(size) {
  PAGE = Math.max(2, Math.min(500, Math.floor(size)));
}

export function pageSize() {
  return PAGE;
}

export function filterKey(filter = {}) {
  return `${filter.status || ''}|${filter.class_id ?? ''}`;
}

export class ImageIndex {
  constructor(datasetId, filter = {}) {
    this.datasetId = datasetId;
    this.filter = { status: filter.status || null, class_id: filter.class_id ?? null };
    this.items = new Map(); // position -> image
    this.positions = new Map(); // image id -> position
    this.runs = []; // loaded windows: { start, end }, sorted, disjoint and not touching
    this.total = null; // unknown until the first page arrives
    this.marks = []; // [position, id] learnt by seeks: the images before `position` have ids below `id`
    this.requests = 0;
    this.added = 0; // images placed where nothing (or another image) was: how loading measures progress
    this.lock = Promise.resolve();
    this.wanted = null;
    this.wanting = null;
    this.listeners = new Set();
  }

  /** Length of the whole list (0 until the first page is in). */
  get length() {
    return this.total ?? 0;
  }

  /** Number of images loaded. */
  get loaded() {
    return this.items.size;
  }

  indexOf(id) {
    const pos = this.positions.get(Number(id));
    return pos === undefined ? -1 : pos;
  }

  at(pos) {
    return this.items.get(pos);
  }

  get(id) {
    const pos = this.indexOf(id);
    return pos < 0 ? null : this.items.get(pos);
  }

  onChange(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit() {
    for (const listener of this.listeners) listener(this);
  }

  /** Are positions [from, to) loaded (clamped to the list)? False while the length is unknown. */
  covered(from, to) {
    if (this.total === null) return false;
    const [a, b] = this.clamp(from, to);
    return a >= b || this.firstMissing(a, b) >= b;
  }

  clamp(from, to) {
    return [Math.max(0, Math.floor(from)), Math.min(this.total ?? 0, Math.ceil(to))];
  }

  firstMissing(from, to) {
    let p = from;
    for (const run of this.runs) {
      if (run.start > p || p >= to) break;
      if (run.end > p) p = run.end;
    }
    return p;
  }

  // --- loading -----------------------------------------------------------------------------------

  /** Make sure at least the first `count` items are loaded (or the whole list, if shorter). */
  ensure(count) {
    return this.ensureRange(0, count);
  }

  /** Load what is missing of positions [from, to), one request at a time, extending the nearest window. */
  async ensureRange(from, to) {
    for (let steps = 0; steps < MAX_STEPS; steps += 1) {
      if (this.covered(from, to)) return;
      const progressed = await this.exclusive(() => this.step(from, to));
      if (!progressed) return;
    }
  }

  /** ensureRange in the background for a moving target (the grid's visible rows): the latest range wins. */
  want(from, to) {
    this.wanted = [from, to];
    if (this.wanting) return;
    let last = null;
    this.wanting = this.fillWanted((range) => { last = range; })
      .catch(() => {}) // the next paint asks again; a 401 has sent the user to the login already
      .finally(() => {
        const pending = this.wanted;
        this.wanting = null;
        this.wanted = null;
        if (pending && pending !== last) this.want(...pending); // asked for while the loop was ending
      });
  }

  async fillWanted(seen) {
    for (let steps = 0; steps < MAX_STEPS && this.wanted; steps += 1) {
      const range = this.wanted;
      seen(range);
      if (this.covered(...range)) return;
      const progressed = await this.exclusive(() => this.step(...range));
      if (!progressed && range === this.wanted) return;
    }
  }

  /** Find the image's position: ONE request (a page around it) when it is not loaded. False if not in the list. */
  async ensureId(id) {
    id = Number(id);
    if (!Number.isInteger(id) || id <= 0) return false; // '#/…/label/abc': not an id
    if (this.positions.has(id)) return true;
    try {
      await this.exclusive(async () => {
        if (this.positions.has(id)) return;
        this.placeAt(await this.fetch({ around: id }));
      });
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return false; // not in this filter (or gone)
      throw err;
    }
    return this.positions.has(id);
  }

  /** Run one loading task at a time, so concurrent callers see each other's pages instead of repeating them. */
  exclusive(task) {
    const run = this.lock.then(task);
    this.lock = run.catch(() => {});
    return run;
  }

  fetch(params) {
    this.requests += 1;
    const query = api.qs({ ...this.filter, ...params, limit: PAGE });
    return api.get(`/datasets/${this.datasetId}/images${query}`);
  }

  /** A request or a few towards covering [from, to); false when nothing new could be loaded. */
  async step(from, to) {
    if (this.total === null) {
      this.placeAt(await this.fetch({ after: 0 }));
      return true;
    }
    const [a, b] = this.clamp(from, to);
    const p = this.firstMissing(a, b);
    if (p >= b) return false;
    const before = this.runs.filter((r) => r.end <= p).pop(); // the window just before the gap
    const after = this.runs.find((r) => r.start > p); // and the one just after it
    const gapEnd = Math.min(b, after ? after.start : this.total);
    const addedBefore = this.added;
    // Walk a page from a window when that covers the gap within two pages; otherwise jump (seek).
    const forward = before ? Math.ceil((gapEnd - before.end) / PAGE) : Infinity;
    const backward = after ? Math.ceil((after.start - p) / PAGE) : Infinity;
    if (forward <= 2 && forward <= backward) {
      await this.walk(before, 'forward');
    } else if (backward <= 2) {
      await this.walk(after, 'backward');
    } else {
      await this.seek(p, gapEnd, before, after);
      if (this.added === addedBefore) {
        // Every guess landed on loaded windows: walk towards the gap instead (always moves).
        const left = this.runs.filter((r) => r.end <= p).pop();
        const right = this.runs.find((r) => r.start > p);
        if (left) await this.walk(left, 'forward');
        else if (right) await this.walk(right, 'backward');
      }
    }
    return this.added > addedBefore;
  }

  async walk(run, direction) {
    if (direction === 'forward') {
      this.extend(await this.fetch({ after: this.items.get(run.end - 1).id }), run, direction);
    } else {
      this.extend(await this.fetch({ before: this.items.get(run.start).id }), run, direction);
    }
  }

  /**
   * Jump into the gap [gapStart, gapEnd) far from any window: guess the id at its middle from the windows
   * (ids rise with the position), ask for the page after that id; the page's offset says where it landed.
   * A miss narrows the ids the gap can hold (between the windows' ids and the misses): bisect from there.
   */
  async seek(gapStart, gapEnd, before, after) {
    const first = Math.max(0, Math.floor((gapStart + gapEnd) / 2) - Math.floor(PAGE / 2));
    let low = before ? this.items.get(before.end - 1).id : 0; // the gap's ids are > low and < high
    let high = after ? this.items.get(after.start).id : Infinity;
    for (const [pos, id] of this.marks) {
      if (pos >= gapEnd) high = Math.min(high, id);
      else if (pos <= gapStart) low = Math.max(low, id - 1);
    }
    let guess = this.estimateId(first);
    for (let tries = 0; tries < 4; tries += 1) {
      let page = await this.fetch({ after: Math.max(0, guess - 1) });
      const total = this.total;
      this.placeAt(page);
      if (this.total !== total) [low, high] = [0, Infinity]; // the list changed: what we knew is off
      this.mark(page.offset, guess); // after=guess-1 starts at the rank of `guess`, even when empty
      if (!page.items.length && page.total > 0) {
        page = await this.fetch({ before: Math.max(1, guess) }); // past the last id: the last page
        this.placeAt(page);
      }
      const n = page.items.length;
      if (!n) return;
      if (page.offset >= gapEnd) high = Math.min(high, guess, page.items[0].id);
      else if (page.offset + n <= gapStart) low = Math.max(low, page.items[n - 1].id);
      else return; // part of the gap is loaded now
      let next = this.estimateId(first);
      if (next <= low || next >= high || next === guess) {
        next = Number.isFinite(high) ? Math.floor((low + high) / 2) : low + 2 * Math.max(PAGE, low - guess);
      }
      if (next <= low || next >= high || next === guess) return;
      guess = next;
    }
  }

  mark(pos, id) {
    this.marks = this.marks.filter((m) => m[1] !== id).slice(-63);
    this.marks.push([pos, id]);
  }

  /** Interpolate the id at a position between what is known: the windows' first and last images, the marks. */
  estimateId(pos) {
    const anchors = [...this.marks];
    for (const run of this.runs) {
      anchors.push([run.start, this.items.get(run.start).id]);
      if (run.end - 1 > run.start) anchors.push([run.end - 1, this.items.get(run.end - 1).id]);
    }
    anchors.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    if (!anchors.length) return pos + 1;
    let low = null;
    let high = null;
    for (const anchor of anchors) {
      if (anchor[0] <= pos) low = anchor;
      if (anchor[0] >= pos && !high) high = anchor;
    }
    if (low && high) {
      if (high[0] === low[0]) return low[1];
      return Math.round(low[1] + ((pos - low[0]) * (high[1] - low[1])) / (high[0] - low[0]));
    }
    // Outside every window: ids grow at least by one per position, on average by the slope seen so far.
    const a = anchors[0];
    const z = anchors[anchors.length - 1];
    const slope = z[0] > a[0] ? Math.max(1, (z[1] - a[1]) / (z[0] - a[0])) : 1;
    if (!low) return Math.max(1, Math.min(high[1] - (high[0] - pos), Math.round(high[1] - (high[0] - pos) * slope)));
    return Math.round(low[1] + (pos - low[0]) * slope);
  }

  // --- placing pages ---------------------------------------------------------------------------

  /**
   * A page that grows a window: placed right next to it, whatever its offset says. If images joined or left
   * the filter meanwhile (the labeler changes statuses), the window stays as the user has been seeing it.
   */
  extend(page, run, direction) {
    const n = page.items.length;
    if (direction === 'forward') {
      const start = run.end;
      this.put(page.items, start);
      this.total = Math.max(page.total, this.maxEnd(), start + n + (page.next_cursor === null ? 0 : 1));
      if (page.next_cursor === null) this.endAt(start + n);
    } else {
      let start = run.start - n;
      if (start < 0 || (page.prev_cursor === null && start !== 0)) {
        // The window's positions were off (the list changed): re-base everything on this page's offset.
        const delta = page.offset - start;
        this.shift(delta);
        start += delta;
      }
      this.put(page.items, start);
      this.total = Math.max(page.total, this.maxEnd());
    }
    this.emit();
  }

  /** A page placed where the server says (first page, around, seek). */
  placeAt(page) {
    if (this.total !== null && page.total !== this.total) this.clear(); // the list changed: old windows are off
    this.total = page.total;
    this.put(page.items, page.offset);
    if (page.next_cursor === null && page.items.length) this.endAt(page.offset + page.items.length);
    this.emit();
  }

  put(items, start) {
    const n = items.length;
    if (!n) return;
    // Whatever disagrees with this page (an id at another position, another id at a position, ids out of
    // order across the edges) belongs to an outdated window: drop that window.
    for (let i = 0; i < n; i += 1) {
      const had = this.positions.get(items[i].id);
      if (had !== undefined && had !== start + i) this.dropRunAt(had);
      const there = this.items.get(start + i);
      if (there && there.id !== items[i].id) this.dropRunAt(start + i);
    }
    const left = this.items.get(start - 1);
    if (left && left.id >= items[0].id) this.dropRunAt(start - 1);
    const right = this.items.get(start + n);
    if (right && right.id <= items[n - 1].id) this.dropRunAt(start + n);
    for (let i = 0; i < n; i += 1) {
      if (this.items.get(start + i)?.id !== items[i].id) this.added += 1;
      this.items.set(start + i, items[i]);
      this.positions.set(items[i].id, start + i);
    }
    this.addRun(start, start + n);
  }

  addRun(start, end) {
    const runs = [];
    let merged = { start, end };
    for (const run of this.runs) {
      if (run.end < merged.start || run.start > merged.end) runs.push(run);
      else merged = { start: Math.min(run.start, merged.start), end: Math.max(run.end, merged.end) };
    }
    runs.push(merged);
    runs.sort((x, y) => x.start - y.start);
    this.runs = runs;
  }

  dropRunAt(pos) {
    const run = this.runs.find((r) => r.start <= pos && pos < r.end);
    if (!run) return;
    for (let p = run.start; p < run.end; p += 1) {
      const item = this.items.get(p);
      if (item && this.positions.get(item.id) === p) this.positions.delete(item.id);
      this.items.delete(p);
    }
    this.runs = this.runs.filter((r) => r !== run);
  }

  /** The list ends at `end`: nothing loaded may lie beyond it. */
  endAt(end) {
    for (const run of this.runs) {
      for (let p = Math.max(run.start, end); p < run.end; p += 1) {
        const item = this.items.get(p);
        if (this.positions.get(item.id) === p) this.positions.delete(item.id);
        this.items.delete(p);
      }
    }
    this.runs = this.runs.filter((r) => r.start < end).map((r) => ({ start: r.start, end: Math.min(r.end, end) }));
    this.total = end;
  }

  maxEnd() {
    return this.runs.length ? this.runs[this.runs.length - 1].end : 0;
  }

  shift(delta) {
    this.marks = [];
    const items = new Map();
    for (const [pos, item] of this.items) {
      items.set(pos + delta, item);
      this.positions.set(item.id, pos + delta);
    }
    this.items = items;
    this.runs = this.runs.map((r) => ({ start: r.start + delta, end: r.end + delta }));
  }

  clear() {
    this.marks = [];
    this.items.clear();
    this.positions.clear();
    this.runs = [];
  }

  /** Update one item (after a save) so the grid shows its new status and box count. */
  update(id, patch) {
    const item = this.get(id);
    // A filtered list no longer matches once an image changes status or classes; reload it next time.
    if (this.filter.status || this.filter.class_id !== null) this.stale = true;
    if (item) {
      Object.assign(item, patch);
      this.emit();
    }
  }
}

const cache = new Map();

export function getIndex(datasetId, filter = {}, { fresh = false } = {}) {
  const key = `${datasetId}:${filterKey(filter)}`;
  let index = cache.get(key);
  if (!index || (fresh && index.stale)) {
    index = new ImageIndex(Number(datasetId), filter);
    cache.set(key, index);
  }
  return index;
}

/** Forget every list of a dataset (after an upload or a delete). */
export function invalidate(datasetId) {
  for (const key of [...cache.keys()]) {
    if (key.startsWith(`${datasetId}:`)) cache.delete(key);
  }
}

/** Update an image in every cached list of its dataset. */
export function updateImage(datasetId, id, patch) {
  for (const [key, index] of cache) {
    if (key.startsWith(`${datasetId}:`)) index.update(id, patch);
  }
}

// The image the labeler showed last, per dataset: the grid opens scrolled to it.
const focus = new Map();

export function setFocus(datasetId, id) {
  focus.set(Number(datasetId), Number(id));
}

/** The last labeled image of the dataset, once (the grid scrolls to it when it opens next). */
export function takeFocus(datasetId) {
  const id = focus.get(Number(datasetId));
  focus.delete(Number(datasetId));
  return id ?? null;
}
