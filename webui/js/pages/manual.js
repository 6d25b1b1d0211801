// A manual of the box (docs/<name>.md, GET /manuals/{name}) read in the console: the pages link the topic
// they need (the Outputs page: MQTT topics, OPC UA nodes, Modbus registers), `?section=` scrolls to the
// heading whose id starts with it.

import { errorText } from '../api.js';
import { renderMarkdown } from '../components/markdown.js';
import { h } from '../dom.js';

export default {
  route: '#/manual/:name',
  title: 'Manual',
  async render(root, params, ctx) {
    const body = h('article.manual', { testid: 'manual-body' });
    root.append(body);
    let text;
    try {
      text = await ctx.api.get(`/manuals/${encodeURIComponent(params.name)}`, { signal: ctx.signal });
    } catch (err) {
      if (err && err.name === 'AbortError') return;
      body.append(h('p.card.error', { testid: 'manual-error' }, errorText(err)));
      return;
    }
    body.append(...renderMarkdown(text, { manual: params.name }));
    const title = body.querySelector('h1');
    if (title) title.dataset.testid = 'manual-title';
    ctx.setTitle(title ? title.textContent : `Manual: ${params.name}`);
    const section = ctx.query.get('section');
    const target = section && [...body.querySelectorAll('h1, h2, h3, h4')].find((el) => el.id.startsWith(section));
    if (target) {
      target.classList.add('highlight');
      target.scrollIntoView({ block: 'start' });
    }
  },
};
