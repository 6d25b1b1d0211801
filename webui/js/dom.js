// DOM helpers: every piece of user text goes in through textContent, never innerHTML.

/**
 * h('div.card#main', {onclick, dataset: {testid: 'x'}, style: {width: '3px'}}, 'text', child, [children])
 * Attributes: 'class', 'testid' (-> data-testid), on* handlers, dataset, style object, everything else
 * via setAttribute; booleans add/remove the attribute. Children: strings become text nodes.
 */
export function h(spec, attrs, ...children) {
  const m = /^([a-z0-9-]*)((?:[.#][\w-]+)*)$/i.exec(spec);
  const el = document.createElement((m && m[1]) || 'div');
  if (m && m[2]) {
    for (const part of m[2].match(/[.#][\w-]+/g)) {
      if (part[0] === '.') el.classList.add(part.slice(1));
      else el.id = part.slice(1);
    }
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'class') {
      for (const c of String(value).split(/\s+/).filter(Boolean)) el.classList.add(c);
    } else if (key === 'testid') {
      el.dataset.testid = value;
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key === 'style' && typeof value === 'object') {
      for (const [prop, v] of Object.entries(value)) el.style.setProperty(prop, v);
    } else if (key === 'value' || key === 'checked' || key === 'disabled' || key === 'selected') {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function setText(el, text) {
  el.textContent = text === null || text === undefined ? '' : String(text);
  return el;
}

/** A modal dialog; resolves with the value passed to close(). `build(close)` returns the body nodes. */
export function modal(title, build, { testid = 'modal', wide = false } = {}) {
  return new Promise((resolve) => {
    let done = false;
    const backdrop = h('div.modal-backdrop', { testid: `${testid}-backdrop` });
    const close = (value) => {
      if (done) return;
      done = true;
      document.removeEventListener('keydown', onKey, true);
      backdrop.remove();
      resolve(value);
    };
    const onKey = (event) => {
      if (event.key === 'Escape') {
        event.preventDefault();
        event.stopPropagation();
        close(undefined);
      }
    };
    const box = h(`div.modal${wide ? '.wide' : ''}`, { testid, role: 'dialog', 'aria-modal': 'true' },
      h('h2', title), build(close));
    backdrop.append(box);
    backdrop.addEventListener('mousedown', (event) => { if (event.target === backdrop) close(undefined); });
    document.addEventListener('keydown', onKey, true);
    document.body.append(backdrop);
    const focusable = box.querySelector('input, select, textarea, button.primary, button');
    if (focusable) focusable.focus();
  });
}

/** Yes/no confirmation; resolves true only when confirmed. */
export function confirmDialog(title, message, { confirmLabel = 'Delete', danger = true } = {}) {
  return modal(title, (close) => [
    h('p', message),
    h('div.actions',
      h('button', { type: 'button', testid: 'confirm-cancel', onclick: () => close(false) }, 'Cancel'),
      h(`button${danger ? '.danger' : '.primary'}`, { type: 'button', testid: 'confirm-ok', onclick: () => close(true) },
        confirmLabel)),
  ], { testid: 'confirm' }).then((v) => v === true);
}

let toastBox = null;
/** A short message in the corner; kind: info | error | ok. */
export function toast(message, kind = 'info', ms = 3500) {
  if (!toastBox || !toastBox.isConnected) {
    toastBox = h('div.toasts', { testid: 'toasts', 'aria-live': 'polite' });
    document.body.append(toastBox);
  }
  const item = h(`div.toast.${kind}`, { testid: 'toast' }, message);
  toastBox.append(item);
  setTimeout(() => item.remove(), ms);
  return item;
}
