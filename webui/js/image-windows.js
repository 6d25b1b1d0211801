// The positions of an image list that are loaded: a sparse window onto a list of any length (see image-index.js,
// which loads the pages; this module only places them).
//
// Items are kept by position; `runs` are the loaded windows ([start, end) position ranges, sorted, merged when they
// touch). A page that disagrees with what is loaded (an id at another position, ids out of order across an edge)
// means the list changed on the server: the window it contradicts is dropped rather than shown wrong.

export class ImageWindows {
  constructor(datasetId, filter = {}) {
    this.datasetId = datasetId;
    this.filter = { status: filter.status || null, class_id: filter.class_id ?? null };
    this.items = new Map(); // position -> image
    this.positions = new Map(); // image id -> position
    this.runs = []; // loaded windows: { start, end }, sorted, disjoint and not touching
    this.total = null; // unknown until the first page arrives
    this.marks = []; // [position, id] learnt by seeks: the images before `position` have ids below `id`
    this.added = 0; // images placed where nothing (or another image) was: how loading measures progress
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
