// Users (admins only): create with a role, change role, disable/enable, reset password.

import { ApiError } from '../api.js';
import { onSubmit } from '../components/form-submit.js';
import { confirmDialog, h, modal } from '../dom.js';

const ROLES = ['admin', 'labeler', 'viewer'];

function roleSelect(value, testid) {
  return h('select', { testid }, ROLES.map((r) => h('option', { value: r, selected: r === value }, r)));
}

export default {
  route: '#/users',
  title: 'Users',
  nav: 'Users',
  admin: true,
  async render(root, _params, ctx) {
    const table = h('tbody');
    const error = h('p.form-error', { testid: 'user-error', role: 'alert' });
    const fail = (err) => {
      error.textContent = err instanceof ApiError ? err.detail : String(err);
    };

    const load = async () => {
      const users = await ctx.api.get('/users', { signal: ctx.signal });
      table.replaceChildren(...users.map((u) => {
        const role = roleSelect(u.role, 'user-role');
        role.disabled = u.id === ctx.user.id;
        role.addEventListener('change', async () => {
          try {
            await ctx.api.patch(`/users/${u.id}`, { role: role.value });
            ctx.toast(`${u.username} is now ${role.value}`, 'ok');
          } catch (err) {
            fail(err);
            role.value = u.role;
          }
        });
        const toggle = h('button', { type: 'button', testid: 'user-toggle', disabled: u.id === ctx.user.id,
          onclick: async () => {
            if (!u.disabled && !(await confirmDialog('Disable user',
              `Disable ${u.username}? They are logged out and cannot log in until enabled again.`,
              { confirmLabel: 'Disable' }))) return;
            try {
              await ctx.api.patch(`/users/${u.id}`, { disabled: !u.disabled });
              await load();
            } catch (err) {
              fail(err);
            }
          } }, u.disabled ? 'Enable' : 'Disable');
        const reset = h('button', { type: 'button', testid: 'user-reset', onclick: () => resetPassword(u) },
          'Reset password');
        return h('tr', { testid: 'user-row', dataset: { username: u.username } },
          h('td', u.username), h('td', role),
          h('td', { testid: 'user-state' }, u.disabled ? h('span.badge.muted', 'disabled') : h('span.badge', 'active')),
          h('td.muted', new Date(u.created_at).toLocaleDateString()),
          h('td.actions', reset, toggle));
      }));
    };

    const resetPassword = (u) => modal(`New password for ${u.username}`, (close) => {
      const password = h('input', { type: 'password', minlength: 8, required: true, autocomplete: 'new-password',
        testid: 'reset-password' });
      const msg = h('p.form-error');
      const form = h('form.stack', h('label', 'New password (at least 8 characters)', password), msg,
        h('div.actions', h('button', { type: 'button', onclick: () => close(false) }, 'Cancel'),
          h('button.primary', { type: 'submit', testid: 'reset-submit' }, 'Set password')));
      form.addEventListener('submit', async (event) => {
        event.preventDefault();
        try {
          await ctx.api.patch(`/users/${u.id}`, { password: password.value });
          ctx.toast(`Password of ${u.username} changed`, 'ok');
          close(true);
        } catch (err) {
          msg.textContent = err instanceof ApiError ? err.detail : String(err);
        }
      });
      return form;
    }, { testid: 'reset-dialog' });

    const username = h('input', { required: true, maxlength: 64, autocomplete: 'off', testid: 'new-username' });
    const password = h('input', { type: 'password', required: true, minlength: 8, autocomplete: 'new-password',
      testid: 'new-password' });
    const role = roleSelect('labeler', 'new-role');
    const form = h('form.card.inline-form', { testid: 'user-form' },
      h('h2', 'New user'),
      h('label', 'User name', username), h('label', 'Password', password), h('label', 'Role', role),
      h('button.primary', { type: 'submit', testid: 'user-create' }, 'Create'));
    onSubmit(form, {
      error,
      send: async () => {
        await ctx.api.post('/users', { username: username.value.trim(), password: password.value, role: role.value });
        ctx.toast(`User ${username.value.trim()} created`, 'ok');
        form.reset();
        await load();
      },
    });
    root.append(h('section',
      h('div.page-head', h('h1', 'Users')),
      form, error,
      h('table.table', { testid: 'users-table' },
        h('thead', h('tr', ['User', 'Role', 'State', 'Created', ''].map((t) => h('th', t)))), table)));
    await load();
  },
};
