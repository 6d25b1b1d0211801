// The classes a rule counts, chosen from the class list of the camera's model, never typed: a misspelt class
// would never be detected, so a `present` rule would fail every part and an `absent` rule pass every one.
// A compact drop-down of checkboxes; nothing ticked means any class. A class the rule already names that
// the model does not have (saved before this model was deployed) stays listed, ticked and marked, so the
// user sees it and can untick it (the server refuses to save it).
//
//   const picker = classPicker(['circle', 'square'], rule.classes, { disabled });
//   row.append(picker);  picker.value  // ['circle']
//   classPicker(null, rule.classes)   // no model: nothing to choose from, the classes kept as they are

import { h } from '../dom.js';

export function classPicker(modelClasses, chosen = [], { disabled = false } = {}) {
  const names = modelClasses || [];
  const known = new Set(names.map((n) => n.toLowerCase()));
  const wanted = new Set(chosen.map((c) => c.toLowerCase()));
  const unknown = chosen.filter((c) => !known.has(c.toLowerCase()));
  const summary = h('summary', { testid: 'rule-classes-summary' });
  const option = (name, missing) => h('label.inline', { class: missing ? 'missing' : '', title: missing
    ? `${name} is not a class of the camera's model: untick it` : '' },
  h('input', { type: 'checkbox', value: name, checked: wanted.has(name.toLowerCase()), disabled,
    testid: 'rule-class-option', dataset: { missing: missing ? '1' : '' } }), ` ${name}${missing ? ' (not in the model)' : ''}`);
  const menu = h('div.class-picker-menu', { testid: 'rule-classes-menu' },
    names.map((name) => option(name, false)),
    unknown.map((name) => option(name, Boolean(modelClasses))),
    modelClasses ? null : h('p.muted.small', 'No model: deploy one (or choose one in the camera settings) to choose classes.'));
  const picker = h('details.class-picker', { testid: 'rule-classes' }, summary, menu);
  const boxes = () => [...menu.querySelectorAll('input[type=checkbox]')];
  const render = () => {
    const ticked = boxes().filter((b) => b.checked);
    summary.textContent = ticked.length ? ticked.map((b) => b.value).join(', ') : 'any class';
    picker.classList.toggle('invalid', ticked.some((b) => b.dataset.missing));
  };
  menu.addEventListener('change', render);
  // A click elsewhere closes it: on the click, not the press, so that what was pressed (Save rules) is not
  // moved away by the list closing between the press and the release.
  const outside = (event) => { if (!picker.contains(event.target)) picker.open = false; };
  picker.addEventListener('toggle', () => {
    if (picker.open) document.addEventListener('click', outside, true);
    else document.removeEventListener('click', outside, true);
  });
  Object.defineProperty(picker, 'value', { get: () => boxes().filter((b) => b.checked).map((b) => b.value) });
  render();
  return picker;
}
