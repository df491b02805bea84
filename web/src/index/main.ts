// The sessions page: every live session with its state and age; create one (then go to its
// IDE, which shows the boot), open one, delete one. The list refreshes every few seconds.

import '../lib/theme.css';
import './home.css';
import { api, ApiError, ImageInfo, Session } from '../lib/api';
import { notify } from '../lib/dialogs';
import { confirmEnd } from '../lib/endsession';
import { h, icon, logo, render } from '../lib/dom';
import { ago, bytes, until } from '../lib/time';
import { loadMe, userMenu } from '../lib/usermenu';

const REFRESH_MS = 3000;
const ideUrl = (id: string) => `/s/${encodeURIComponent(id)}`;

const imageSelect = h('select', { class: 'input', id: 'image', 'aria-label': 'Image' });
const createBtn = h('button', { class: 'btn', id: 'new-session', on: { click: create } }, icon('add'), 'New session');
const list = h('div', { class: 'sessions', id: 'sessions' });
const count = h('span', { class: 'count' });
const createError = h('div', { class: 'create-error', id: 'create-error', role: 'alert', hidden: true });
/** Admins see every session and who owns it. */
let admin = false;
const deleting = new Set<string>();
let sessions: Session[] = [];
let loaded = false;

function stateBadge(s: Session) {
  const label = deleting.has(s.id) ? 'stopping' : s.paused ? 'paused' : s.state;
  return h('span', { class: `badge state-${label}`, title: s.failure ?? '' }, h('span', { class: 'dot' }), label);
}

function row(s: Session) {
  const open = () => location.assign(ideUrl(s.id));
  const live = s.state === 'ready' || s.state === 'creating';
  return h(
    'div',
    {
      class: 'row',
      tabindex: 0,
      role: 'row',
      dataset: { id: s.id },
      on: {
        keydown: (e: KeyboardEvent) => {
          if (e.key === 'Enter' && live) open();
          if (e.key === 'Delete') remove(s);
        },
        dblclick: () => live && open(),
      },
    },
    h('div', { class: 'cell id' }, icon('vm'), h('span', { class: 'mono' }, s.id)),
    admin ? h('div', { class: 'cell owner', title: s.owner ?? 'server token' }, s.owner_email ?? (s.owner ? s.owner : 'server token')) : null,
    h('div', { class: 'cell', title: s.node ? `on node ${s.node}` : '' }, s.image),
    h('div', { class: 'cell' }, stateBadge(s)),
    h('div', { class: 'cell muted', title: new Date(s.created_at).toLocaleString() }, ago(s.created_at)),
    h(
      'div',
      { class: 'cell muted', title: new Date(s.expires_at).toLocaleString() },
      s.state === 'failed' ? h('span', { class: 'failure' }, s.failure ?? 'failed') : until(s.expires_at),
    ),
    h(
      'div',
      { class: 'cell actions' },
      h('a', { class: `btn ${live ? '' : 'secondary'}`, href: ideUrl(s.id), 'aria-disabled': String(!live) }, 'Open', icon('arrow-right')),
      h(
        'button',
        { class: 'icon-btn', title: 'Delete session', 'aria-label': `Delete ${s.id}`, disabled: deleting.has(s.id), on: { click: () => remove(s) } },
        icon('trash'),
      ),
    ),
  );
}

function draw() {
  count.textContent = loaded ? `${sessions.length} live` : '';
  if (!loaded) return render(list, h('div', { class: 'empty' }, h('div', { class: 'spinner' })));
  if (!sessions.length) {
    return render(
      list,
      h(
        'div',
        { class: 'empty' },
        icon('vm', 'big'),
        h('h3', null, 'No sessions yet'),
        h('p', null, 'A session is a fresh VM with an editor, terminals and preview URLs. It is destroyed when it ends.'),
      ),
    );
  }
  render(
    list,
    h(
      'div',
      { class: 'row head', role: 'row' },
      ...['Session', admin ? 'Owner' : null, 'Image', 'State', 'Created', 'Ends', ''].map((t) => t !== null && h('div', { class: 'cell' }, t)),
    ),
    sessions.map(row),
  );
}

