// Upload many files in batches, one progress bar per batch, then a summary (added, duplicates, rejected + reason).

import { api, ApiError } from '../api.js';
import { h } from '../dom.js';

const BATCH_FILES = 50;
const BATCH_BYTES = 64 * 1024 * 1024;

export function batchesOf(files) {
  const batches = [];
  let current = [];
  let bytes = 0;
  for (const file of files) {
    if (current.length && (current.length >= BATCH_FILES || bytes + file.size > BATCH_BYTES)) {
      batches.push(current);
      current = [];
      bytes = 0;
    }
    current.push(file);
    bytes += file.size;
  }
  if (current.length) batches.push(current);
  return batches;
}

/**
 * Upload `files` into the dataset, drawing progress into `panel`; resolves with the merged result
 * {added: [...], duplicates: [...], rejected: [...]}.
 */
export async function uploadFiles(datasetId, files, panel) {
  const batches = batchesOf(files);
  const result = { added: [], duplicates: [], rejected: [] };
  const list = h('ol.batches', { testid: 'upload-batches' });
  panel.replaceChildren(h('h3', `Uploading ${files.length} file${files.length === 1 ? '' : 's'}`), list);
  const bars = batches.map((batch, i) => {
    const bar = h('progress', { max: 1, value: 0, testid: 'batch-progress' });
    const label = h('span.batch-state', 'waiting');
    list.append(h('li', { testid: 'upload-batch' }, h('span', `Batch ${i + 1} (${batch.length} files)`), bar, label));
    return { bar, label };
  });
  for (let i = 0; i < batches.length; i += 1) {
    const { bar, label } = bars[i];
    label.textContent = 'uploading';
    try {
      const answer = await api.upload(`/datasets/${datasetId}/images`, batches[i], {
        onProgress: (loaded, total) => {
          bar.value = total ? loaded / total : 0;
        },
      });
      bar.value = 1;
      result.added.push(...answer.added);
      result.duplicates.push(...answer.duplicates);
      result.rejected.push(...answer.rejected);
      label.textContent = `${answer.added.length} added`;
    } catch (err) {
      const reason = err instanceof ApiError ? err.detail : String(err);
      for (const file of batches[i]) result.rejected.push({ name: file.name, status_code: err.status || 0, reason });
      label.textContent = 'failed';
      label.classList.add('error');
      if (err instanceof ApiError && err.status === 401) break;
    }
  }
  panel.append(summary(result),
    h('div.actions', h('button', { type: 'button', testid: 'upload-close',
      onclick: () => panel.classList.remove('open') }, 'Close')));
  return result;
}

function summary(result) {
  const item = (entry) => h('li', h('span.file', entry.name), ' — ', h('span.reason', entry.reason));
  return h('div.upload-summary', { testid: 'upload-summary' },
    h('p',
      h('strong', { testid: 'summary-added' }, String(result.added.length)), ' added, ',
      h('strong', { testid: 'summary-duplicates' }, String(result.duplicates.length)), ' duplicates, ',
      h('strong', { testid: 'summary-rejected' }, String(result.rejected.length)), ' rejected'),
    result.rejected.length
      ? h('details', { open: true }, h('summary', 'Rejected'),
        h('ul', { testid: 'rejected-list' }, result.rejected.map((r) => {
          const li = item(r);
          li.dataset.testid = 'rejected-item';
          return li;
        })))
      : null,
    result.duplicates.length
      ? h('details', h('summary', 'Duplicates (already in the dataset)'),
        h('ul', { testid: 'duplicate-list' }, result.duplicates.map((d) => {
          const li = item(d);
          li.dataset.testid = 'duplicate-item';
          return li;
        })))
      : null);
}
