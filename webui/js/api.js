// The console's API client: JSON over fetch with the session cookie, one error type, upload with progress, SSE.
//
//   import { api, ApiError } from '../api.js';
//   const datasets = await api.get('/datasets');            // paths are relative to /api/v1
//   await api.post('/datasets', { name, classes });          // body is sent as JSON
//   try { ... } catch (err) { if (err instanceof ApiError && err.status === 409) ... }
//   await api.upload('/datasets/3/images', files, { onProgress: (loaded, total) => ... });   // multipart
//   await api.upload('/datasets/3/imports/archive?filename=a.zip', file, { raw: true, onProgress });  // body = the file
//   const stop = api.events('/training-jobs/5/events', { onMessage: (data, type) => ... });  // stop() closes

export const API_PREFIX = '/api/v1';

export class ApiError extends Error {
  constructor(status, detail, body = null) {
    super(detail || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.detail = detail || `HTTP ${status}`;
    this.body = body;
  }
}

// Calls that answer 401 as part of their meaning (wrong password), not because the session ended.
const NO_REDIRECT = ['/auth/login', '/auth/setup', '/auth/me', '/auth/session'];

let unauthorizedHandler = null;
/** app.js installs the handler that sends the user to the login page ("session expired"). */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

function sessionExpired(path) {
  // Pages listen for this to stash unsaved work before the login page replaces them.
  window.dispatchEvent(new CustomEvent('appliance:session-expired', { detail: { path } }));
  if (unauthorizedHandler) unauthorizedHandler();
}

async function parseBody(response) {
  if (response.status === 204) return null;
  const type = response.headers.get('content-type') || '';
  if (type.includes('application/json')) return response.json();
  return response.text();
}

function errorFrom(status, body) {
  const detail = body && typeof body === 'object' ? body.detail : typeof body === 'string' ? body : '';
  return new ApiError(status, detail || `request failed with HTTP ${status}`, body);
}

/** The text to show for a failed call: the API's detail, or the error's own message. */
export function errorText(err) {
  return err instanceof ApiError ? err.detail : String(err && err.message ? err.message : err);
}

export async function request(method, path, body, { signal, redirectOn401 = true } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' }, signal };
  if (body !== undefined && body !== null) {
    if (body instanceof FormData) {
      init.body = body;
    } else {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
  }
  let response;
  try {
    response = await fetch(API_PREFIX + path, init);
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, 'the appliance did not answer (network error)');
  }
  const data = await parseBody(response).catch(() => null);
  if (!response.ok) {
    if (response.status === 401 && redirectOn401 && !NO_REDIRECT.some((p) => path.startsWith(p))) {
      sessionExpired(path);
    }
    throw errorFrom(response.status, data);
  }
  return data;
}

export const api = {
  get: (path, opts) => request('GET', path, null, opts),
  post: (path, body, opts) => request('POST', path, body ?? {}, opts),
  put: (path, body, opts) => request('PUT', path, body ?? {}, opts),
  patch: (path, body, opts) => request('PATCH', path, body ?? {}, opts),
  del: (path, opts) => request('DELETE', path, null, opts),
  upload,
  events,
  /** Query string from an object, skipping null/undefined/'' values. */
  qs(params) {
    const parts = Object.entries(params || {})
      .filter(([, v]) => v !== null && v !== undefined && v !== '')
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
    return parts.length ? `?${parts.join('&')}` : '';
  },
};

/**
 * Upload with progress (fetch cannot report upload progress; XMLHttpRequest can). By default `files` are sent as
 * multipart parts named `field`, after the `extra` fields; with `raw: true`, `files` is one File or Blob sent as the
 * request body itself (application/octet-stream, which the server streams to disk: archives).
 * Resolves with the parsed JSON answer; rejects with ApiError, and a 401 ends the session as for any request.
 * Returns a promise with .abort().
 */
export function upload(path, files, { field = 'files', onProgress, extra = {}, raw = false } = {}) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open('POST', API_PREFIX + path);
    xhr.withCredentials = true;
    xhr.setRequestHeader('Accept', 'application/json');
    let body = files;
    if (raw) {
      xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    } else {
      body = new FormData();
      for (const [k, v] of Object.entries(extra)) body.append(k, v);
      for (const file of files) body.append(field, file, file.name);
    }
    xhr.upload.onprogress = (event) => {
      if (onProgress && event.lengthComputable) onProgress(event.loaded, event.total);
    };
    xhr.onload = () => {
      let data = null;
      try {
        data = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        data = xhr.responseText;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(data);
        return;
      }
      if (xhr.status === 401) sessionExpired(path);
      reject(errorFrom(xhr.status, data));
    };
    xhr.onerror = () => reject(new ApiError(0, 'the appliance did not answer (network error)'));
    xhr.onabort = () => reject(new ApiError(0, 'upload cancelled'));
    xhr.send(body);
  });
  promise.abort = () => xhr.abort();
  return promise;
}

/**
 * Server-sent events: onMessage(data, type, event) with data parsed as JSON when it is JSON.
 * `types` lists named events to listen for besides the default "message". Returns a close function.
 */
export function events(path, { onMessage, onError, onOpen, types = [] } = {}) {
  const source = new EventSource(API_PREFIX + path, { withCredentials: true });
  const deliver = (type) => (event) => {
    let data = event.data;
    try {
      data = JSON.parse(event.data);
    } catch {
      /* plain text event */
    }
    if (onMessage) onMessage(data, type, event);
  };
  source.addEventListener('message', deliver('message'));
  for (const type of types) source.addEventListener(type, deliver(type));
  if (onOpen) source.addEventListener('open', onOpen);
  source.addEventListener('error', (event) => {
    if (onError) onError(event, source);
  });
  return () => source.close();
}

/** URL of an image file / thumbnail (for <img src> and canvas drawing). */
export const imageUrl = (id) => `${API_PREFIX}/images/${id}/file`;
export const thumbUrl = (id) => `${API_PREFIX}/images/${id}/thumbnail`;
