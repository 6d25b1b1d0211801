// Editable list of classes (name + colour) used by the create-dataset dialog and the dataset settings page.

import { h } from '../dom.js';
import { defaultColor } from '../palette.js';

/**
 * classesEditor(initial) -> { el, value() -> [{name, color}], }
 * `lockedCount`: leading classes that cannot be removed (they may have boxes; ids are positions).
 */
export function classesEditor(initial = [], { lockedCount = 0 } = {}) {
  const list = h('ol.class-editor', { testid: 'class-editor' });
  const addRow = (name = '', color = null, locked = false) => {
    const index = list.children.length;
    const nameInput = h('input', { value: name, placeholder: 'class name', maxlength: 100, testid: 'class-name',
      'aria-label': `class ${index + 1} name` });
    const colorInput = h('input', { type: 'color', value: color || defaultColor(index),
      testid: 'class-color', 'aria-label': `class ${index + 1} colour` });
    const remove = h('button.icon', { type: 'button', title: locked ? 'classes in use keep their place' : 'Remove class',
      testid: 'class-remove', disabled: locked, onclick: () => row.remove() }, '×');
    const row = h('li', colorInput, nameInput, remove);
    list.append(row);
    return nameInput;
  };
  initial.forEach((c, i) => addRow(c.name, c.color, i < lockedCount));
  const add = h('button', { type: 'button', testid: 'class-add', onclick: () => addRow().focus() }, '+ Add class');
  const el = h('div.class-editor-wrap', list, add);
  return {
    el,
    addRow,
    value() {
      return [...list.children]
        .map((row) => ({ name: row.querySelector('[data-testid=class-name]').value.trim(),
          color: row.querySelector('[data-testid=class-color]').value }))
        .filter((c) => c.name);
    },
  };
}

/** A small coloured chip with the class name as text. */
export function classChip(cls, extra = {}) {
  return h('span.chip', { ...extra, style: { '--chip': cls.color } }, h('span.swatch'), cls.name);
}
