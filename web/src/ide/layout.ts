// The workbench skeleton (activity bar, side bar, editor area, panel, status bar) and the
// sashes that resize the side bar and the panel. Sizes are kept in localStorage.

import { h, icon, logo } from '../lib/dom';

export interface Workbench {
  root: HTMLElement;
  activity: { explorer: HTMLButtonElement; ports: HTMLButtonElement; portsBadge: HTMLElement };
  sidebar: HTMLElement;
  explorer: HTMLElement;
  portsSection: HTMLElement;
  editorArea: HTMLElement;
  panel: HTMLElement;
  statusbar: HTMLElement;
  toggleSidebar(): void;
  togglePanel(show?: boolean): void;
}

function sash(dir: 'x' | 'y', target: HTMLElement, prop: 'width' | 'height', key: string, min: number, max: () => number, invert = false) {
  const saved = Number(localStorage.getItem(key));
  if (saved) target.style[prop] = `${Math.min(Math.max(saved, min), 2000)}px`;
  const el = h('div', { class: `sash sash-${dir}` });
  el.addEventListener('pointerdown', (e: PointerEvent) => {
    e.preventDefault();
    el.setPointerCapture(e.pointerId);
    el.classList.add('active');
    const start = dir === 'x' ? e.clientX : e.clientY;
    const size = target.getBoundingClientRect()[prop];
    const move = (m: PointerEvent) => {
      const delta = (dir === 'x' ? m.clientX : m.clientY) - start;
      const next = Math.min(Math.max(size + (invert ? -delta : delta), min), max());
      target.style[prop] = `${next}px`;
    };
    const up = () => {
      el.classList.remove('active');
      el.removeEventListener('pointermove', move);
      localStorage.setItem(key, String(target.getBoundingClientRect()[prop]));
    };
    el.addEventListener('pointermove', move);
    el.addEventListener('pointerup', up, { once: true });
  });
  return el;
}

export function workbench(): Workbench {
  const explorerBtn = h('button', { class: 'activity-item active', title: 'Explorer (Ctrl+Shift+E)', 'aria-label': 'Explorer' }, icon('files'));
  const portsBadge = h('span', { class: 'activity-badge', hidden: true });
  const portsBtn = h('button', { class: 'activity-item', title: 'Ports', 'aria-label': 'Ports' }, icon('radio-tower'), portsBadge);
  const explorer = h('section', { class: 'view explorer' });
  const portsSection = h('section', { class: 'view ports-view' });
  const sidebar = h('aside', { class: 'sidebar' }, explorer, portsSection);
  const editorArea = h('div', { class: 'editor-area' });
  const panel = h('section', { class: 'panel' });
  const main = h('div', { class: 'main' });
  const statusbar = h('footer', { class: 'statusbar', role: 'status' });
  const sideSash = sash('x', sidebar, 'width', 'mayfly.sidebar', 170, () => window.innerWidth * 0.6);
  const panelSash = sash('y', panel, 'height', 'mayfly.panel', 90, () => main.getBoundingClientRect().height - 80, true);
  main.append(editorArea, panelSash, panel);
  const root = h(
    'div',
    { class: 'workbench' },
    h(
      'div',
      { class: 'body' },
      h(
        'nav',
        { class: 'activitybar' },
        explorerBtn,
        portsBtn,
        h('div', { class: 'spacer' }),
        h('a', { class: 'activity-item', href: '/', title: 'All sessions', 'aria-label': 'All sessions' }, logo(24)),
      ),
      sidebar,
      sideSash,
      main,
    ),
    statusbar,
  );
  const toggleSidebar = () => {
    const hidden = sidebar.classList.toggle('hidden');
    sideSash.classList.toggle('hidden', hidden);
    explorerBtn.classList.toggle('active', !hidden);
  };
  const togglePanel = (show?: boolean) => {
    const hide = show === undefined ? !panel.classList.contains('hidden') : !show;
    panel.classList.toggle('hidden', hide);
    panelSash.classList.toggle('hidden', hide);
  };
  explorerBtn.addEventListener('click', toggleSidebar);
  portsBtn.addEventListener('click', () => {
    if (sidebar.classList.contains('hidden')) toggleSidebar();
    portsSection.classList.remove('collapsed');
    portsSection.querySelector<HTMLElement>('[tabindex]')?.focus();
  });
  return {
    root,
    activity: { explorer: explorerBtn, ports: portsBtn, portsBadge },
    sidebar,
    explorer,
    portsSection,
    editorArea,
    panel,
    statusbar,
    toggleSidebar,
    togglePanel,
  };
}

/** A side-bar section header (`EXPLORER`, `PORTS`) with its action buttons. */
export function sectionHeader(title: string, actions: HTMLElement[], onToggle?: () => void, extra?: HTMLElement) {
  return h(
    'div',
    { class: 'section-header', on: onToggle ? { click: (e: MouseEvent) => !(e.target as Element).closest('.icon-btn') && onToggle() } : {} },
    onToggle ? icon('chevron-down', 'twisty') : null,
    h('span', { class: 'title' }, title),
    extra ?? null,
    h('div', { class: 'actions' }, actions),
  );
}

export function action(name: string, title: string, run: () => void, id?: string): HTMLButtonElement {
  return h(
    'button',
    { class: 'icon-btn', title, 'aria-label': title, id, on: { click: (e: MouseEvent) => (e.stopPropagation(), run()) } },
    icon(name),
  );
}
