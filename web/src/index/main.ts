// The sessions page: every live session with its state and age; create one (then go to its
// IDE, which shows the boot), open one, delete one. The list refreshes every few seconds.

import '../lib/theme.css';
import './home.css';
import { api, ImageInfo, Session } from '../lib/api';
import { notify } from '../lib/dialogs';
import { confirmEnd } from '../lib/endsession';
import { h, icon, logo, render } from '../lib/dom';
import { ago, bytes, until } from '../lib/time';

const REFRESH_MS = 3000;
const ideUrl = (id: string) => `/s/${encodeURIComponent(id)}`;

const imageSelect = h('select', { class: 'input', id: 'image', 'aria-label': 'Image' });
const createBtn = h('button', { class: 'btn', id: 'new-session', on: { click: create } }, icon('add'), 'New session');
const list = h('div', { class: 'sessions', id: 'sessions' });
const count = h('span', { class: 'count' });
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
    h('div', { class: 'cell' }, s.image),
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
      ...['Session', 'Image', 'State', 'Created', 'Ends', ''].map((t) => h('div', { class: 'cell' }, t)),
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

async function create() {
  createBtn.disabled = true;
  render(createBtn, h('span', { class: 'spinner' }), 'Creating…');
  try {
    const s = await api.create(imageSelect.value);
    location.assign(ideUrl(s.id));
  } catch (e) {
    notify('error', `Cannot create a session: ${(e as Error).message}`);
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
    h('nav', null, h('a', { class: 'active', href: '/' }, 'Sessions'), h('a', { href: '/api/v1/openapi.json', target: '_blank' }, 'API')),
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
    list,
  ),
);
draw();
void loadImages();
void refresh();
setInterval(() => document.visibilityState === 'visible' && void refresh(), REFRESH_MS);
