// Users (admins): list with role, source and last sign-in; create one; edit role, password and
// quotas; delete one (their sessions end).

import { api, Me, Quotas, Role, User } from '../lib/api';
import { confirmDialog, notify } from '../lib/dialogs';
import { h, icon, render } from '../lib/dom';
import { errorLine, field, formModal, heading, input, table, when, actionForm } from './ui';

const QUOTAS: [keyof Quotas, string][] = [
  ['max_sessions', 'Max sessions'],
  ['max_vcpus', 'Max vCPUs'],
  ['max_memory_mib', 'Max memory (MiB)'],
  ['agent_runs_per_day', 'Agent runs per day'],
];

function roleSelect(id: string, value: Role = 'member'): HTMLSelectElement {
  const s = h('select', { class: 'input', id, name: id }, h('option', { value: 'member' }, 'member'), h('option', { value: 'admin' }, 'admin'));
  s.value = value;
  return s;
}

/** "sessions ≤ 1, vCPUs ≤ 4", or "role defaults". */
export function quotaSummary(q: Quotas): string {
  const parts = QUOTAS.filter(([k]) => q[k] !== undefined).map(([k, label]) => `${label.replace(/^Max /, '').toLowerCase()} ≤ ${q[k]}`);
  return parts.length ? parts.join(', ') : 'role defaults';
}

export async function usersSection(el: HTMLElement, me: Me): Promise<void> {
  render(el, heading('Users', 'Everyone who may sign in. Members see only their own sessions; admins see all of them.'));
  const email = input('user-email', { type: 'email', placeholder: 'ada@example.com', required: true });
  const name = input('user-name', { placeholder: 'Ada Lovelace' });
  const role = roleSelect('user-role');
  const password = input('user-password', { type: 'password', minlength: 10, placeholder: 'at least 10 characters', autocomplete: 'new-password' });
  const create = h('button', { class: 'btn', type: 'submit', id: 'user-create' }, icon('add'), 'Create user');
  const err = errorLine('user-create-error');
  const list = h('div', { class: 'acct-list' });

  const load = async () => {
    try {
      const users = await api.users();
      render(list, table('users', ['Email', 'Name', 'Role', 'Source', 'Last sign-in', 'Quotas', ''], users.map(row), 'No users yet.'));
    } catch (e) {
      render(list, h('div', { class: 'acct-error' }, `Cannot list users: ${(e as Error).message}`));
    }
  };
  const row = (u: User) => [
    h('span', { class: 'strong', dataset: { user: u.id } }, u.email),
    u.name,
    h('span', { class: `role-chip ${u.role}` }, u.role),
    u.source,
    when(u.last_sign_in_at),
    h('span', { class: 'quota-summary' }, quotaSummary(u.quotas)),
    h(
      'span',
      { class: 'acct-actions' },
      h('button', { class: 'btn secondary small', 'aria-label': `Edit ${u.email}`, on: { click: () => void edit(u) } }, 'Edit'),
      u.id === me.user?.id
        ? null
        : h('button', { class: 'btn secondary small', 'aria-label': `Delete ${u.email}`, on: { click: () => void remove(u) } }, 'Delete'),
    ),
  ];
  const edit = async (u: User) => {
    const ename = input('edit-name', { value: u.name });
    const erole = roleSelect('edit-role', u.role);
    const epass = input('edit-password', { type: 'password', minlength: 10, placeholder: 'unchanged', autocomplete: 'new-password' });
    const quotas = QUOTAS.map(([k, label]) => [k, input(`edit-${k}`, { type: 'number', min: 0, placeholder: 'role default', value: u.quotas[k] ?? '' }), label] as const);
    const saved = await formModal(
      `Edit ${u.email}`,
      [
        field('Name', ename),
        field('Role', erole),
        field('New password', epass, 'Leave empty to keep the current one.'),
        h('div', { class: 'acct-grid' }, quotas.map(([, i, label]) => field(label, i))),
        h('p', { class: 'acct-hint' }, 'An empty quota uses the role default.'),
      ],
      'Save',
      async () => {
        const q: Quotas = {};
        for (const [k, i] of quotas) if (i.value.trim() !== '') q[k] = Number(i.value);
        await api.updateUser(u.id, { name: ename.value.trim(), role: erole.value as Role, password: epass.value || undefined, quotas: q });
      },
    );
    if (saved) await load();
  };
  const remove = async (u: User) => {
    const ok = await confirmDialog({
      title: `Delete ${u.email}?`,
      message: 'They are signed out at once, their API tokens stop working, and all their sessions end (their VMs and files are gone).',
      confirm: 'Delete user',
      danger: true,
    });
    if (!ok) return;
    try {
      await api.deleteUser(u.id);
      notify('info', `${u.email} deleted.`);
    } catch (e) {
      notify('error', `Cannot delete ${u.email}: ${(e as Error).message}`);
    }
    await load();
  };
  const form = actionForm(
    'user-form',
    create,
    err,
    async () => {
      await api.createUser({ email: email.value.trim(), name: name.value.trim() || undefined, role: role.value as Role, password: password.value || undefined });
      email.value = name.value = password.value = '';
      await load();
    },
    field('Email', email),
    field('Name', name),
    field('Role', role),
    field('Password', password),
  );
  el.append(form, h('p', { class: 'acct-hint' }, 'Without a password the user signs in with the identity provider only.'), err, list);
  await load();
}