async function refresh() {
  try {
    sessions = (await api.sessions()).sort((a, b) => b.created_at.localeCompare(a.created_at));
    loaded = true;
    draw();
  } catch (e) {
    if (loaded) console.warn(e);
    else notify('error', `Cannot list sessions: ${(e as Error).message}`);
  }
}

async function loadImages() {
  let images: ImageInfo[] = [];
  try {
    images = await api.images();
  } catch (e) {
    notify('error', `Cannot list images: ${(e as Error).message}`);
  }
  render(
    imageSelect,
    images.map((i) =>
      h('option', { value: i.name, title: i.description }, `${i.name} · ${bytes(i.size_bytes)}`),
    ),
  );
  const preferred = images.find((i) => i.name === 'dev') ?? images[0];
  if (preferred) imageSelect.value = preferred.name;
  imageSelect.disabled = createBtn.disabled = !images.length;
  if (!images.length) createBtn.title = 'No image is built: run `mayfly image build minimal`';
}

function showCreateError(e: unknown) {
  const quota = e instanceof ApiError && e.code === 'quota_exceeded';
  const msg = (e as Error).message;
  render(
    createError,
    icon(quota ? 'warning' : 'error'),
    h(
      'div',
      null,
      h('strong', null, quota ? 'Quota reached: no new session' : 'Cannot create a session'),
      h('div', { class: 'msg' }, msg),
      quota ? h('div', { class: 'hint' }, 'End one of your sessions, or ask an admin to raise your quota.') : null,
    ),
    h('button', { class: 'icon-btn', title: 'Dismiss', on: { click: () => (createError.hidden = true) } }, icon('close')),
  );
  createError.classList.toggle('quota', quota);
  createError.hidden = false;
}

async function create() {
  createError.hidden = true;
  createBtn.disabled = true;
  render(createBtn, h('span', { class: 'spinner' }), 'Creating…');
  try {
    const s = await api.create(imageSelect.value);
    location.assign(ideUrl(s.id));
  } catch (e) {
    showCreateError(e);
    createBtn.disabled = false;
    render(createBtn, icon('add'), 'New session');
  }
}

async function remove(s: Session) {
  if (!(await confirmEnd(s))) return;
  deleting.add(s.id);
  draw();
  try {
    await api.remove(s.id);
  } catch (e) {
    notify('error', `Cannot delete ${s.id}: ${(e as Error).message}`);
  } finally {
    deleting.delete(s.id);
    await refresh();
  }
}

render(
  document.getElementById('app')!,
  h(
    'header',
    { class: 'topbar' },
    h('a', { class: 'brand', href: '/' }, logo(22), h('span', null, 'Mayfly')),
    h('nav', null, h('a', { class: 'active', href: '/' }, 'Sessions'), h('a', { href: '/account' }, 'Account'), h('a', { href: '/api/v1/openapi.json', target: '_blank' }, 'API')),
    h('div', { class: 'topbar-spacer' }),
    userMenu(),
  ),
  h(
    'main',
    { class: 'home' },
    h(
      'section',
      { class: 'hero' },
      h('div', null, h('h1', null, 'Sessions ', count), h('p', null, 'Every session is its own fresh virtual machine, delivered as an IDE.')),
      h('div', { class: 'create' }, h('label', { for: 'image' }, 'Image'), imageSelect, createBtn),
    ),
    createError,
    list,
  ),
);
draw();
loadMe().then(
  (me) => {
    admin = me.role === 'admin';
    list.classList.toggle('with-owner', admin);
    draw();
  },
  () => undefined,
);
void loadImages();
void refresh();
setInterval(() => document.visibilityState === 'visible' && void refresh(), REFRESH_MS);
