// The status bar (session, state, connection, ports, time left, cursor) and the banner shown
// when the session ends or fails.

import { Session } from '../lib/api';
import { LinkStatus } from '../lib/events';
import { h, icon, render } from '../lib/dom';
import { clock } from '../lib/time';
import { languageName } from './monaco';

export interface StatusModel {
  session: Session;
  link: LinkStatus;
  terminals: string[];
  ports: number;
  cursor: { line: number; column: number; language: string; readOnly: boolean } | null;
  dirty: number;
  ended?: string;
}

const item = (cls: string, title: string, ...children: (Node | string | null)[]) => h('div', { class: `sb-item ${cls}`, title }, ...children);

function connection(m: StatusModel): HTMLElement {
  if (m.ended) return item('conn ended', 'The session has ended', icon('debug-disconnect'), 'Disconnected');
  const retrying = m.link.kind === 'retrying' || m.terminals.includes('retrying');
  if (retrying) {
    const secs = m.link.kind === 'retrying' ? Math.max(0, Math.ceil((m.link.at - Date.now()) / 1000)) : 0;
    return item('conn retrying', 'The connection to the server dropped; reconnecting', icon('sync', 'codicon-modifier-spin'), `Reconnecting${secs ? ` in ${secs} s` : '…'}`);
  }
  if (m.link.kind === 'connecting' || m.terminals.includes('connecting')) return item('conn', 'Connecting', icon('sync', 'codicon-modifier-spin'), 'Connecting…');
  return item('conn live', 'Connected to the VM', icon('pass-filled'), 'Connected');
}

export function drawStatus(el: HTMLElement, m: StatusModel): void {
  const s = m.session;
  const left = Date.parse(s.expires_at) - Date.now();
  el.className = `statusbar${m.ended ? ' ended' : ''}${!m.ended && m.link.kind === 'retrying' ? ' offline' : ''}`;
  render(
    el,
    h('a', { class: 'sb-item remote', href: '/', title: 'All sessions' }, icon('remote'), `Mayfly: ${s.id}`),
    item(`state state-${m.ended && s.state !== 'failed' ? 'destroyed' : s.state}`, s.failure ?? `Session ${s.state}`, h('span', { class: 'dot' }), m.ended && s.state !== 'failed' ? 'ended' : s.state),
    item('image', 'Image', icon('vm'), s.image),
    connection(m),
    m.dirty ? item('dirty', 'Unsaved files', icon('circle-filled'), `${m.dirty} unsaved`) : null,
    h('div', { class: 'sb-spacer' }),
    m.cursor ? item('cursor', 'Cursor position', `Ln ${m.cursor.line}, Col ${m.cursor.column}`) : null,
    m.cursor?.readOnly ? item('ro', 'Read-only', icon('lock'), 'Read-only') : null,
    m.cursor ? item('lang', 'Language mode', languageName(m.cursor.language)) : null,
    item('ports', 'Forwarded ports', icon('radio-tower'), String(m.ports)),
    s.state === 'ready' && !m.ended
      ? item(`time${left < 5 * 60_000 ? ' low' : ''}`, `Ends at ${new Date(s.expires_at).toLocaleTimeString()} (idle timeout ${Math.round(s.idle_timeout_seconds / 60)} min)`, icon('watch'), `${clock(left)} left`)
      : null,
  );
}

/** A banner across the workbench: the session is gone or failed. */
export function endedBanner(title: string, detail: string): HTMLElement {
  return h(
    'div',
    { class: 'session-banner', role: 'alert' },
    icon('error'),
    h('div', { class: 'text' }, h('strong', null, title), h('span', null, detail)),
    h('a', { class: 'btn secondary', href: '/' }, 'All sessions'),
  );
}

export function bootOverlay(s: Session): HTMLElement {
  const started = Date.parse(s.created_at);
  const elapsed = h('span', { class: 'elapsed' });
  const tick = () => {
    if (!elapsed.isConnected && Date.now() - started > 2000) return;
    elapsed.textContent = `${Math.max(0, Math.round((Date.now() - started) / 1000))} s`;
    setTimeout(tick, 500);
  };
  tick();
  return h(
    'div',
    { class: 'boot-overlay' },
    h('div', { class: 'boot-card' }, h('div', { class: 'spinner large' }), h('h2', null, 'Starting your VM…'), h('p', null, `Image ${s.image} · `, elapsed)),
  );
}

export function fullPage(iconName: string, title: string, detail: string, actions: HTMLElement[] = []): HTMLElement {
  return h(
    'div',
    { class: 'full-page' },
    h('div', { class: 'full-card' }, icon(iconName, 'big'), h('h2', null, title), h('p', null, detail), h('div', { class: 'actions' }, ...actions)),
  );
}
