// The manuals' Markdown (docs/*.md) as DOM, for the console's manual page: headings (with ids to link to),
// paragraphs, lists, tables, code blocks, and inline `code`, **bold** and [links](…). Text only ever goes in
// as text; a link to another manual (`stations.md`, `docs/models.md#…`) opens it in the console, an address
// outside the box is shown as text (the box has no internet to send the reader to).
//
//   root.append(...renderMarkdown(text, { manual: 'outputs' }));   // manual: whose '#section' links these are

import { h } from '../dom.js';

/** The id a heading gets: lower case, words joined by '-' ("OPC UA server (asyncua; port 4840)" -> "opc-ua-server-asyncua-port-4840"). */
export function slug(text) {
  return text.toLowerCase().replace(/[`*]/g, '').replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');
}

function link(label, target, manual) {
  const other = /^(?:\.\/|docs\/)?([a-z][a-z0-9-]*)\.md(?:#([\w-]+))?$/.exec(target);
  if (other) return h('a', { href: `#/manual/${other[1]}${other[2] ? `?section=${other[2]}` : ''}` }, ...inline(label, manual));
  if (target.startsWith('#') && manual) return h('a', { href: `#/manual/${manual}?section=${target.slice(1)}` }, ...inline(label, manual));
  return h('span', { title: target }, ...inline(label, manual));
}

/** Inline spans of one line of text: code first (nothing inside it is markup), then links and bold. */
export function inline(text, manual = '') {
  const out = [];
  const pattern = /`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\(([^)\s]+)\)/g;
  let last = 0;
  for (let m = pattern.exec(text); m; m = pattern.exec(text)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    if (m[1] !== undefined) out.push(h('code', m[1]));
    else if (m[2] !== undefined) out.push(h('strong', ...inline(m[2], manual)));
    else out.push(link(m[3], m[4], manual));
    last = pattern.lastIndex;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

const cells = (line) => line.trim().replace(/^\||\|$/g, '').split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, '|'));

function table(lines, spans) {
  const [head, , ...rows] = lines;
  return h('div.table-wrap', h('table.table.compact',
    h('thead', h('tr', cells(head).map((c) => h('th', ...spans(c))))),
    h('tbody', rows.map((r) => h('tr', cells(r).map((c) => h('td', ...spans(c))))))));
}

function list(lines, spans) {
  const items = [];
  for (const line of lines) {
    const m = /^\s*(?:[-*]|\d+\.)\s+(.*)$/.exec(line);
    if (m) items.push(m[1]);
    else if (items.length) items[items.length - 1] += ` ${line.trim()}`;
  }
  const ordered = /^\s*\d+\./.test(lines[0]);
  return h(ordered ? 'ol' : 'ul', items.map((item) => h('li', ...spans(item))));
}

/** Block elements of a Markdown text. */
export function renderMarkdown(text, { manual = '' } = {}) {
  const spans = (t) => inline(t, manual);
  const lines = String(text).replace(/\r\n?/g, '\n').split('\n');
  const out = [];
  let i = 0;
  const take = (test) => {
    const block = [];
    while (i < lines.length && test(lines[i])) block.push(lines[i++]);
    return block;
  };
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) { i += 1; continue; }
    const heading = /^(#{1,4})\s+(.*)$/.exec(line);
    if (heading) {
      out.push(h(`h${heading[1].length}`, { id: slug(heading[2]) }, ...spans(heading[2])));
      i += 1;
    } else if (line.startsWith('```')) {
      i += 1;
      const code = take((l) => !l.startsWith('```'));
      i += 1;
      out.push(h('pre', h('code', code.join('\n'))));
    } else if (/^ {4}/.test(line)) {
      const code = take((l) => /^ {4}/.test(l) || !l.trim());
      while (code.length && !code[code.length - 1].trim()) code.pop();
      out.push(h('pre', h('code', code.map((l) => l.slice(4)).join('\n'))));
    } else if (line.trim().startsWith('|') && i + 1 < lines.length && /^\s*\|?\s*:?-{3,}/.test(lines[i + 1])) {
      out.push(table(take((l) => l.trim().startsWith('|')), spans));
    } else if (/^\s*(?:[-*]|\d+\.)\s+/.test(line)) {
      out.push(list(take((l) => l.trim() && !/^#{1,4}\s/.test(l) && !l.trim().startsWith('|')), spans));
    } else {
      const para = take((l) => l.trim() && !/^(#{1,4}\s|```|\s*\|)/.test(l) && !/^\s*(?:[-*]|\d+\.)\s+/.test(l));
      out.push(h('p', ...spans(para.join(' '))));
    }
  }
  return out;
}
