// Before a model is deployed: what the deploy would do, asked of the box (GET /models/{id}/deploy-check), and a
// confirmation that says it when it matters: the model's own validation says it finds (almost) nothing, or
// cameras that follow the deployed model have rules counting classes it does not have (named, camera by
// camera). Resolves { go, body }: `go` false when the user cancelled; `body` is what POST .../deploy takes.
//
//   const answer = await confirmDeploy(api, model);
//   if (answer.go) await api.post(`/models/${model.id}/deploy`, answer.body);

import { h, modal } from '../dom.js';

function brokenRules(check) {
  return h('li', { testid: 'deploy-broken-rules' },
    h('strong', 'Rules it cannot satisfy. '),
    `Its classes (${check.classes.join(', ') || 'none'}) do not include what these rules count; as written they `
      + 'fail (or pass) every part:',
    h('ul', check.broken_rules.map((b) => h('li', { testid: 'deploy-broken-rule' },
      `camera ${b.camera_name}: rule “${b.rule}” counts ${b.missing.map((m) => `“${m}”`).join(', ')}`))));
}

export async function confirmDeploy(api, model) {
  const check = await api.get(`/models/${model.id}/deploy-check`);
  const reasons = [];
  if (check.unusable_reason) {
    reasons.push(h('li', { testid: 'deploy-unusable' }, h('strong', 'Not usable. '), `${check.unusable_reason}.`));
  }
  if (check.broken_rules.length) reasons.push(brokenRules(check));
  if (!reasons.length) return { go: true, body: {} };
  const go = await modal(`Deploy ${model.name} (#${model.id})?`, (close) => [
    h('ul.warnings.deploy-reasons', reasons),
    h('p.muted', 'Deploying replaces the model every camera without a model of its own runs, at once.'),
    h('div.actions',
      h('button', { type: 'button', testid: 'confirm-cancel', onclick: () => close(false) }, 'Cancel'),
      h('button.danger', { type: 'button', testid: 'confirm-ok', onclick: () => close(true) }, 'Deploy anyway')),
  ], { testid: 'deploy-confirm' }).then((v) => v === true);
  return { go, body: check.broken_rules.length ? { deploy_anyway: true } : {} };
}
