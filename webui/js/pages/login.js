// Login form; shows why the user is here when the session expired.

import { ApiError } from '../api.js';
import { h } from '../dom.js';

export default {
  route: '#/login',
  title: 'Log in',
  public: true,
  render(root, _params, ctx) {
    root.className = 'centered';
    const error = h('p.form-error', { testid: 'login-error', role: 'alert' });
    const username = h('input', { name: 'username', autocomplete: 'username', required: true, testid: 'login-username' });
    const password = h('input', {
      name: 'password', type: 'password', autocomplete: 'current-password', required: true, testid: 'login-password',
    });
    const button = h('button.primary', { type: 'submit', testid: 'login-submit' }, 'Log in');
    const form = h('form.card.narrow', { testid: 'login-form' },
      h('h1', 'Log in'),
      ctx.query.get('expired')
        ? h('p.notice', { testid: 'session-expired' },
          'Your session expired. Log in again; unsaved labels are kept on this computer and saved when you return.')
        : null,
      h('label', 'User name', username),
      h('label', 'Password', password),
      error,
      h('div.actions', button));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      error.textContent = '';
      button.disabled = true;
      try {
        await ctx.api.post('/auth/login', { username: username.value.trim(), password: password.value });
        const user = await ctx.api.get('/auth/me');
        ctx.signedIn(user);
      } catch (err) {
        error.textContent = err instanceof ApiError ? err.detail : String(err);
        button.disabled = false;
        password.select();
      }
    });
    root.append(form);
    username.focus();
  },
};
