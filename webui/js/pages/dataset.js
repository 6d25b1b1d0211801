// Dataset view: filters with counts, a virtual-scrolling thumbnail grid fed by keyset pages, and uploads.

import { api, thumbUrl } from '../api.js';
import { classChip } from '../classes-editor.js';
import { h, formatNumber } from '../dom.js';
import { getIndex, invalidate, takeFocus } from '../image-index.js';
import { uploadFiles } from '../upload.js';

/** Tabs shown on every page of one dataset. */
export function datasetTabs(dataset, active) {
  const tab = (key, href, text) => h('a', { href, class: key === active ? 'active' : '', testid: `tab-${key}` }, text);
  return h('div.dataset-head',
    h('h1', { testid: 'dataset-title' }, dataset.name),
    h('nav.tabs', { testid: 'dataset-tabs' },
      tab('images', `#/datasets/${dataset.id}`, 'Images'),
      tab('label', `#/datasets/${dataset.id}/label/first`, 'Label'),
      tab('stats', `#/datasets/${dataset.id}/stats`, 'Statistics'),
      tab('settings', `#/datasets/${dataset.id}/settings`, 'Settings'),
      tab('transfer', `#/imports?dataset=${dataset.id}`, 'Import / export')));
}

const CELL_MIN = 180; // px; thumbnails are 256 px, so they stay sharp and a part is recognisable
const GAP = 8;
const CAPTION = 24;
const OVERSCAN_ROWS = 2;

/**
 * A grid that only keeps the visible cells in the DOM. It is sized by the list's total; positions whose page
 * is not loaded yet are drawn as placeholders while the index loads the pages on screen (in both directions
 * from what it has, or by a jump when the scrollbar is dragged far away).
 */
export class VirtualGrid {
  constructor(index, { href }) {
    this.index = index;
    this.href = href;
    this.scroller = h('div.grid-scroll', { testid: 'grid', tabindex: 0 });
    this.spacer = h('div.grid-spacer');
    this.scroller.append(this.spacer);
    this.cells = new Map(); // position -> element
    this.cols = 1;
    this.cellW = CELL_MIN;
    this.rowH = CELL_MIN + CAPTION + GAP;
    this.frame = 0;
    this.onScroll = () => this.schedule();
    this.scroller.addEventListener('scroll', this.onScroll, { passive: true });
    this.resizeObserver = new ResizeObserver(() => {
      this.layout();
      this.schedule();
    });
    this.resizeObserver.observe(this.scroller);
    this.unsubscribe = index.onChange(() => this.schedule(true));
  }

  destroy() {
    cancelAnimationFrame(this.frame);
    this.resizeObserver.disconnect();
    this.unsubscribe();
    this.scroller.removeEventListener('scroll', this.onScroll);
  }

  layout() {
    const width = this.scroller.clientWidth - GAP * 2;
    if (width <= 0) return;
    this.cols = Math.max(1, Math.floor((width + GAP) / (CELL_MIN + GAP)));
    this.cellW = (width - GAP * (this.cols - 1)) / this.cols;
    this.rowH = this.cellW + CAPTION + GAP;
    this.positionAll = true;
  }

  schedule(dataChanged = false) {
    if (dataChanged) this.dirty = true;
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.paint();
    });
  }

  total() {
    return this.index.total ?? 0;
  }

  size() {
    const rows = Math.ceil(this.total() / this.cols);
    this.spacer.style.height = `${rows * this.rowH + GAP}px`;
    return rows;
  }

  /** Scroll so the cell at `pos` sits in the middle of the view and mark it (the image labeled last). */
  scrollToPosition(pos, imageId) {
    this.focusId = imageId;
    this.size();
    const row = Math.floor(pos / this.cols);
    this.scroller.scrollTop = Math.max(0, GAP + row * this.rowH - (this.scroller.clientHeight - this.rowH) / 2);
  }

  paint() {
    const total = this.total();
    const rows = this.size();
    const top = this.scroller.scrollTop;
    const first = Math.max(0, Math.floor(top / this.rowH) - OVERSCAN_ROWS);
    const last = Math.min(rows - 1, Math.ceil((top + this.scroller.clientHeight) / this.rowH) + OVERSCAN_ROWS);
    const from = first * this.cols;
    const to = Math.min(total, (last + 1) * this.cols);
    if (to > from && !this.index.covered(from, to)) {
      // Placeholders meanwhile; the index loads the pages on screen (the latest scroll position wins).
      this.index.want(from, to);
    }
    for (const [pos, cell] of this.cells) {
      if (pos < from || pos >= to) {
        cell.remove();
        this.cells.delete(pos);
      }
    }
    // Visible cells fetch their thumbnails first; the overscan rows queue behind them.
    const firstVisible = Math.floor(top / this.rowH) * this.cols;
    const lastVisible = Math.ceil((top + this.scroller.clientHeight) / this.rowH) * this.cols;
    for (let pos = from; pos < to; pos += 1) {
      const item = this.index.at(pos);
      let cell = this.cells.get(pos);
      if (!cell) {
        cell = this.makeCell();
        this.cells.set(pos, cell);
        this.spacer.append(cell);
        cell.placed = false;
      }
      if (!cell.placed || this.positionAll) {
        const row = Math.floor(pos / this.cols);
        const col = pos % this.cols;
        cell.style.transform = `translate(${GAP + col * (this.cellW + GAP)}px, ${GAP + row * this.rowH}px)`;
        cell.style.width = `${this.cellW}px`;
        cell.style.height = `${this.cellW + CAPTION}px`;
        cell.dataset.pos = pos;
        cell.placed = true;
      }
      this.fill(cell, item, pos >= firstVisible && pos < lastVisible);
    }
    this.positionAll = false;
  }

  makeCell() {
    const img = h('img', { alt: '', decoding: 'async', draggable: 'false' });
    const caption = h('span.caption');
    const badge = h('span.badge');
    const cell = h('a.cell', { testid: 'thumb' }, h('span.thumb-box', img), badge, caption);
    cell.parts = { img, caption, badge };
    return cell;
  }

  fill(cell, item, visible) {
    const key = item ? `${item.id}:${item.status}:${item.box_count}:${item.id === this.focusId}` : '';
    if (cell.key === key) return;
    cell.key = key;
    const { img, caption, badge } = cell.parts;
    cell.classList.toggle('focused', Boolean(item) && item.id === this.focusId);
    if (!item) {
      cell.classList.add('placeholder');
      cell.removeAttribute('href');
      delete cell.dataset.imageId;
      img.removeAttribute('src');
      caption.textContent = '';
      badge.textContent = '';
      return;
    }
    cell.classList.remove('placeholder');
    cell.href = this.href(item);
    cell.dataset.imageId = item.id;
    cell.dataset.status = item.status;
    const src = thumbUrl(item.id);
    if (img.getAttribute('src') !== src) {
      img.fetchPriority = visible ? 'high' : 'low';
      img.src = src;
    }
    caption.textContent = item.original_name;
    cell.title = `${item.original_name} · ${item.width}×${item.height}`;
    badge.textContent = item.status === 'unlabeled' ? '' : `${item.box_count}`;
    badge.className = `badge ${item.status}`;
  }
}

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
    const status = ctx.query.get('status') || null;
    const classParam = ctx.query.get('class');
    const classId = classParam === null || classParam === '' ? null : Number(classParam);
    const filter = { status, class_id: classId };
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
      grid = new VirtualGrid(index, { href: (item) => `#/datasets/${id}/label/${item.id}${query}` });
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

    const canWrite = ctx.user.role !== 'viewer';
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
