// Decoded images and their annotations, kept across page changes (least recently used dropped first), so coming
// back to the labeler, or going to the next image, is instant.

import { api, imageUrl } from '../api.js';

const CACHE_SIZE = 40;
const cache = new Map(); // image id -> { img: Promise<HTMLImageElement>, ann: Promise<annotations>, fetchedAt }

/** The entry of an image, fetched now if it is not cached; a failed fetch leaves the cache. */
export function cacheEntry(id) {
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

/** The annotations the server holds now (after a save or a conflict choice) replace the cached ones. */
export function cacheAnnotations(id, annotations) {
  const entry = cache.get(id);
  if (entry) entry.ann = Promise.resolve(annotations);
}

export function cachedIds() {
  return [...cache.keys()];
}
