// Saved git tokens: one per host (with an optional username), used when a session clones or
// pushes there. The tokens themselves are never shown again.

import { api, Me, SavedGitCredential } from '../lib/api';
import { confirmDialog, notify } from '../lib/dialogs';
import { h, icon, render } from '../lib/dom';
import { errorLine, field, heading, input, table, when, actionForm } from './ui';

export async function gitSection(el: HTMLElement, me: Me): Promise<void> {
  render(el, heading('Git tokens', 'Saved per host, they let your sessions clone and push private repositories. Saved tokens are never shown again.'));
  if (!me.user) {
    el.append(h('div', { class: 'acct-empty' }, 'Git tokens belong to users. Sign in as a user to save one.'));
    return;
  }
  const host = input('git-host', { placeholder: 'github.com', required: true });
  const username = input('git-username', { placeholder: 'optional' });
  const token = input('git-token', { type: 'password', placeholder: 'personal access token', required: true, autocomplete: 'off' });
  const save = h('button', { class: 'btn', type: 'submit', id: 'git-save' }, icon('save'), 'Save');
  const err = errorLine('git-error');
  const list = h('div', { class: 'acct-list' });

  const load = async () => {
    try {
      const saved = await api.gitCredentials();
      render(list, table('git-hosts', ['Host', 'Username', 'Saved', ''], saved.map(row), 'No git tokens saved.'));
    } catch (e) {
      render(list, h('div', { class: 'acct-error' }, `Cannot list git tokens: ${(e as Error).message}`));
    }
  };
  const row = (c: SavedGitCredential) => [
    h('span', { class: 'strong mono', dataset: { host: c.host } }, c.host),
    c.username ?? h('span', { class: 'muted' }, '—'),
    when(c.updated_at),
    h('button', { class: 'btn secondary small', 'aria-label': `Delete ${c.host}`, on: { click: () => void remove(c) } }, 'Delete'),
  ];
  const remove = async (c: SavedGitCredential) => {
    if (!(await confirmDialog({ title: `Delete the git token for ${c.host}?`, message: 'Your sessions, running ones too, will no longer get it.', confirm: 'Delete', danger: true }))) return;
    try {
      await api.deleteGitCredential(c.host);
    } catch (e) {
      notify('error', `Cannot delete ${c.host}: ${(e as Error).message}`);
    }
    await load();
  };
  const form = actionForm(
    'git-form',
    save,
    err,
    async () => {
      await api.saveGitCredential(host.value.trim(), token.value, username.value.trim() || undefined);
      host.value = username.value = token.value = '';
      await load();
    },
    field('Host', host),
    field('Username', username),
    field('Token', token),
  );
  el.append(form, err, list);
  await load();
}
