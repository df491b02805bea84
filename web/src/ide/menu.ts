// A context menu at the pointer (or under an element), closed by Escape, a click elsewhere or
// a choice; arrow keys move between items.

import { h, icon } from '../lib/dom';

export interface MenuItem {
  label: string;
  icon?: string;
  keys?: string;
  run: () => void;
  danger?: boolean;
}

let open: HTMLElement | undefined;

export function closeMenu(): void {
  open?.remove();
  open = undefined;
}

export function showMenu(x: number, y: number, items: (MenuItem | '-')[]): void {
  closeMenu();
  const buttons: HTMLButtonElement[] = [];
  const menu = h(
    'div',
    { class: 'context-menu', role: 'menu' },
    items.map((it) => {
      if (it === '-') return h('div', { class: 'separator' });
      const b = h(
        'button',
        {
          class: `menu-item${it.danger ? ' danger' : ''}`,
          role: 'menuitem',
          on: { click: () => (closeMenu(), it.run()) },
        },
        icon(it.icon ?? 'blank'),
        h('span', { class: 'label' }, it.label),
        h('span', { class: 'keys' }, it.keys ?? ''),
      );
      buttons.push(b);
      return b;
    }),
  );
  menu.addEventListener('keydown', (e) => {
    const i = buttons.indexOf(document.activeElement as HTMLButtonElement);
    if (e.key === 'Escape') closeMenu();
    else if (e.key === 'ArrowDown') buttons[(i + 1) % buttons.length].focus();
    else if (e.key === 'ArrowUp') buttons[(i - 1 + buttons.length) % buttons.length].focus();
    else return;
    e.preventDefault();
    e.stopPropagation();
  });
  document.body.append(menu);
  const r = menu.getBoundingClientRect();
  menu.style.left = `${Math.min(x, window.innerWidth - r.width - 4)}px`;
  menu.style.top = `${Math.min(y, window.innerHeight - r.height - 4)}px`;
  open = menu;
  buttons[0]?.focus();
}

document.addEventListener('mousedown', (e) => {
  if (open && !open.contains(e.target as Node)) closeMenu();
});
window.addEventListener('blur', closeMenu);
