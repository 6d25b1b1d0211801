// An API refusal that names a field of a list ("settings.rules[1].max_count: ..." from a 422, or msgspec's
// "Expected `int` >= 0 - at `$.settings.rules[1].count`" from a 400) read as a sentence and put next to the
// field it is about, instead of the API's words above the form.
//
//   const found = fieldError(err.detail, 'rules');   // null when the detail names no field of that list
//   // { index: 1, field: 'max_count', sentence: "Max must be at least Count (3)." }

const LABELS = {
  name: 'Name', zone: 'Zone', classes: 'Classes', min_confidence: 'Min conf.', condition: 'Condition',
  count: 'Count', max_count: 'Max',
};

function typeSentence(message) {
  const bound = (m, word) => (m ? ` ${word} ${m[1]}` : '');
  if (/^Expected `int`/.test(message)) {
    return `must be a whole number${bound(/>= (-?[\d.]+)/.exec(message), 'from')}${bound(/<= (-?[\d.]+)/.exec(message), 'up to')}`;
  }
  if (/^Expected `float`/.test(message)) {
    return `must be a number${bound(/>= (-?[\d.]+)/.exec(message), 'from')}${bound(/<= (-?[\d.]+)/.exec(message), 'up to')}`;
  }
  if (/^Expected `str`/.test(message)) return 'must be text';
  if (/^Invalid enumeration value/.test(message)) return 'is not one of the choices';
  return message.replace(/`/g, '');
}

/** The field of list `list` a refusal names and a sentence for it; null when it names none. */
export function fieldError(detail, list) {
  const text = String(detail || '');
  let m = new RegExp(`^settings\\.${list}\\[(\\d+)\\]\\.(\\w+): (.*)$`, 's').exec(text);
  let message;
  if (m) {
    message = m[3];
  } else {
    m = new RegExp(`^(.*?)(?: - )?at \`\\$\\.settings\\.${list}\\[(\\d+)\\]\\.(\\w+)\`$`, 's').exec(text);
    if (!m) return null;
    m = [m[0], m[2], m[3], m[1]];
    message = typeSentence(m[3]);
  }
  const field = m[2];
  const label = LABELS[field] || field;
  // The API's field names read as the form's column names: max_count -> Max, min_confidence -> Min conf.
  const words = message.replace(/\b(max_count|min_confidence|count)\b/g, (name) => LABELS[name]);
  const sentence = `${label}: ${words}`;
  return { index: Number(m[1]), field, label, sentence: /[.!?]$/.test(sentence) ? sentence : `${sentence}.` };
}
