// One state per output row on the Outputs page: the latest thing known of the output, with its time, and
// the earlier ones in the line's title. What is known: the connection (MQTT connected, OPC UA / Modbus
// listening, since `connected_at`), the latest delivery, the latest error, and the latest Test pressed on
// this page. A webhook has no connection: until its first event or Test it is waiting, not "not connected";
// and a delivery from before an error never sits next to that error as if both were now.
//
//   stateCell(output, test)   // test: { ok, detail, elapsed_ms, at } of the last Test here, { pending } or null

import { h } from '../dom.js';
import { formatNumber } from './format.js';

const SERVERS = ['opcua', 'modbus'];

export function ago(unix, now = Date.now() / 1000) {
  return unix ? `${Math.max(0, Math.round(now - unix))} s ago` : 'never';
}

/** What is known of the output, newest first: [{ at, ok, text }]. */
export function outputFacts(o, test) {
  const st = o.status;
  const facts = [];
  if (o.kind !== 'webhook' && st.connected) facts.push({ at: st.connected_at || 0, ok: true, text: st.detail });
  if (st.last_delivery_at) {
    facts.push({ at: st.last_delivery_at, ok: true, text: `delivered event ${formatNumber(st.last_event_id)}` });
  }
  if (st.last_error_at) facts.push({ at: st.last_error_at, ok: false, text: st.last_error });
  if (test && test.at) {
    facts.push({ at: test.at, ok: test.ok, text: `Test ${test.ok ? 'OK' : 'failed'}: ${test.detail}${test.elapsed_ms !== undefined ? ` (${test.elapsed_ms} ms)` : ''}` });
  }
  return facts.sort((a, b) => b.at - a.at);
}

/** { kind: ok | bad | idle | warn | off, badge, text, at, earlier } for one output. */
export function outputState(o, test) {
  const st = o.status;
  if (!o.enabled) return { kind: 'off', badge: 'disabled', text: '', at: null, earlier: [] };
  if (!st.running) return { kind: 'warn', badge: 'process not running', text: st.detail, at: null, earlier: [] };
  if (test && test.pending) return { kind: 'idle', badge: 'testing', text: 'testing…', at: null, earlier: outputFacts(o, null) };
  const [latest, ...earlier] = outputFacts(o, test);
  const connected = SERVERS.includes(o.kind) ? 'listening' : 'connected';
  if (o.kind !== 'webhook' && !st.connected) {
    // A broker or a server: not connected is the present state, whatever came before.
    return { kind: latest && !latest.ok ? 'bad' : 'warn', badge: `not ${connected}`,
      text: latest ? latest.text : st.detail, at: latest ? latest.at : null, earlier };
  }
  if (!latest) return { kind: 'idle', badge: 'waiting', text: 'no event sent yet: press Test to try the receiver', at: null, earlier };
  const badge = latest.ok ? (o.kind === 'webhook' ? 'OK' : connected) : 'failing';
  return { kind: latest.ok ? 'ok' : 'bad', badge, text: latest.text, at: latest.at, earlier };
}

const BADGES = { ok: 'span.badge.reviewed', bad: 'span.badge.bad', idle: 'span.badge.muted', warn: 'span.badge.warn', off: 'span.badge.muted' };

export function stateCell(o, test) {
  const state = outputState(o, test);
  return h('td', { testid: 'output-status', dataset: { state: state.kind } },
    h(BADGES[state.kind], { testid: state.kind === 'ok' ? 'output-connected' : 'output-disconnected' }, state.badge),
    state.text ? h('div', { testid: 'output-state', class: state.kind === 'bad' ? 'form-error' : state.kind === 'ok' ? 'form-ok' : 'muted',
      title: state.earlier.map((f) => `${ago(f.at)}: ${f.text}`).join('\n') },
    state.text, state.at ? h('span.muted', ` · ${ago(state.at)}`) : null) : null);
}
