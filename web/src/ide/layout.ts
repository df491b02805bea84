// The workbench skeleton (activity bar, side bar, editor area, panel, status bar) and the
// sashes that resize the side bar and the panel. Sizes are kept in localStorage.

import { h, icon, logo } from '../lib/dom';
import { userMenu } from '../lib/usermenu';

export type View = 'explorer' | 'scm' | 'agent';

export interface Workbench {
  root: HTMLElement;
  activity: { explorer: HTMLButtonElement; ports: HTMLButtonElement; portsBadge: HTMLElement; scm: HTMLButtonElement; scmBadge: HTMLElement; agent: HTMLButtonElement; end: HTMLButtonElement };
  sidebar: HTMLElement;
  explorer: HTMLElement;
  portsSection: HTMLElement;
  /** The Source Control view (shown instead of the explorer and ports). */
  scmSection: HTMLElement;
  /** The coding agent's chat. */
  agentSection: HTMLElement;
  /** Called when the side bar's view changes or it is shown or hidden. */
  onView?: (view: View, visible: boolean) => void;
  showView(view: View): void;
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
  const scmBadge = h('span', { class: 'activity-badge', hidden: true });
  const scmBtn = h('button', { class: 'activity-item', id: 'activity-scm', title: 'Source Control (Ctrl+Shift+G)', 'aria-label': 'Source Control' }, icon('source-control'), scmBadge);
  const agentBtn = h('button', { class: 'activity-item', id: 'activity-agent', title: 'Agent (Ctrl+Shift+A)', 'aria-label': 'Agent' }, icon('hubot'));
  const endBtn = h('button', { class: 'activity-item', id: 'end-session', title: 'End Session…', 'aria-label': 'End Session' }, icon('debug-stop'));
  const explorer = h('section', { class: 'view explorer' });
  const portsSection = h('section', { class: 'view ports-view' });
  const scmSection = h('section', { class: 'view scm-view', hidden: true });
  const agentSection = h('section', { class: 'view agent-section', hidden: true });
  const sidebar = h('aside', { class: 'sidebar' }, explorer, portsSection, scmSection, agentSection);
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
        scmBtn,
        portsBtn,
        agentBtn,
        h('div', { class: 'spacer' }),
        userMenu('side', 'activity-item'),
        endBtn,
        h('a', { class: 'activity-item', href: '/', title: 'All sessions', 'aria-label': 'All sessions' }, logo(24)),
      ),
      sidebar,
      sideSash,
      main,
    ),
    statusbar,
  );
  let view: View = 'explorer';
  const mark = () => {
    const hidden = sidebar.classList.contains('hidden');
    explorerBtn.classList.toggle('active', !hidden && view === 'explorer');
    scmBtn.classList.toggle('active', !hidden && view === 'scm');
    agentBtn.classList.toggle('active', !hidden && view === 'agent');
    wb.onView?.(view, !hidden);
  };
  const toggleSidebar = () => {
    const hidden = sidebar.classList.toggle('hidden');
    sideSash.classList.toggle('hidden', hidden);
    mark();
  };
  const showView = (v: View) => {
    view = v;
    explorer.hidden = portsSection.hidden = v !== 'explorer';
    scmSection.hidden = v !== 'scm';
    agentSection.hidden = v !== 'agent';
    if (sidebar.classList.contains('hidden')) toggleSidebar();
    else mark();
  };
  /** An activity button shows its view, or hides the side bar when its view is already shown. */
  const activity = (v: View) => () => (view === v && !sidebar.classList.contains('hidden') ? toggleSidebar() : showView(v));
  const togglePanel = (show?: boolean) => {
    const hide = show === undefined ? !panel.classList.contains('hidden') : !show;
    panel.classList.toggle('hidden', hide);
    panelSash.classList.toggle('hidden', hide);
  };
  explorerBtn.addEventListener('click', activity('explorer'));
  scmBtn.addEventListener('click', activity('scm'));
  agentBtn.addEventListener('click', activity('agent'));
  portsBtn.addEventListener('click', () => {
    showView('explorer');
    portsSection.classList.remove('collapsed');
    portsSection.querySelector<HTMLElement>('[tabindex]')?.focus();
  });
  const wb: Workbench = {
    root,
    activity: { explorer: explorerBtn, ports: portsBtn, portsBadge, scm: scmBtn, scmBadge, agent: agentBtn, end: endBtn },
    sidebar,
    explorer,
    portsSection,
    scmSection,
    agentSection,
    showView,
    editorArea,
    panel,
    statusbar,
    toggleSidebar,
    togglePanel,
  };
  return wb;
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
