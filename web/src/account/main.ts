// The account page (`/account`): a section per hash — `#tokens`, `#ssh`, `#git`, `#quotas`, and for
// admins `#users` and `#audit` — with the quotas block and the user menu always in view.

import '../lib/theme.css';
import '../index/home.css';
import './account.css';
import { api, Me } from '../lib/api';
import { h, icon, logo, render } from '../lib/dom';
import { loadMe, userMenu } from '../lib/usermenu';
import { auditSection } from './audit';
import { gitSection } from './git';
import { quotasBlock } from './quotas';
import { sshSection } from './ssh';
import { tokensSection } from './tokens';
import { usersSection } from './users';

type Section = { id: string; title: string; icon: string; admin?: boolean; user?: boolean; draw(el: HTMLElement, me: Me): Promise<void> };

const SECTIONS: Section[] = [
  { id: 'tokens', title: 'API tokens', icon: 'key', user: true, draw: tokensSection },
  { id: 'ssh', title: 'SSH keys', icon: 'terminal', user: true, draw: sshSection },
  { id: 'git', title: 'Git tokens', icon: 'source-control', user: true, draw: gitSection },
  { id: 'quotas', title: 'Quotas and usage', icon: 'dashboard', draw: async (el) => render(el, quotasBlock(await api.me())) },
  { id: 'users', title: 'Users', icon: 'organization', admin: true, draw: usersSection },
  { id: 'audit', title: 'Audit log', icon: 'history', admin: true, draw: auditSection },
];

const nav = h('nav', { class: 'acct-nav', 'aria-label': 'Account sections' });
const content = h('section', { class: 'acct-content', id: 'account-section' });
const side = h('div', { class: 'acct-side' }, nav);

render(
  document.getElementById('app')!,
  h(
    'header',
    { class: 'topbar' },
    h('a', { class: 'brand', href: '/' }, logo(22), h('span', null, 'Mayfly')),
    h('nav', null, h('a', { href: '/' }, 'Sessions'), h('a', { class: 'active', href: '/account' }, 'Account'), h('a', { href: '/api/v1/openapi.json', target: '_blank' }, 'API')),
    h('div', { class: 'topbar-spacer' }),
    userMenu(),
  ),
  h('main', { class: 'acct' }, side, content),
);

function visible(me: Me): Section[] {
  return SECTIONS.filter((s) => (!s.admin || me.role === 'admin') && (!s.user || me.user));
}

async function show(me: Me) {
  const sections = visible(me);
  const id = location.hash.slice(1);
  const current = sections.find((s) => s.id === id) ?? sections[0];
  render(
    nav,
    sections.map((s) => h('a', { href: `#${s.id}`, class: s === current ? 'active' : '', dataset: { section: s.id } }, icon(s.icon), s.title)),
  );
  document.title = `${current.title} · Mayfly`;
  content.dataset.section = current.id;
  render(content, h('div', { class: 'spinner' }));
  try {
    await current.draw(content, me);
  } catch (e) {
    render(content, h('div', { class: 'acct-error' }, (e as Error).message));
  }
}

loadMe().then(
  (me) => {
    if (me.user || me.bootstrap) side.append(quotasBlock(me, 'quotas'));
    window.addEventListener('hashchange', () => void show(me));
    void show(me);
  },
  (e) => render(content, h('div', { class: 'acct-error' }, `Cannot tell who is signed in: ${(e as Error).message}`)),
);
