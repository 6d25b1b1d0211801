// Dataset view: filters with counts, a virtual-scrolling thumbnail grid fed by keyset pages, and uploads.

import { api, errorText } from '../api.js';
import { classChip } from '../components/classes-editor.js';
import { datasetTabs } from '../components/dataset-tabs.js';
import { formatNumber } from '../components/format.js';
import { uploadFiles } from '../components/upload-panel.js';
import { VirtualGrid } from '../components/virtual-grid.js';
import { confirmDialog, h } from '../dom.js';
import { filterFromQuery, getIndex, invalidate, takeFocus } from '../image-index.js';

/** The first page, or the page around `focus` when that image is in the list; true when it is. */
async function locate(index, focus) {
  if (focus !== null && (await index.ensureId(focus))) return true;
  await index.ensure(200);
  return false;
}

export default {
  route: '#/datasets/:id',
  title: 'Dataset',
  async render(root, params, ctx) {
    const id = Number(params.id);
    const filter = filterFromQuery(ctx.query);
    const { status, class_id: classId } = filter;
    // Coming back from the labeler, the grid opens at the image labeled last.
    const focus = takeFocus(id);
    // The first page (or the page around that image) is requested together with the dataset and its counts.
    const firstPage = locate(getIndex(id, filter, { fresh: true }), focus).catch(() => false);
    const [dataset, stats] = await Promise.all([
      api.get(`/datasets/${id}`, { signal: ctx.signal }),
      api.get(`/datasets/${id}/stats`, { signal: ctx.signal }),
    ]);
    ctx.setTitle(dataset.name);
    root.className = 'fill';
    const query = api.qs({ status, class: classId });
    const canWrite = ctx.user.role !== 'viewer';

    /** The grid's delete button: confirm, delete, then show the list and the counts without it. */
    async function deleteImage(item) {
      const ok = await confirmDialog('Delete this image?',
        `"${item.original_name}"${item.box_count ? ` and its ${item.box_count} box(es)` : ''} will be removed from the dataset.`);
      if (!ok) return;
      try {
        await api.del(`/images/${item.id}`);
      } catch (err) {
        ctx.toast(`Not deleted: ${errorText(err)}`, 'error', 6000);
        return;
      }
      invalidate(id);
      ctx.toast('Image deleted', 'ok');
      if (ctx.signal.aborted) return;
      const top = grid ? grid.scroller.scrollTop : 0;
      await mountGrid();
      grid.scroller.scrollTop = top;
      showCounts(await api.get(`/datasets/${id}/stats`));
    }
    let index = null;
    let grid = null;
    let first = true;
    let stopCount = () => {};
    const shown = h('span.muted', { testid: 'grid-count' });
    const gridHolder = h('div.grid-holder');

    const link = (key, label, q) => h('a.filter', {
      href: `#/datasets/${id}${api.qs(q)}`, class: key ? 'active' : '', testid: `filter-${label.toLowerCase()}`,
    }, label, h('span.count', { testid: `count-${label.toLowerCase()}` }));
    const filters = h('div.filters', { testid: 'filters' },
      link(!status && classId === null, 'All', {}),
      link(status === 'unlabeled', 'Unlabeled', { status: 'unlabeled' }),
      link(status === 'labeled', 'Labeled', { status: 'labeled' }),
      link(status === 'reviewed', 'Reviewed', { status: 'reviewed' }));
    const classSelect = h('select', { testid: 'filter-class', 'aria-label': 'filter by class' });
    classSelect.addEventListener('change', () => {
      ctx.navigate(`#/datasets/${id}${api.qs({ status, class: classSelect.value })}`);
    });
    const showCounts = (s) => {
      const set = (name, n) => {
        filters.querySelector(`[data-testid=count-${name}]`).textContent = formatNumber(n);
      };
      set('all', s.images);
      set('unlabeled', s.by_status.unlabeled);
      set('labeled', s.by_status.labeled);
      set('reviewed', s.by_status.reviewed);
      classSelect.replaceChildren(h('option', { value: '' }, 'Any class'),
        s.classes.map((c) => h('option', { value: String(c.class_id), selected: c.class_id === classId },
          `${c.name} (${formatNumber(c.images)})`)));
    };
    showCounts(stats);

    const mountGrid = async () => {
      if (grid) grid.destroy();
      stopCount();
      index = getIndex(id, filter, { fresh: true });
      grid = new VirtualGrid(index, {
        href: (item) => `#/datasets/${id}/label/${item.id}${query}`,
        onDelete: canWrite ? deleteImage : null,
      });
      const updateCount = () => {
        shown.textContent = index.total === null ? '' : `${formatNumber(index.total)} images`;
      };
      stopCount = index.onChange(updateCount);
      gridHolder.replaceChildren(grid.scroller);
      grid.layout();
      const found = first ? await firstPage : false;
      first = false;
      if (!found) await index.ensure(200); // at once when the first page is in; a failure shows as before
      updateCount();
      // Paint now rather than on the next animation frame: the thumbnail requests leave before the first
      // frame of the page is rendered (which can take a while on a busy box).
      grid.layout();
      if (found) grid.scrollToPosition(index.indexOf(focus), focus);
      grid.paint();
      if (!index.total) {
        grid.scroller.append(h('p.empty', { testid: 'grid-empty' }, status || classId !== null
          ? 'No images match this filter.'
          : 'No images yet: drop files here or use "Upload images".'));
      }
    };

    const panel = h('div.upload-panel', { testid: 'upload-panel' });
    const input = h('input', { type: 'file', multiple: true, accept: 'image/*,.jpg,.jpeg,.png,.bmp,.webp,.tif,.tiff',
      testid: 'upload-input', class: 'hidden' });
    const startUpload = async (files) => {
      if (!files.length) return;
      panel.classList.add('open');
      const result = await uploadFiles(id, files, panel);
      if (result.added.length) {
        invalidate(id);
        ctx.toast(`${result.added.length} images added`, 'ok');
        if (ctx.signal.aborted) return;
        await mountGrid();
        showCounts(await api.get(`/datasets/${id}/stats`));
      }
    };
    input.addEventListener('change', () => {
      startUpload([...input.files]);
      input.value = '';
    });
    const uploadButton = canWrite
      ? h('button.primary', { type: 'button', testid: 'upload-button', onclick: () => input.click() }, 'Upload images')
      : null;
    const refresh = h('button', { type: 'button', testid: 'grid-refresh',
      onclick: () => { invalidate(id); ctx.navigate(location.hash); } }, 'Refresh');

    const drop = h('div.drop-overlay', { testid: 'drop-overlay' }, 'Drop images to upload');
    const onDragOver = (event) => {
      if (!canWrite || !event.dataTransfer || ![...event.dataTransfer.types].includes('Files')) return;
      event.preventDefault();
      drop.classList.add('show');
    };
    const onDragLeave = (event) => {
      if (event.target === drop) drop.classList.remove('show');
    };
    const onDrop = (event) => {
      if (!canWrite) return;
      event.preventDefault();
      drop.classList.remove('show');
      startUpload([...event.dataTransfer.files]);
    };
    root.addEventListener('dragover', onDragOver);
    drop.addEventListener('dragleave', onDragLeave);
    root.addEventListener('drop', onDrop);

    root.append(
      datasetTabs(dataset, 'images'),
      h('div.toolbar', filters, classSelect, shown, h('span.spacer'), refresh, uploadButton, input),
      h('div.chips.legend', dataset.classes.map((c) => classChip(c))),
      panel,
      gridHolder,
      drop);
    await mountGrid();
    return () => {
      stopCount();
      if (grid) grid.destroy();
      root.removeEventListener('dragover', onDragOver);
      root.removeEventListener('drop', onDrop);
    };
  },
};
