// First run: no user exists yet, so the console asks for the first administrator instead of a login.

import { ApiError } from '../api.js';
import { h } from '../dom.js';

export default {
  route: '#/setup',
  title: 'First-run setup',
  public: true,
  render(root, _params, ctx) {
    root.className = 'centered';
    const error = h('p.form-error', { testid: 'setup-error', role: 'alert' });
    const username = h('input', { name: 'username', autocomplete: 'username', required: true, value: 'admin',
      testid: 'setup-username' });
    const password = h('input', { name: 'password', type: 'password', autocomplete: 'new-password', required: true,
      minlength: 8, testid: 'setup-password' });
    const repeat = h('input', { name: 'repeat', type: 'password', autocomplete: 'new-password', required: true,
      minlength: 8, testid: 'setup-repeat' });
    const button = h('button.primary', { type: 'submit', testid: 'setup-submit' }, 'Create administrator');
    const form = h('form.card.narrow', { testid: 'setup-form' },
      h('h1', 'Welcome'),
      h('p', 'This appliance has no accounts yet. Create the administrator account to start.'),
      h('label', 'Administrator user name', username),
      h('label', 'Password (at least 8 characters)', password),
      h('label', 'Repeat password', repeat),
      error,
      h('div.actions', button));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      error.textContent = '';
      if (password.value !== repeat.value) {
        error.textContent = 'The passwords differ.';
        return;
      }
      button.disabled = true;
      try {
        await ctx.api.post('/auth/setup', { username: username.value.trim(), password: password.value });
        const user = await ctx.api.get('/auth/me');
        ctx.signedIn(user, { wasSetup: true });
      } catch (err) {
        error.textContent = err instanceof ApiError ? err.detail : String(err);
        button.disabled = false;
      }
    });
    root.append(form);
    password.focus();
  },
};
