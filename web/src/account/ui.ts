// Small building blocks of the account pages: tables, labelled fields, inline errors, a form
// in a modal, times, and copying to the clipboard.

import { h, icon, render, Child } from '../lib/dom';
import { ago, until } from '../lib/time';

/** A table with a header row; `rows` are arrays of cells. */
export function table(id: string, head: string[], rows: Child[][], empty: string): HTMLElement {
  if (!rows.length) return h('div', { class: 'acct-empty', id }, empty);
  return h(
    'table',
    { class: 'acct-table', id },
    h('thead', null, h('tr', null, head.map((t) => h('th', null, t)))),
    h('tbody', null, rows.map((cells) => h('tr', null, cells.map((c) => h('td', null, c))))),
  );
}

/** A label above its input. */
export function field(label: string, input: HTMLElement, hint?: string): HTMLElement {
  return h('label', { class: 'acct-field' }, h('span', { class: 'acct-label' }, label), input, hint ? h('span', { class: 'acct-hint' }, hint) : null);
}

export function input(id: string, props: Record<string, unknown> = {}): HTMLInputElement {
  return h('input', { class: 'input', id, name: id, spellcheck: false, ...props });
}

/** An inline error line (empty: hidden). */
export type ErrorLine = HTMLElement & { show(msg: string): void; clear(): void };
export function errorLine(id: string): ErrorLine {
  const div = h('div', { class: 'acct-error', id, role: 'alert' });
  return Object.assign(div, {
    show: (msg: string) => render(div, icon('error'), h('span', null, msg)),
    clear: () => render(div),
  });
}

/** A form whose submit runs `action` with `button` disabled and errors shown in `err`. */
export function actionForm(id: string, button: HTMLButtonElement, err: ErrorLine, action: () => Promise<void>, ...fields: Child[]): HTMLElement {
  const submit = async (e: Event) => {
    e.preventDefault();
    err.clear();
    button.disabled = true;
    try {
      await action();
    } catch (x) {
      err.show((x as Error).message);
    } finally {
      button.disabled = false;
    }
  };
  return h('form', { class: 'acct-form', id, on: { submit } }, ...fields, button);
}

/** A time as "3 min ago", with the full date as its tooltip; `-` when absent. */
export function when(iso: string | undefined, future = false): Child {
  if (!iso) return h('span', { class: 'muted' }, future ? 'never' : '—');
  return h('span', { title: new Date(iso).toLocaleString() }, future ? until(iso) : ago(iso));
}

/** Copies `text`; true when it worked. */
export async function copy(text: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * A form in a modal: `run` saves it; its error shows in the modal, which stays open. Resolves
 * true once saved, false when cancelled.
 */
export function formModal(title: string, body: Child[], submit: string, run: () => Promise<void>): Promise<boolean> {
  return new Promise((resolve) => {
    const err = errorLine('modal-error');
    const ok = h('button', { class: 'btn', type: 'submit', id: 'modal-save' }, submit);
    const done = (v: boolean) => {
      backdrop.remove();
      resolve(v);
    };
    const form = h(
      'form',
      {
        class: 'modal acct-modal',
        role: 'dialog',
        'aria-modal': 'true',
        on: {
          submit: async (e: Event) => {
            e.preventDefault();
            ok.disabled = true;
            err.clear();
            try {
              await run();
              done(true);
            } catch (x) {
              err.show((x as Error).message);
              ok.disabled = false;
            }
          },
        },
      },
      h('h2', null, title),
      h('div', { class: 'acct-modal-body' }, body),
      err,
      h('div', { class: 'actions' }, h('button', { class: 'btn secondary', type: 'button', on: { click: () => done(false) } }, 'Cancel'), ok),
    );
    const backdrop = h('div', { class: 'modal-backdrop' }, form);
    backdrop.addEventListener('keydown', (e) => e.key === 'Escape' && done(false));
    document.body.append(backdrop);
    form.querySelector<HTMLElement>('input, select')?.focus();
  });
}

/** A section's title and one line about it. */
export function heading(title: string, about: string): HTMLElement {
  return h('div', { class: 'acct-heading' }, h('h1', null, title), h('p', null, about));
}
