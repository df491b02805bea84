// The audit log (admins): newest first, filtered by user, action and time range; "Older" pages
// back with `next_before`.

import { api, AuditEntry, AuditQuery, Me, User } from '../lib/api';
import { h, icon, render } from '../lib/dom';
import { field, heading, input } from './ui';

const ACTIONS = [
  'sign_in', 'sign_in_failed', 'sign_out', 'token_create', 'token_revoke', 'session_create', 'session_fork', 'session_delete',
  'visibility_change', 'agent_run', 'admin_access', 'user_create', 'user_update', 'user_delete', 'git_credential_save', 'git_credential_delete',
];
const PAGE = 50;

/** A `datetime-local` value as RFC 3339 (local time), or undefined. */
function rfc3339(v: string): string | undefined {
  return v ? new Date(v).toISOString() : undefined;
}

function detail(d: unknown): string {
  if (d === null || d === undefined) return '';
  if (typeof d === 'object' && !Object.keys(d as object).length) return '';
  return JSON.stringify(d);
}

export async function auditSection(el: HTMLElement, _me: Me): Promise<void> {
  render(el, heading('Audit log', 'Who did what, newest first: sign-ins, tokens, sessions, visibility changes, agent runs and admin actions.'));
  let users: User[] = [];
  try {
    users = await api.users();
  } catch (e) {
    console.warn('users', e);
  }
  const byId = new Map(users.map((u) => [u.id, u]));
  const user = h('select', { class: 'input', id: 'audit-user' }, h('option', { value: '' }, 'Everyone'), users.map((u) => h('option', { value: u.id }, u.email)));
  const action = h('select', { class: 'input', id: 'audit-action' }, h('option', { value: '' }, 'Any action'), ACTIONS.map((a) => h('option', { value: a }, a)));
  const since = input('audit-since', { type: 'datetime-local' });
  const until = input('audit-until', { type: 'datetime-local' });
  const body = h('tbody');
  const status = h('div', { class: 'acct-hint', id: 'audit-status' });
  const older = h('button', { class: 'btn secondary', id: 'audit-older', hidden: true }, 'Older');
  let query: AuditQuery = {};
  let before: number | undefined;
  /** Bumped by every fresh query: an answer to an older one is dropped. */
  let generation = 0;

  const row = (e: AuditEntry) =>
    h(
      'tr',
      { dataset: { seq: String(e.seq), action: e.action } },
      h('td', { title: e.at }, new Date(e.at).toLocaleString()),
      h('td', { class: 'audit-actor' }, e.user && byId.get(e.user) ? byId.get(e.user)!.email : e.actor),
      h('td', null, h('span', { class: 'audit-action' }, e.action)),
      h('td', { class: 'mono' }, e.session ?? ''),
      h('td', { class: 'mono audit-detail' }, detail(e.detail)),
      h('td', { class: 'mono muted' }, e.ip ?? ''),
    );
  const fetchPage = async (fresh: boolean) => {
    if (fresh) {
      before = undefined;
      generation++;
      render(body);
    }
    const mine = generation;
    older.disabled = true;
    status.textContent = 'Loading…';
    try {
      const page = await api.audit({ ...query, before, limit: PAGE });
      if (mine !== generation) return;
      body.append(...page.entries.map(row));
      before = page.next_before;
      older.hidden = before === undefined;
      status.textContent = body.children.length ? `${body.children.length} entries shown` : 'No entries match.';
    } catch (e) {
      status.textContent = `Cannot read the audit log: ${(e as Error).message}`;
    } finally {
      older.disabled = false;
    }
  };
  older.addEventListener('click', () => void fetchPage(false));
  const form = h(
    'form',
    {
      class: 'acct-form',
      id: 'audit-filters',
      on: {
        submit: (e: Event) => {
          e.preventDefault();
          query = { user: user.value || undefined, action: action.value || undefined, since: rfc3339(since.value), until: rfc3339(until.value) };
          void fetchPage(true);
        },
      },
    },
    field('User', user),
    field('Action', action),
    field('From', since),
    field('To', until),
    h('button', { class: 'btn', type: 'submit', id: 'audit-apply' }, icon('filter'), 'Apply'),
  );
  el.append(
    form,
    h(
      'table',
      { class: 'acct-table audit', id: 'audit' },
      h('thead', null, h('tr', null, ['Time', 'Who', 'Action', 'Session', 'Detail', 'Address'].map((t) => h('th', null, t)))),
      body,
    ),
    h('div', { class: 'acct-more' }, status, older),
  );
  await fetchPage(true);
}
