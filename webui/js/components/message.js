// One look for the line of feedback beside a control: an error in red, a success in green, progress muted.
// Used wherever one element shows either ("Inspection 12: OK" or "Trigger expired: ..."), so a success never
// wears the error's colour.
//
//   say(line, 'Saved as image 31', 'ok');   say(line, err.detail);   say(line, 'Trigger 4 sent…', 'info');

const KINDS = { ok: 'form-ok', error: 'form-error', info: 'form-info' };

export function say(el, text, kind = 'error') {
  el.textContent = text === null || text === undefined ? '' : String(text);
  el.classList.remove(...Object.values(KINDS));
  el.classList.add(KINDS[kind] || KINDS.error);
  el.dataset.kind = kind;
  return el;
}
