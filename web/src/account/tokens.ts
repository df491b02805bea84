// API tokens: make one (its secret is shown once, with a copy button), list them, revoke one.

import { api, ApiToken, CreatedToken, Me } from '../lib/api';
import { confirmDialog, notify } from '../lib/dialogs';
import { h, icon, render } from '../lib/dom';
import { copy, errorLine, field, heading, input, table, when, actionForm } from './ui';

export async function tokensSection(el: HTMLElement, me: Me): Promise<void> {
  render(el, heading('API tokens', 'Tokens let scripts and tools use the API as you: send one as "Authorization: Bearer mfy_…", or paste it on the sign-in page.'));
  if (!me.user) {
    el.append(h('div', { class: 'acct-empty' }, 'API tokens belong to users. The server token has none: sign in as a user to make one.'));
    return;
  }
  const name = input('token-name', { placeholder: 'e.g. laptop CLI', required: true, maxlength: 100 });
  const days = input('token-days', { type: 'number', min: 1, value: '90', required: true });
  const create = h('button', { class: 'btn', type: 'submit', id: 'token-create' }, icon('add'), 'Create token');
  const err = errorLine('token-create-error');
  const secret = h('div', { id: 'token-secret-slot' });
  const list = h('div', { class: 'acct-list' });

  const load = async () => {
    try {
      const tokens = await api.tokens();
      render(list, table('tokens', ['Name', 'Created', 'Expires', 'Last used', ''], tokens.map(row), 'No API tokens yet.'));
    } catch (e) {
      render(list, h('div', { class: 'acct-error' }, `Cannot list tokens: ${(e as Error).message}`));
    }
  };
  const row = (t: ApiToken) => [
    h('span', { class: 'strong', dataset: { token: t.id } }, t.name),
    when(t.created_at),
    when(t.expires_at, true),
    when(t.last_used_at),
    h('button', { class: 'btn secondary small', dataset: { revoke: t.id }, 'aria-label': `Revoke ${t.name}`, on: { click: () => void revoke(t) } }, 'Revoke'),
  ];
  const revoke = async (t: ApiToken) => {
    const ok = await confirmDialog({
      title: `Revoke token "${t.name}"?`,
      message: 'Anything using it stops working at once. This cannot be undone.',
      confirm: 'Revoke',
      danger: true,
    });
    if (!ok) return;
    try {
      await api.revokeToken(t.id);
      notify('info', `Token "${t.name}" revoked.`);
    } catch (e) {
      notify('error', `Cannot revoke "${t.name}": ${(e as Error).message}`);
    }
    await load();
  };
  const shown = (t: CreatedToken) => {
    const copyBtn = h('button', { class: 'btn', type: 'button', id: 'token-copy' }, icon('copy'), 'Copy');
    copyBtn.addEventListener('click', async () => {
      const ok = await copy(t.token);
      render(copyBtn, icon(ok ? 'check' : 'error'), ok ? 'Copied' : 'Copy failed: select it');
    });
    render(
      secret,
      h(
        'div',
        { class: 'acct-secret', id: 'token-secret' },
        h('div', { class: 'acct-secret-warn' }, icon('warning'), h('span', null, h('strong', null, `Token "${t.name}" created. `), 'Copy it now: it is shown only this once and cannot be recovered.')),
        h('div', { class: 'acct-secret-row' }, h('code', { id: 'token-value' }, t.token), copyBtn),
        h('button', { class: 'btn secondary small', type: 'button', id: 'token-secret-done', on: { click: () => render(secret) } }, 'I have copied it'),
      ),
    );
  };
  const form = actionForm(
    'token-form',
    create,
    err,
    async () => {
      shown(await api.createToken(name.value.trim(), Number(days.value)));
      name.value = '';
      await load();
    },
    field('Name', name),
    field('Expires in (days)', days),
  );
  el.append(form, err, secret, list);
  await load();
}
