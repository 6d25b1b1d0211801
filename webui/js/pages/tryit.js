// Try it: upload or drop an image, pick a model and a confidence; the boxes are drawn on the image with a list
// and the stage timings. The request asks for every box above a low floor, so moving the confidence slider
// re-filters here in the browser without asking the appliance again.

import { errorText } from '../api.js';
import { clear, h } from '../dom.js';
import { defaultColor } from '../palette.js';

const FLOOR = 0.01; // lowest confidence requested; the slider filters above it

export default {
  route: '#/try',
  title: 'Try a model',
  nav: 'Try it',
  render(root, params, ctx) {
    const { api } = ctx;
    let file = null;
    let bitmap = null;
    let result = null;
    let models = [];
    const modelSelect = h('select', { testid: 'try-model', 'aria-label': 'model' });
    const slider = h('input', { type: 'range', min: '0.01', max: '1', step: '0.01', value: '0.25', testid: 'try-confidence',
      'aria-label': 'confidence' });
    const sliderValue = h('span', { testid: 'try-confidence-value' }, '0.25');
    const fileInput = h('input', { type: 'file', accept: 'image/*', testid: 'try-file' });
    const canvas = h('canvas', { testid: 'try-canvas', width: '640', height: '360', hidden: true });
    const placeholder = h('p.empty', { testid: 'try-empty' }, 'The image and its boxes appear here.');
    const drop = h('div.try-drop', { testid: 'try-drop' }, h('span.muted', 'Drop an image here or choose a file:'), fileInput);
    const listBox = h('div', { testid: 'try-detections' });
    const timingBox = h('div.muted', { testid: 'try-timings' });
    const status = h('p.muted', { testid: 'try-status', role: 'status' });
    const stage = h('div.try-stage', canvas, placeholder);
    root.append(
      h('div.page-head', h('h1', 'Try a model'),
        h('div.toolbar', h('label.inline', 'Model', modelSelect), h('label.inline', 'Confidence', slider, sliderValue))),
      drop, status,
      h('div.try-layout', stage,
        h('div.try-side', h('h3', 'Detections'), listBox, h('h3', 'Timings'), timingBox)));

    function visible() {
      const threshold = Number(slider.value);
      return result ? result.detections.filter((d) => d.confidence >= threshold) : [];
    }

    /** Nothing of an earlier image stays on screen (after an error, or before the first result). */
    function clearResult() {
      result = null;
      canvas.hidden = true;
      delete canvas.dataset.boxes;
      placeholder.hidden = false;
      clear(listBox);
      clear(timingBox);
    }

    function draw() {
      if (!bitmap || !result) return;
      canvas.hidden = false;
      placeholder.hidden = true;
      // The whole image fits in the window beside the list: width of the stage, height left under its top.
      const maxWidth = Math.max(160, stage.clientWidth || 640);
      const maxHeight = Math.max(160, window.innerHeight - stage.getBoundingClientRect().top - 16);
      const scale = Math.min(1, maxWidth / bitmap.width, maxHeight / bitmap.height) || 1;
      canvas.width = Math.round(bitmap.width * scale);
      canvas.height = Math.round(bitmap.height * scale);
      const g = canvas.getContext('2d');
      g.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      const shown = visible();
      canvas.dataset.boxes = String(shown.length);
      g.lineWidth = 2;
      g.font = '12px sans-serif';
      for (const d of shown) {
        const color = defaultColor(d.class_id);
        const { x1, y1, x2, y2 } = d.box;
        g.strokeStyle = color;
        g.strokeRect(x1 * scale, y1 * scale, (x2 - x1) * scale, (y2 - y1) * scale);
        const label = `${d.class_name} ${d.confidence.toFixed(2)}`;
        g.fillStyle = color;
        g.fillRect(x1 * scale, Math.max(0, y1 * scale - 14), g.measureText(label).width + 6, 14);
        g.fillStyle = '#000';
        g.fillText(label, x1 * scale + 3, Math.max(11, y1 * scale - 3));
      }
      clear(listBox);
      listBox.append(shown.length
        ? h('table.table', h('tbody', shown.map((d) => h('tr', { testid: 'try-detection' },
          h('td', d.class_name), h('td.num', d.confidence.toFixed(3)),
          h('td.muted', `${Math.round(d.box.x1)},${Math.round(d.box.y1)} – ${Math.round(d.box.x2)},${Math.round(d.box.y2)}`)))))
        : h('p.muted', 'No detections at this confidence.'));
    }

    function showTimings() {
      clear(timingBox);
      if (!result) return;
      const t = result.timings;
      const fmt = (v) => (v === undefined ? '–' : `${Number(v).toFixed(1)} ms`);
      timingBox.append(
        h('div', `preprocess ${fmt(t.preprocess_ms)}`),
        h('div', `inference ${fmt(t.inference_ms)}`),
        h('div', `postprocess ${fmt(t.postprocess_ms)}`),
        h('div', `total on the appliance ${fmt(t.total_ms)}`),
        h('div', { testid: 'try-engine' },
          `${result.backend} on ${result.device || 'CPU'}, ${result.precision}, image ${result.width}×${result.height}`));
    }

    async function run() {
      if (!file) return;
      status.textContent = 'Running…';
      const form = new FormData();
      form.append('image', file, file.name || 'image');
      form.append('confidence', String(FLOOR));
      if (modelSelect.value) form.append('model_id', modelSelect.value);
      status.className = 'muted';
      try {
        result = await api.post('/inference', form, { signal: ctx.signal });
        status.textContent = `${result.detections.length} box(es) above ${FLOOR}; the slider filters them here.`;
      } catch (err) {
        if (err && err.name === 'AbortError') return;
        clearResult();
        status.className = 'form-error';
        status.textContent = `${file.name || 'The image'}: ${errorText(err)}`;
        return;
      }
      showTimings();
      draw();
    }

    async function choose(picked) {
      if (!picked) return;
      file = picked;
      clearResult();
      try {
        bitmap = await createImageBitmap(picked);
      } catch {
        bitmap = null;
      }
      await run();
    }

    slider.addEventListener('input', () => {
      sliderValue.textContent = Number(slider.value).toFixed(2);
      draw();
    });
    modelSelect.addEventListener('change', run);
    fileInput.addEventListener('change', () => choose(fileInput.files[0]));
    drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('dragging'); });
    drop.addEventListener('dragleave', () => drop.classList.remove('dragging'));
    drop.addEventListener('drop', (event) => {
      event.preventDefault();
      drop.classList.remove('dragging');
      choose(event.dataTransfer.files[0]);
    });

    (async () => {
      try {
        models = (await api.get('/models', { signal: ctx.signal })).filter((m) => m.ready);
      } catch (err) {
        if (err && err.name === 'AbortError') return;
        status.textContent = errorText(err);
        return;
      }
      clear(modelSelect);
      if (!models.length) {
        modelSelect.append(h('option', { value: '' }, 'no exported model'));
        status.textContent = 'No model is exported yet: export one on the Models page.';
        return;
      }
      const wanted = ctx.query && ctx.query.get('model');
      for (const m of models) {
        modelSelect.append(h('option', { value: String(m.id), selected: wanted ? String(m.id) === wanted : m.deployed },
          `${m.name} (#${m.id})${m.deployed ? ' – deployed' : ''}`));
      }
    })();
  },
};
