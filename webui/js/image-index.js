// Ordered image lists per (dataset, filter), loaded by keyset pages and shared by the grid and the labeler.
// The API pages forward only (after=<last id>); the list keeps what was loaded so "previous" is instant.

import { api } from './api.js';

const PAGE = 500;
const cache = new Map();

export function filterKey(filter = {}) {
  return `${filter.status || ''}|${filter.class_id ?? ''}`;
}

export class ImageIndex {
  constructor(datasetId, filter = {}) {
    this.datasetId = datasetId;
    this.filter = { status: filter.status || null, class_id: filter.class_id ?? null };
    this.items = [];
    this.positions = new Map();
    this.cursor = 0;
    this.done = false;
    this.total = null;
    this.pending = null;
    this.listeners = new Set();
  }

  get length() {
    return this.items.length;
  }

  indexOf(id) {
    const pos = this.positions.get(Number(id));
    return pos === undefined ? -1 : pos;
  }

  at(i) {
    return this.items[i];
  }

  get(id) {
    const pos = this.indexOf(id);
    return pos < 0 ? null : this.items[pos];
  }

  onChange(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit() {
    for (const listener of this.listeners) listener(this);
  }

  /** Load the next keyset page (one at a time; concurrent callers share the request). */
  loadMore(limit = PAGE) {
    if (this.done) return Promise.resolve(0);
    if (this.pending) return this.pending;
    const query = api.qs({ ...this.filter, after: this.cursor, limit });
    this.pending = api.get(`/datasets/${this.datasetId}/images${query}`)
      .then((page) => {
        for (const item of page.items) {
          if (this.positions.has(item.id)) continue;
          this.positions.set(item.id, this.items.length);
          this.items.push(item);
        }
        this.total = page.total;
        if (page.next_cursor === null || page.next_cursor === undefined) {
          this.done = true;
        } else {
          this.cursor = page.next_cursor;
        }
        this.emit();
        return page.items.length;
      })
      .finally(() => {
        this.pending = null;
      });
    return this.pending;
  }

  /** Make sure at least `count` items are loaded (or the list is complete). */
  async ensure(count) {
    while (!this.done && this.items.length < count) {
      const remaining = count - this.items.length;
      await this.loadMore(Math.min(PAGE, Math.max(remaining, 100)));
    }
  }

  /** Load pages until the image is in the list; false when it is not part of this filter. */
  async ensureId(id) {
    id = Number(id);
    if (!Number.isInteger(id)) return false; // '#/…/label/abc': not an id, don't page through the whole dataset
    while (!this.positions.has(id) && !this.done) {
      const last = this.items.length ? this.items[this.items.length - 1].id : 0;
      if (last > id) break; // ids are ascending: it is not in this filter
      await this.loadMore();
    }
    return this.positions.has(id);
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
