// Import and export: USB folders found under the import roots, archive upload (raw streamed body) with progress,
// format and class choices, import jobs with live progress and their final report; dataset archive downloads and
// export onto a USB drive. Route: #/imports?dataset=ID (the dataset page links here).

import { API_PREFIX, errorText } from '../api.js';
import { formatNumber } from '../components/format.js';
import { clear, h } from '../dom.js';

const FORMATS = [
  ['auto', 'Detect automatically'],
  ['yolo', 'YOLO (txt labels + data.yaml / classes.txt)'],
  ['coco', 'COCO JSON'],
  ['voc', 'Pascal VOC XML'],
  ['plain', 'Plain images (no labels)'],
];
const EXPORTS = [['yolo', 'YOLO (ultralytics)'], ['coco', 'COCO JSON'], ['voc', 'Pascal VOC']];
const TERMINAL = ['completed', 'failed', 'cancelled'];
const POLL_MS = 1000;

function megabytes(n) {
  return n >= 1024 ? `${(n / 1024).toFixed(1)} GB` : `${formatNumber(n)} MB`;
}

function select(testid, options, value) {
  return h('select', { testid },
    options.map(([v, text]) => h('option', { value: v, selected: v === value }, text)));
}

function jobSummary(job) {
  const p = { ...job.progress, ...job.result };
  if (job.kind === 'usb_export') {
    if (job.status === 'completed') return `written to ${job.result.file}`;
    return `${p.phase ? `${p.phase} · ` : ''}${formatNumber(p.bytes_written || 0)} bytes`;
  }
  const parts = [
    `${formatNumber(p.imported || 0)} imported`,
    `${formatNumber(p.duplicates || 0)} duplicates`,
    `${formatNumber(p.skipped || 0)} skipped`,
  ];
  if (p.images_total) parts.unshift(`${formatNumber(p.processed || 0)} / ${formatNumber(p.images_total)} seen`);
  if (p.format) parts.push(p.format);
  return parts.join(' · ');
}

function reportView(job) {
  const r = job.result || {};
  const rows = (r.skipped_items || []).map((item) => h('tr', { testid: 'report-skipped' },
    h('td', item.name), h('td', item.reason)));
  return h('div.card', { testid: 'import-report' },
    h('h3', `Import ${job.id}: ${job.status}`),
    job.error ? h('p.form-error', { testid: 'report-error' }, job.error) : null,
    h('div.stat-tiles',
      h('div.tile', h('span.big', { testid: 'report-imported' }, formatNumber(r.imported || 0)), 'imported'),
      h('div.tile', h('span.big', { testid: 'report-duplicates' }, formatNumber(r.duplicates || 0)), 'duplicates'),
      h('div.tile', h('span.big', { testid: 'report-skipped-count' }, formatNumber(r.skipped || 0)), 'skipped'),
      h('div.tile', h('span.big', formatNumber(r.boxes || 0)), 'boxes')),
    r.classes_added && r.classes_added.length
      ? h('p', { testid: 'report-classes' }, `Classes added: ${r.classes_added.join(', ')}`) : null,
    rows.length
      ? h('table.table.compact', h('thead', h('tr', h('th', 'Skipped'), h('th', 'Reason'))), h('tbody', rows))
      : h('p.muted', 'Nothing was skipped.'));
}

