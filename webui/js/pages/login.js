// Login form; shows why the user is here when the session expired.

import { signInForm } from '../components/sign-in-form.js';
import { h } from '../dom.js';

export default {
  route: '#/login',
  title: 'Log in',
  public: true,
  render(root, _params, ctx) {
    const username = h('input', { name: 'username', autocomplete: 'username', required: true, testid: 'login-username' });
    const password = h('input', {
      name: 'password', type: 'password', autocomplete: 'current-password', required: true, testid: 'login-password',
    });
    signInForm(root, ctx, {
      name: 'login',
      heading: 'Log in',
      fields: [
        ctx.query.get('expired')
          ? h('p.notice', { testid: 'session-expired' },
            'Your session expired. Log in again; unsaved labels are kept on this computer and saved when you return.')
          : null,
        h('label', 'User name', username),
        h('label', 'Password', password),
      ],
      submitLabel: 'Log in',
      send: () => ctx.api.post('/auth/login', { username: username.value.trim(), password: password.value }),
      onError: () => password.select(),
      focus: username,
    });
  },
};
