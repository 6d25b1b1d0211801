// The card a signed-out visitor sees (log in, first-run setup): a heading, the page's fields, an error line and one
// button. Submitting sends the page's request, then asks who is logged in and hands that user to the console.

import { h } from '../dom.js';
import { onSubmit } from './form-submit.js';

/**
 * signInForm(root, ctx, {name, heading, fields, submitLabel, send, check, onError, signedIn, focus})
 * `name` prefixes the test ids (`${name}-form`, `${name}-error`, `${name}-submit`); `signedIn` is passed on to
 * ctx.signedIn(user, signedIn); `focus` is the field focused once the card is shown.
 */
export function signInForm(root, ctx, { name, heading, fields, submitLabel, send, check, onError, signedIn, focus }) {
  root.className = 'centered';
  const error = h('p.form-error', { testid: `${name}-error`, role: 'alert' });
  const button = h('button.primary', { type: 'submit', testid: `${name}-submit` }, submitLabel);
  const form = h('form.card.narrow', { testid: `${name}-form` },
    h('h1', heading),
    fields,
    error,
    h('div.actions', button));
  onSubmit(form, {
    error, button, check, onError, holdOnSuccess: true,
    send: async () => {
      await send();
      const user = await ctx.api.get('/auth/me');
      ctx.signedIn(user, signedIn);
    },
  });
  root.append(form);
  focus.focus();
}
