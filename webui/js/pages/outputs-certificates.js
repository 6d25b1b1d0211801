// The client certificates an OPC UA output trusts (Outputs page, admins): with Basic256Sha256 only these open a
// secure channel. Trusted ones first, then the latest ones the server refused (one click trusts one); add a
// client's certificate from its file (DER or PEM) or by pasting the PEM text; remove one to refuse it again.

import { errorText } from '../api.js';
import { h, modal } from '../dom.js';

const day = (t) => new Date(t * 1000).toISOString().slice(0, 10);
const seen = (c) => (c.last_seen_at ? `${new Date(c.last_seen_at * 1000).toLocaleString()} (${c.attempts}×)` : 'never');

// A certificate file as the API takes it: PEM as it is, DER as base64.
async function fileText(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const text = new TextDecoder('latin1').decode(bytes);
  if (text.includes('-----BEGIN CERTIFICATE-----')) return text;
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

export function openCertificates(ctx, output) {
  const url = `/outputs/${output.id}/certificates`;
  return modal(`Client certificates of ${output.name}`, (close) => {
    const rows = h('tbody');
    const msg = h('p.form-error', { testid: 'certificates-error', role: 'alert' });
    const act = async (call) => {
      msg.textContent = '';
      try { await call(); await load(); } catch (err) { msg.textContent = errorText(err); }
    };
    const row = (c) => h('tr', { testid: 'certificate-row', dataset: { state: c.state, thumbprint: c.thumbprint } },
      h('td', h('div', c.subject), h('div.muted', c.application_uri || 'no application URI')),
      h('td', h('code', { title: c.thumbprint }, `${c.thumbprint.slice(0, 16)}…`)),
      h('td', c.expired ? h('span.badge.warn', `expired ${day(c.not_after)}`) : `until ${day(c.not_after)}`),
      h('td', c.state === 'trusted'
        ? h('span.badge', { testid: 'certificate-state' }, c.source === 'first_use' ? 'trusted (first use)' : 'trusted')
        : h('span.badge.warn', { testid: 'certificate-state' }, 'refused')),
      h('td.muted', seen(c)),
      h('td.actions',
        c.state === 'refused' ? h('button', { type: 'button', testid: 'certificate-trust', onclick: () => act(() => ctx.api.post(`${url}/${c.id}/trust`)) }, 'Trust') : null,
        h('button.danger', { type: 'button', testid: 'certificate-remove', onclick: () => act(() => ctx.api.del(`${url}/${c.id}`)) }, 'Remove')));
    const load = async () => {
      const found = await ctx.api.get(url);
      rows.replaceChildren(...found.map(row));
      if (!found.length) rows.append(h('tr', h('td.muted', { colspan: 6 }, 'No client certificate yet: no Basic256Sha256 client is accepted.')));
    };
    const pem = h('textarea', { name: 'certificate', rows: 4, maxlength: 16384, testid: 'certificate-pem', placeholder: '-----BEGIN CERTIFICATE-----' });
    const file = h('input', { type: 'file', accept: '.der,.pem,.crt,.cer', testid: 'certificate-file', onchange: async () => {
      if (file.files.length) pem.value = await fileText(file.files[0]);
    } });
    const form = h('form.stack', { testid: 'certificate-form' },
      h('label', 'Trust a client application certificate: its file (DER or PEM), or the PEM text', file, pem),
      h('div.actions', h('button.primary', { type: 'submit', testid: 'certificate-add' }, 'Trust this certificate')));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      act(async () => { await ctx.api.post(url, { certificate: pem.value.trim() }); pem.value = ''; file.value = ''; });
    });
    load().catch((err) => { msg.textContent = errorText(err); });
    const policy = output.settings.security.includes('basic256sha256')
      ? (output.settings.trust_on_first_use ? 'Trust on first use is on: the first certificate presented while this list has none is trusted, every other refused.' : '')
      : 'This output does not offer Basic256Sha256: the list takes effect once it does.';
    return [
      h('p.muted', 'Basic256Sha256 clients (SCADA, HMI, MES) are accepted only with a certificate of this list. ', policy),
      h('table.table', { testid: 'certificates-table' },
        h('thead', h('tr', ['Certificate', 'SHA-256', 'Valid', 'State', 'Last seen', ''].map((t) => h('th', t)))), rows),
      msg, form,
      h('div.actions', h('button', { type: 'button', testid: 'certificates-close', onclick: () => close(true) }, 'Close')),
    ];
  }, { testid: 'certificates-dialog', wide: true });
}
