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
    const code = h('input', { name: 'setup_code', autocomplete: 'one-time-code', required: true, spellcheck: false,
      placeholder: 'XXXX-XXXX-XXXX', maxlength: 64, testid: 'setup-code' });
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
      h('label', 'Setup code', code),
      h('p.muted', { testid: 'setup-code-help' },
        'The box prints a one-time setup code when it starts: on its terminal (`make run`), in its journal on the ',
        'device (', h('code', 'journalctl -u appliance-web'), '), or run ', h('code', 'appliance setup-code'),
        ' on the box for a new one. Only someone with access to the box can create the administrator.'),
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
        await ctx.api.post('/auth/setup', {
          username: username.value.trim(), password: password.value, setup_code: code.value.trim(),
        });
        const user = await ctx.api.get('/auth/me');
        ctx.signedIn(user, { wasSetup: true });
      } catch (err) {
        error.textContent = err instanceof ApiError ? err.detail : String(err);
        button.disabled = false;
      }
    });
    root.append(form);
    code.focus();
  },
};
