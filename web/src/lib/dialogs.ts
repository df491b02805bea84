// Modal confirmations and corner notifications, styled like the rest (never window.confirm).

import { h, icon } from './dom';

export interface ConfirmOptions {
  title: string;
  message: string;
  confirm: string;
  danger?: boolean;
  /** A list under the message (what would be lost). */
  details?: string[];
}

/** Resolves true when confirmed (Enter or the button), false on Escape, Cancel or a click outside. */
export function confirmDialog(o: ConfirmOptions): Promise<boolean> {
  return new Promise((resolve) => {
    const prev = document.activeElement as HTMLElement | null;
    const done = (v: boolean) => {
      backdrop.remove();
      prev?.focus();
      resolve(v);
    };
    const ok = h('button', { class: `btn${o.danger ? ' danger' : ''}`, on: { click: () => done(true) } }, o.confirm);
    const backdrop = h(
      'div',
      { class: 'modal-backdrop', on: { mousedown: (e: MouseEvent) => e.target === backdrop && done(false) } },
      h(
        'div',
        { class: 'modal', role: 'dialog', 'aria-modal': 'true' },
        h('h2', null, icon(o.danger ? 'warning' : 'question'), o.title),
        h('p', null, o.message),
        o.details?.length ? h('ul', { class: 'details' }, o.details.map((d) => h('li', null, d))) : null,
        h('div', { class: 'actions' }, h('button', { class: 'btn secondary', on: { click: () => done(false) } }, 'Cancel'), ok),
      ),
    );
    backdrop.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') done(false);
      e.stopPropagation();
    });
    document.body.append(backdrop);
    ok.focus();
  });
}

let toasts: HTMLElement | undefined;

/** A notification in the bottom-right corner; errors stay until closed, others fade. */
export function notify(kind: 'error' | 'warning' | 'info', message: string, timeoutMs = kind === 'error' ? 0 : 5000): { close(): void } {
  if (!toasts) {
    toasts = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite' });
    document.body.append(toasts);
  }
  const names = { error: 'error', warning: 'warning', info: 'info' };
  const t = h(
    'div',
    { class: `toast ${kind}` },
    icon(names[kind]),
    h('div', { class: 'msg' }, message),
    h('button', { class: 'icon-btn', title: 'Close', on: { click: () => t.remove() } }, icon('close')),
  );
  toasts.append(t);
  if (timeoutMs) setTimeout(() => t.remove(), timeoutMs);
  return { close: () => t.remove() };
}
