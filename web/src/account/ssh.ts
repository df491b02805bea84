// SSH keys: public keys that sign the user in at the server's SSH gateway
// (`ssh <session-id>@host -p PORT`). Only public keys are sent; the private half never leaves
// the user's machine.

import { api, Me, SshKey } from '../lib/api';
import { confirmDialog, notify } from '../lib/dialogs';
import { h, icon, render } from '../lib/dom';
import { errorLine, field, heading, input, table, when, actionForm } from './ui';

export async function sshSection(el: HTMLElement, me: Me): Promise<void> {
  const host = location.hostname;
  const how = me.ssh_port
    ? `Then: ssh <session-id>@${host} -p ${me.ssh_port}, or run "mayfly ssh-config" once and use ssh <session-id>.mayfly.`
    : 'This server has no SSH gateway running (its operator sets ssh_listen).';
  render(el, heading('SSH keys', `Your public keys sign you in to your sessions over SSH. ${how}`));
  if (!me.user) {
    el.append(h('div', { class: 'acct-empty' }, 'SSH keys belong to users. Sign in as a user to add one.'));
    return;
  }
  const key = h('textarea', { class: 'input mono', id: 'ssh-key', name: 'ssh-key', rows: 3, spellcheck: false, required: true, placeholder: 'ssh-ed25519 AAAA… you@laptop (the content of ~/.ssh/id_ed25519.pub)' });
  const name = input('ssh-name', { placeholder: 'optional: the key comment' });
  const add = h('button', { class: 'btn', type: 'submit', id: 'ssh-add' }, icon('add'), 'Add key');
  const err = errorLine('ssh-error');
  const list = h('div', { class: 'acct-list' });

  const load = async () => {
    try {
      const keys = await api.sshKeys();
      render(list, table('ssh-keys', ['Name', 'Fingerprint', 'Added', 'Last used', ''], keys.map(row), 'No SSH keys yet.'));
    } catch (e) {
      render(list, h('div', { class: 'acct-error' }, `Cannot list SSH keys: ${(e as Error).message}`));
    }
  };
  const row = (k: SshKey) => [
    h('span', { class: 'strong', dataset: { key: k.id } }, k.name),
    h('span', { class: 'mono', title: k.algorithm }, k.fingerprint),
    when(k.created_at),
    when(k.last_used_at),
    h('button', { class: 'btn secondary small', 'aria-label': `Remove ${k.name}`, on: { click: () => void remove(k) } }, 'Remove'),
  ];
  const remove = async (k: SshKey) => {
    if (!(await confirmDialog({ title: `Remove the SSH key ${k.name}?`, message: 'It stops signing you in at once; open connections stay until they close.', confirm: 'Remove', danger: true }))) return;
    try {
      await api.removeSshKey(k.id);
    } catch (e) {
      notify('error', `Cannot remove ${k.name}: ${(e as Error).message}`);
    }
    await load();
  };
  const form = actionForm(
    'ssh-form',
    add,
    err,
    async () => {
      await api.addSshKey(key.value.trim(), name.value.trim() || undefined);
      key.value = name.value = '';
      await load();
    },
    field('Public key', key),
    field('Name', name),
  );
  el.append(form, err, list);
  await load();
}