export default {
  route: '#/imports',
  title: 'Import and export',
  nav: 'Import',
  async render(root, params, ctx) {
    const datasets = await ctx.api.get('/datasets', { signal: ctx.signal });
    const writable = ctx.user.role !== 'viewer';
    let datasetId = Number(ctx.query.get('dataset')) || (datasets[0] && datasets[0].id) || null;
    const timers = new Set();
    let uploading = null;
    let uploadedJob = null; // the import the archive upload queued: its line follows the job to its end

    const datasetSelect = h('select', { testid: 'import-dataset', onchange: () => {
      ctx.navigate(`#/imports?dataset=${datasetSelect.value}`, { replace: true });
    } }, datasets.map((d) => h('option', { value: d.id, selected: d.id === datasetId }, d.name)));
    const format = select('import-format', FORMATS, 'auto');
    const unknown = select('import-unknown', [['add', 'Add unknown classes to the dataset'],
      ['skip', 'Skip boxes of unknown classes']], 'add');
    const sourcesBox = h('div', { testid: 'sources' }, h('p.muted', 'Looking for USB drives…'));
    const sourcesError = h('p.form-error', { testid: 'sources-error', role: 'alert' });
    const jobsError = h('p.form-error', { testid: 'jobs-error', role: 'alert' });
    const jobsBox = h('div', { testid: 'import-jobs' });
    const reportBox = h('div', { testid: 'report-holder' });
    const uploadBar = h('progress', { max: 1, value: 0, testid: 'upload-progress', class: 'hidden' });
    const uploadState = h('span.muted', { testid: 'upload-state' });
    const fileInput = h('input', { type: 'file', accept: '.zip,.tar,.tgz,.gz,.tar.gz', testid: 'archive-file' });
    const usbExportState = h('span.muted', { testid: 'usb-export-state' });

    const dataset = datasets.find((d) => d.id === datasetId);
    if (!dataset) {
      root.append(h('section', h('h1', 'Import and export'),
        h('p.empty', 'Create a dataset first, then import images into it.')));
      return undefined;
    }
    ctx.setTitle(`${dataset.name} · import and export`);

    function poll(jobId, kind) {
      const path = kind === 'usb_export' ? `/usb-exports/${jobId}` : `/imports/${jobId}`;
      const tick = async () => {
        timers.delete(timer);
        let job;
        try {
          job = await ctx.api.get(path, { signal: ctx.signal });
        } catch (err) {
          if (err && err.name === 'AbortError') return;
          ctx.toast(err.detail || String(err), 'error');
          return;
        }
        await refreshJobs();
        if (kind === 'usb_export' && !TERMINAL.includes(job.status)) {
          clear(usbExportState).append(`Export ${job.id}: ${jobSummary(job)} `,
            h('button.link', { type: 'button', testid: 'cancel-usb-export', onclick: async () => {
              try {
                await ctx.api.post(`/usb-exports/${job.id}/cancel`);
              } catch (err) {
                usbExportState.textContent = `Export ${job.id}: ${errorText(err)}`;
              }
            } }, 'Cancel'));
        }
        if (TERMINAL.includes(job.status)) {
          if (kind === 'usb_export') {
            usbExportState.textContent = {
              completed: `Written: ${job.result && job.result.file}`,
              cancelled: `Export ${job.id} cancelled`,
            }[job.status] || `Failed: ${job.error}`;
          } else {
            showReport(job);
            if (job.id === uploadedJob) {
              uploadBar.classList.add('hidden');
              uploadState.textContent = `Import ${job.id} ${job.status}: ${jobSummary(job)} (report above)`;
              uploadedJob = null;
            }
          }
          return;
        }
        timer = setTimeout(tick, POLL_MS);
        timers.add(timer);
      };
      let timer = setTimeout(tick, 200);
      timers.add(timer);
    }

    /** A finished import's report, at the top of the page where it is seen without scrolling. */
    function showReport(job) {
      clear(reportBox).append(reportView(job),
        h('button.link', { type: 'button', testid: 'close-report', onclick: () => clear(reportBox) }, 'Close the report'));
      reportBox.scrollIntoView({ block: 'nearest' });
    }

    async function startImport(path) {
      sourcesError.textContent = '';
      try {
        const job = await ctx.api.post(`/datasets/${datasetId}/imports`,
          { path, format: format.value, unknown_classes: unknown.value });
        ctx.toast(`Import ${job.id} queued`, 'ok');
        await refreshJobs();
        poll(job.id, 'import');
      } catch (err) {
        sourcesError.textContent = errorText(err);
      }
    }

    async function exportToUsb(path, fmt) {
      try {
        const job = await ctx.api.post(`/datasets/${datasetId}/exports/usb`, { path, format: fmt });
        usbExportState.textContent = `Export ${job.id} queued…`;
        poll(job.id, 'usb_export');
      } catch (err) {
        usbExportState.textContent = err.detail || String(err);
      }
    }

    async function refreshSources() {
      let sources;
      try {
        sources = await ctx.api.get('/imports/sources', { signal: ctx.signal });
      } catch (err) {
        if (err && err.name === 'AbortError') return;
        clear(sourcesBox).append(h('p.form-error', err.detail || String(err)));
        return;
      }
      clear(sourcesBox);
      if (!sources.length) {
        sourcesBox.append(h('p.empty', { testid: 'no-sources' }, 'No USB drive or share found under the import folders.'));
        return;
      }
      const exportFormat = select('usb-export-format', EXPORTS, 'yolo');
      sourcesBox.append(h('table.table', h('thead', h('tr', h('th', 'Drive'), h('th.num', 'Images'),
        h('th.num', 'Free'), h('th', ''))),
      h('tbody', sources.map((s) => h('tr', { testid: 'source-row', dataset: { path: s.path } },
        h('td', h('strong', s.name), h('div.muted.small', s.path),
          s.archives.length ? h('div.small', 'Archives: ', s.archives.map((a) => h('button.link', {
            type: 'button', testid: 'import-archive-on-drive', onclick: () => startImport(`${s.path}/${a}`),
          }, a))) : null),
        h('td.num', { testid: 'source-count' }, `${formatNumber(s.image_count)}${s.count_complete ? '' : '+'}`),
        h('td.num', megabytes(s.free_mb)),
        h('td.actions',
          writable ? h('button.primary', { type: 'button', testid: 'import-source', onclick: () => startImport(s.path) },
            'Import') : null,
          writable ? h('button', { type: 'button', testid: 'usb-export', onclick: () => exportToUsb(s.path, exportFormat.value) },
            'Export here') : null))))),
      writable ? h('div.toolbar', h('label.inline', 'Export format for "Export here"', exportFormat), usbExportState) : null);
    }

    async function refreshJobs() {
      let jobs;
      try {
        jobs = await ctx.api.get(`/imports${ctx.api.qs({ dataset_id: datasetId })}`, { signal: ctx.signal });
      } catch (err) {
        if (err && err.name === 'AbortError') return;
        return;
      }
      clear(jobsBox);
      if (!jobs.length) {
        jobsBox.append(h('p.muted', 'No imports into this dataset yet.'));
        return;
      }
      jobsBox.append(h('table.table.compact', h('thead', h('tr', h('th', 'Job'), h('th', 'Source'), h('th', 'Status'),
        h('th', 'Progress'), h('th', ''))),
      h('tbody', jobs.slice(0, 10).map((job) => h('tr', { testid: 'import-job', dataset: { id: job.id, status: job.status } },
        h('td', `#${job.id}`),
        h('td.small', job.params.source === 'archive' ? job.params.filename : job.params.path),
        h('td', h('span.badge', { testid: 'import-job-status' }, job.status),
          job.waiting_reason ? h('div.muted.small', { testid: 'job-waiting' }, job.waiting_reason) : null),
        h('td.small', { testid: 'import-job-progress' }, jobSummary(job)),
        h('td.actions',
          TERMINAL.includes(job.status)
            ? h('button.link', { type: 'button', testid: 'show-report', onclick: () => showReport(job) }, 'Report')
            : h('button.link', { type: 'button', testid: 'cancel-import', onclick: async () => {
              jobsError.textContent = '';
              try {
                await ctx.api.post(`/imports/${job.id}/cancel`);
              } catch (err) {
                jobsError.textContent = `Import ${job.id}: ${errorText(err)}`;
              }
              refreshJobs();
            } }, 'Cancel')))))));
    }

    async function uploadArchive(event) {
      event.preventDefault();
      const file = fileInput.files && fileInput.files[0];
      if (!file) {
        uploadState.textContent = 'Choose a zip or tar archive first.';
        return;
      }
      const query = ctx.api.qs({ format: format.value, unknown_classes: unknown.value, filename: file.name });
      uploadBar.classList.remove('hidden');
      uploadBar.value = 0;
      uploadState.textContent = `Uploading ${file.name}…`;
      // The archive is the raw request body (streamed to disk by the server), not a multipart form.
      uploading = ctx.api.upload(`/datasets/${datasetId}/imports/archive${query}`, file, {
        raw: true,
        onProgress: (loaded, total) => {
          uploadBar.value = total ? loaded / total : 0;
          uploadState.textContent = `Uploading ${file.name}: ${Math.round((100 * loaded) / (total || 1))}%`;
        },
      });
      try {
        const job = await uploading;
        uploadBar.value = 1;
        uploadedJob = job.id;
        uploadState.textContent = `Uploaded; import ${job.id} queued`;
        await refreshJobs();
        poll(job.id, 'import');
      } catch (err) {
        uploadState.textContent = err.detail || String(err);
      } finally {
        uploading = null;
      }
    }

    const exportLinks = EXPORTS.map(([fmt, text]) => h('a.button', {
      href: `${API_PREFIX}/datasets/${datasetId}/export?format=${fmt}`, download: '', testid: `export-${fmt}`,
    }, `Download ${text}`));

    const optionsRow = writable ? h('div.toolbar', { testid: 'import-options' },
      h('label', 'Format', format), h('label', 'Classes not in the dataset', unknown)) : null;
    root.append(h('section',
      h('div.page-head', h('h1', 'Import and export'), h('span.spacer'),
        h('label.inline', 'Dataset', datasetSelect),
        h('a', { href: `#/datasets/${datasetId}`, testid: 'back-to-dataset' }, 'Open dataset')),
      reportBox,
      h('div.import-grid',
        writable ? h('form.card', { testid: 'archive-form', onsubmit: uploadArchive },
          h('h2', 'Upload an archive'),
          h('p.muted.small', 'zip, tar or tar.gz with images and YOLO, COCO or Pascal VOC labels, or plain images. '
            + 'Classes are matched by name (case does not matter); images already in the dataset are not added twice.'),
          optionsRow,
          h('div.toolbar', fileInput, h('button.primary', { type: 'submit', testid: 'archive-upload' }, 'Upload and import')),
          h('div.toolbar', uploadBar, uploadState)) : null,
        h('div.card', h('div.page-head', h('h2', 'USB drives and shares'), h('span.spacer'),
          h('button', { type: 'button', testid: 'refresh-sources', onclick: refreshSources }, 'Refresh')),
        writable ? h('p.muted.small', 'Imports from a drive use the format and class options of the upload form.') : null,
        sourcesBox, sourcesError)),
      h('div.card', h('h2', 'Imports'), jobsBox, jobsError),
      h('div.card', { testid: 'export-card' }, h('h2', 'Export this dataset'),
        h('p.muted.small', 'Labelled images with their boxes as a zip archive. The YOLO archive trains as is: unzip and run yolo train data=data.yaml.'),
        h('div.toolbar', exportLinks))));

    await Promise.all([refreshSources(), refreshJobs()]);
    const running = (await ctx.api.get(`/imports${ctx.api.qs({ dataset_id: datasetId })}`, { signal: ctx.signal }).catch(() => []))
      .filter((job) => !TERMINAL.includes(job.status));
    for (const job of running) poll(job.id, 'import');
    return () => {
      for (const timer of timers) clearTimeout(timer);
      if (uploading) uploading.abort();
    };
  },
};
