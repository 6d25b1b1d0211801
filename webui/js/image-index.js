// Ordered image lists per (dataset, filter), shared by the grid and the labeler: a sparse window onto a list
// of any length.
//
// The API pages by keyset (after=<id> forward, before=<id> backward, around=<id> for the page holding one
// image) and gives every page its `offset` (the position of its first item) and the list's `total`. What is
// loaded is kept by ImageWindows (image-windows.js); ImageIndex extends it with the loading. A deep link loads
// one page around its image; the grid and the labeler then grow the window in both directions. A grid scrolled
// far from any window seeks: it guesses the id at that position from the windows it has (ids rise with the
// position) and asks for the page after that id, which tells where it landed.
//
//   const index = getIndex(datasetId, { status, class_id });
//   await index.ensureId(17);            // one request (around=17) unless image 17 is loaded already
//   index.indexOf(17); index.at(pos); index.get(17); index.total;
//   await index.ensureRange(from, to);   // positions [from, to) loaded (clamped to the list)
//   index.want(from, to);                // the same in the background, latest call wins (the grid)

import { api, ApiError } from './api.js';
import { ImageWindows } from './image-windows.js';

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

export class ImageIndex extends ImageWindows {
  constructor(datasetId, filter = {}) {
    super(datasetId, filter);
    this.requests = 0;
    this.lock = Promise.resolve();
    this.wanted = null;
    this.wanting = null;
  }

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
}

const cache = new Map();

/** The list filter of a '#/…?status=…&class=…' query (the dataset grid and the labeler share it). */
export function filterFromQuery(query) {
  const classParam = query.get('class');
  return { status: query.get('status') || null, class_id: classParam === null || classParam === '' ? null : Number(classParam) };
}

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
