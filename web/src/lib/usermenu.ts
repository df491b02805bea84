// The user menu (sessions page top bar, IDE activity bar, account pages): who is signed in and
// with which role, links to the account pages, and Sign out.

import './usermenu.css';
import { api, Me } from './api';
import { notify } from './dialogs';
import { append, h, icon } from './dom';

let mePromise: Promise<Me> | undefined;

/** `GET /api/v1/me`, asked once per page. */
export function loadMe(): Promise<Me> {
  mePromise ??= api.me();
  return mePromise;
}

/** "ada@example.com", or "server token" for the bootstrap credential. */
export function whoLabel(me: Me): string {
  return me.user ? me.user.email : 'server token';
}

/** Ends the sign-in, then goes to the sign-in page (even when the server already forgot it). */
export async function signOut(): Promise<void> {
  try {
    await api.logout();
  } catch (e) {
    console.warn('sign out', e);
  }
  location.assign('/login');
}

function links(me: Me): [string, string, string][] {
  const out: [string, string, string][] = [];
  if (me.user) out.push(['key', 'API tokens', '/account#tokens'], ['terminal', 'SSH keys', '/account#ssh'], ['source-control', 'Git tokens', '/account#git']);
  else out.push(['dashboard', 'Quotas and usage', '/account#quotas']);
  if (me.role === 'admin') out.push(['organization', 'Users', '/account#users'], ['history', 'Audit log', '/account#audit']);
  return out;
}

/**
 * The menu's button; `side` opens it to the right (the IDE's activity bar), else below.
 * Clicking the button toggles the menu; Escape or a click elsewhere closes it.
 */
export function userMenu(placement: 'below' | 'side' = 'below', buttonClass = 'user-btn'): HTMLElement {
  const label = h('span', { class: 'user-label' });
  const btn = h('button', { class: buttonClass, id: 'user-menu', title: 'Account', 'aria-label': 'Account', 'aria-haspopup': 'menu', 'aria-expanded': 'false' }, icon('account'), label);
  const pop = h('div', { class: `user-pop ${placement}`, role: 'menu', hidden: true });
  const wrap = h('div', { class: `user-menu ${placement}` }, btn, pop);
  const close = () => {
    pop.hidden = true;
    btn.setAttribute('aria-expanded', 'false');
  };
  btn.addEventListener('click', () => {
    pop.hidden = !pop.hidden;
    btn.setAttribute('aria-expanded', String(!pop.hidden));
    if (!pop.hidden) pop.querySelector<HTMLElement>('a, button')?.focus();
  });
  document.addEventListener('mousedown', (e) => !wrap.contains(e.target as Node) && close());
  wrap.addEventListener('keydown', (e) => e.key === 'Escape' && (close(), btn.focus()));
  loadMe().then(
    (me) => {
      const who = whoLabel(me);
      if (placement === 'below') label.textContent = me.user?.name || who;
      btn.title = `${who} (${me.role})`;
      append(pop, [
        h(
          'div',
          { class: 'user-who' },
          h('div', { class: 'user-name' }, me.user ? me.user.name || me.user.email : 'Server token'),
          me.user?.name ? h('div', { class: 'user-email' }, me.user.email) : null,
          h('span', { class: `role-chip ${me.role}` }, me.bootstrap ? 'server token (admin)' : me.role),
        ),
        h('div', { class: 'separator' }),
        links(me).map(([ic, text, href]) => h('a', { class: 'menu-link', role: 'menuitem', href }, icon(ic), text)),
        h('div', { class: 'separator' }),
        h('button', { class: 'menu-link', id: 'sign-out', role: 'menuitem', on: { click: () => void signOut() } }, icon('sign-out'), 'Sign out'),
      ]);
    },
    (e) => notify('error', `Cannot tell who is signed in: ${(e as Error).message}`),
  );
  return wrap;
}
