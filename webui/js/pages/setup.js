// First run: no user exists yet, so the console asks for the first administrator instead of a login.

import { signInForm } from '../components/sign-in-form.js';
import { h } from '../dom.js';

export default {
  route: '#/setup',
  title: 'First-run setup',
  public: true,
  render(root, _params, ctx) {
    const code = h('input', { name: 'setup_code', autocomplete: 'one-time-code', required: true, spellcheck: false,
      placeholder: 'XXXX-XXXX-XXXX', maxlength: 64, testid: 'setup-code' });
    const username = h('input', { name: 'username', autocomplete: 'username', required: true, value: 'admin',
      testid: 'setup-username' });
    const password = h('input', { name: 'password', type: 'password', autocomplete: 'new-password', required: true,
      minlength: 8, testid: 'setup-password' });
    const repeat = h('input', { name: 'repeat', type: 'password', autocomplete: 'new-password', required: true,
      minlength: 8, testid: 'setup-repeat' });
    signInForm(root, ctx, {
      name: 'setup',
      heading: 'Welcome',
      fields: [
        h('p', 'This appliance has no accounts yet. Create the administrator account to start.'),
        h('label', 'Setup code', code),
        h('p.muted', { testid: 'setup-code-help' },
          'The box prints a one-time setup code when it starts: on its terminal (', h('code', 'make run'),
          '), in its journal on the device (', h('code', 'journalctl -u appliance-web'), '), or run ', h('code', 'appliance setup-code'),
          ' on the box for a new one. Only someone with access to the box can create the administrator.'),
        h('label', 'Administrator user name', username),
        h('label', 'Password (at least 8 characters)', password),
        h('label', 'Repeat password', repeat),
      ],
      submitLabel: 'Create administrator',
      check: () => (password.value !== repeat.value ? 'The passwords differ.' : ''),
      send: () => ctx.api.post('/auth/setup', {
        username: username.value.trim(), password: password.value, setup_code: code.value.trim(),
      }),
      signedIn: { wasSetup: true },
      focus: code,
    });
  },
};
