// The dataset page's thumbnail grid: virtual scrolling over an ImageIndex (webui/js/image-index.js) of any length.

import { thumbUrl } from '../api.js';
import { h } from '../dom.js';

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
  constructor(index, { href, onDelete = null }) {
    this.index = index;
    this.href = href;
    this.onDelete = onDelete; // (item) => ...: a delete button on each cell when given
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
    if (this.onDelete) {
      cell.append(h('button.thumb-delete', { type: 'button', testid: 'thumb-delete', title: 'delete this image',
        'aria-label': 'delete this image', onclick: (event) => {
          event.preventDefault();
          event.stopPropagation();
          if (cell.item) this.onDelete(cell.item);
        } }, '×'));
    }
    cell.parts = { img, caption, badge };
    return cell;
  }

  fill(cell, item, visible) {
    const key = item ? `${item.id}:${item.status}:${item.box_count}:${item.checked}:${item.id === this.focusId}` : '';
    if (cell.key === key) return;
    cell.key = key;
    cell.item = item;
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
    // checked: 0 = the import's background pass has not made its thumbnail yet (a placeholder until the
    // page is read again), 2 = the file does not decode (corrupt: left out of training, shown as such).
    const src = item.checked === 0 || item.checked === 2 ? null : thumbUrl(item.id);
    cell.classList.toggle('thumb-pending', item.checked === 0);
    cell.classList.toggle('corrupt', item.checked === 2);
    if (src === null) img.removeAttribute('src');
    else if (img.getAttribute('src') !== src) {
      img.fetchPriority = visible ? 'high' : 'low';
      img.src = src;
    }
    caption.textContent = item.original_name;
    const state = item.checked === 2 ? ' · corrupt: does not decode, left out of training' : '';
    cell.title = `${item.original_name} · ${item.width}×${item.height}${state}`;
    badge.textContent = item.checked === 2 ? 'corrupt' : item.status === 'unlabeled' ? '' : `${item.box_count}`;
    badge.className = `badge ${item.checked === 2 ? 'corrupt' : item.status}`;
  }
}
