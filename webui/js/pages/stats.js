// Dataset statistics: images per status, boxes per class, box size histogram (canvas charts).

import { barChart } from '../components/charts.js';
import { datasetTabs } from '../components/dataset-tabs.js';
import { formatNumber } from '../components/format.js';
import { h } from '../dom.js';

const STATUS_COLORS = { unlabeled: '#868e96', labeled: '#4dabf7', reviewed: '#51cf66' };

function sizeLabel(bucket) {
  if (bucket.min_px === 0) return `<${bucket.max_px}`;
  if (bucket.max_px === null) return `≥${bucket.min_px}`;
  return `${bucket.min_px}–${bucket.max_px}`;
}

export default {
  route: '#/datasets/:id/stats',
  title: 'Statistics',
  async render(root, params, ctx) {
    const id = Number(params.id);
    const [dataset, stats] = await Promise.all([
      ctx.api.get(`/datasets/${id}`, { signal: ctx.signal }),
      ctx.api.get(`/datasets/${id}/stats`, { signal: ctx.signal }),
    ]);
    ctx.setTitle(`${dataset.name} · statistics`);
    const colors = new Map(dataset.classes.map((c) => [c.id, c.color]));
    const statusChart = h('canvas.chart', { testid: 'chart-status' });
    const classChart = h('canvas.chart', { testid: 'chart-classes' });
    const sizeChart = h('canvas.chart.vertical', { testid: 'chart-sizes' });
    const classTable = h('table.table.compact', { testid: 'class-table' },
      h('thead', h('tr', h('th', 'Class'), h('th.num', 'Boxes'), h('th.num', 'Images'))),
      h('tbody', stats.classes.map((c) => h('tr',
        h('td', h('span.swatch', { style: { '--chip': colors.get(c.class_id) || '#fff' } }), c.name),
        h('td.num', formatNumber(c.boxes)), h('td.num', formatNumber(c.images))))));
    root.append(h('section',
      datasetTabs(dataset, 'stats'),
      h('div.stat-tiles',
        h('div.tile', h('span.big', { testid: 'stat-images' }, formatNumber(stats.images)), 'images'),
        h('div.tile', h('span.big', { testid: 'stat-boxes' }, formatNumber(stats.boxes)), 'boxes'),
        h('div.tile', h('span.big', { testid: 'stat-unlabeled' }, formatNumber(stats.by_status.unlabeled)), 'unlabeled')),
      h('div.chart-grid',
        h('div.card', h('h2', 'Images per status'), statusChart),
        h('div.card', h('h2', 'Boxes per class'), classChart, classTable),
        h('div.card.span2', h('h2', 'Box size (square root of area, pixels)'), sizeChart))));
    const draw = () => {
      barChart(statusChart, Object.entries(stats.by_status).map(([k, v]) => ({
        label: k, value: v, color: STATUS_COLORS[k],
      })));
      barChart(classChart, stats.classes.map((c) => ({ label: c.name, value: c.boxes, color: colors.get(c.class_id) })));
      barChart(sizeChart, stats.box_sizes.map((b) => ({ label: sizeLabel(b), value: b.boxes, color: '#fcc419' })),
        { horizontal: false });
    };
    draw();
    const observer = new ResizeObserver(() => draw());
    observer.observe(root);
    return () => observer.disconnect();
  },
};
