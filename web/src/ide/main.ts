// The IDE page (`/s/{id}`): puts the workbench together and follows the session — its boot,
// its events (state, ports, file changes) and its end — and the keyboard shortcuts.

import '../lib/theme.css';
import './ide.css';
import './scm.css';
import './agent.css';
import { api, ApiError, Session, SessionEvent } from '../lib/api';
import { notify } from '../lib/dialogs';
import { h, icon, render } from '../lib/dom';
import { LinkStatus, SessionEvents } from '../lib/events';
import { Editors } from './editor';
import { action, sectionHeader, workbench } from './layout';
import { TerminalPanel } from './panel';
import { PortsView } from './ports';
import { SourceControl } from './scm';
import { AgentView } from './agent';
import { confirmEnd } from '../lib/endsession';
import { bootOverlay, drawStatus, endedBanner, fullPage, StatusModel } from './status';
import { FileTree } from './tree';
import { RepoBanner } from './repobanner';

const WORKSPACE = '/root';
const POLL_MS = 10_000;
const sid = decodeURIComponent(location.pathname.split('/')[2] ?? '');
const app = document.getElementById('app')!;
document.title = `${sid} · Mayfly`;

async function main() {
  await document.fonts.load("13px 'JetBrains Mono'").catch(() => undefined);
  let session: Session;
  try {
    session = await api.session(sid);
  } catch (e) {
    const gone = e instanceof ApiError && (e.status === 404 || e.status === 400);
    const home = h('a', { class: 'btn', href: '/' }, 'All sessions');
    if (gone) return render(app, fullPage('search-stop', `Session ${sid} does not exist`, 'It may have ended, expired or been deleted. Its VM and files are gone.', [home]));
    const retry = h('button', { class: 'btn secondary', on: { click: () => location.reload() } }, 'Retry');
    return render(app, fullPage('error', 'Cannot reach the Mayfly server', (e as Error).message, [retry, home]));
  }
  if (session.state === 'destroyed') return render(app, fullPage('search-stop', `Session ${sid} has ended`, 'Its VM and files are gone.', [h('a', { class: 'btn', href: '/' }, 'All sessions')]));
  ide(session);
}

function ide(initial: Session) {
  const wb = workbench();
  const model: StatusModel = { session: initial, link: { kind: 'connecting' }, terminals: [], ports: 0, cursor: null, dirty: 0 };
  let wired = false; // components call back while being built
  const status = () => {
    if (!wired) return;
    model.terminals = panel.states();
    model.dirty = editors.dirtyCount();
    drawStatus(wb.statusbar, model);
  };
  const editors = new Editors(sid, {
    cursor: (c) => ((model.cursor = c), status()),
    changed: status,
    activated: (key) => tree.select(key),
  });
  const tree = new FileTree(sid, WORKSPACE, {
    open: (info, focus) => void editors.open(info, focus),
    removed: (p) => editors.removed(p),
    renamed: (a, b) => editors.renamed(a, b),
    error: (m) => notify('error', m),
  });
  const panel = new TerminalPanel(sid, {
    state: status,
    failed: () => void check(),
    hide: () => wb.togglePanel(false),
    maximize: () => wb.panel.classList.toggle('maximized'),
  });
  const ports = new PortsView(wb.portsSection, sid, {
    preview: (p) => editors.openPreview(p.port, p.url),
    count: (n) => {
      model.ports = n;
      wb.activity.portsBadge.textContent = String(n);
      wb.activity.portsBadge.hidden = !n;
      status();
    },
  });
  const scm = new SourceControl(sid, {
    openDiff: (key, name, view, closed) => editors.openPage(key, name, () => view.el, { icon: ['git-compare', '#e2c08d'], dispose: closed }),
    openFile: (path) => void editors.open({ path, name: path.slice(path.lastIndexOf('/') + 1) }),
    count: (n) => {
      wb.activity.scmBadge.textContent = String(n);
      wb.activity.scmBadge.hidden = !n;
    },
    sessionRepo: () => model.session.repo?.path,
  });
  wb.scmSection.append(scm.el);
  const agent = new AgentView(sid, {
    terminal: () => (wb.togglePanel(true), panel.openAgent()),
    wrote: (paths) => paths.forEach((p) => void editors.fileChanged(p, 'modified')),
  });
  wb.agentSection.append(agent.el);
  wb.onView = (view, visible) => scm.shown(view === 'scm' && visible);
  wb.activity.end.addEventListener('click', async () => {
    if (ended || !(await confirmEnd(model.session, 'End'))) return;
    try {
      await api.remove(sid);
    } catch (e) {
      notify('error', `Cannot end the session: ${(e as Error).message}`);
    }
    void check();
  });
  render(
    wb.explorer,
    sectionHeader('Explorer', [
      action('new-file', 'New File…', () => tree.startCreate('file'), 'new-file'),
      action('new-folder', 'New Folder…', () => tree.startCreate('dir'), 'new-folder'),
      action('refresh', 'Refresh Explorer', () => tree.refreshAll()),
      action('collapse-all', 'Collapse Folders', () => tree.collapseAll()),
    ]),
    h('div', { class: 'workspace-name', title: WORKSPACE }, icon('chevron-down'), WORKSPACE.split('/').pop()),
    tree.el,
  );
  wired = true;
  wb.editorArea.append(editors.el);
  wb.panel.append(panel.el);
  const repoBanner = new RepoBanner();
  wb.root.prepend(repoBanner.el);
  render(app, wb.root);

  let started = false;
  let ended = false;
  const start = () => {
    if (started || ended) return;
    started = true;
    wb.root.querySelector('.boot-overlay')?.remove();
    void tree.load().then(() => tree.render());
    panel.restore();
    void editors.restore();
    void ports.load();
    void scm.refresh();
    void agent.load();
  };
  const end = (title: string, detail: string) => {
    if (ended) return;
    ended = true;
    model.ended = title;
    events.stop();
    panel.end(title);
    editors.freeze();
    ports.clear();
    scm.stop();
    agent.end();
    wb.root.querySelector('.boot-overlay')?.remove();
    wb.root.prepend(endedBanner(title, detail));
    status();
  };
  const onState = (s: Session) => {
    model.session = s;
    repoBanner.update(s.repo);
    if (s.state === 'ready') start();
    else if (s.state === 'failed') end('This session failed.', s.failure ?? 'Its VM stopped unexpectedly.');
    else if (s.state === 'stopping' || s.state === 'destroyed') end('This session has ended.', 'Its VM was stopped and its files are gone.');
    // `lost`: its node is unreachable; the status bar says so, and the session comes back
    // (a `ready` event) if the node returns.
    status();
  };
  /** Asks the server whether the session still exists (after a connection could not be made). */
  const check = async () => {
    if (ended) return;
    try {
      onState(await api.session(sid));
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) end('This session has ended.', 'It was deleted or expired; its VM and files are gone.');
    }
  };
  const onEvent = (ev: SessionEvent) => {
    if (ev.type === 'state') {
      onState({ ...model.session, state: ev.to, failure: ev.to === 'failed' ? ev.reason : model.session.failure });
      if (ev.to === 'stopping' && ev.reason) end('This session has ended.', `${ev.reason[0].toUpperCase()}${ev.reason.slice(1)}: its VM was stopped and its files are gone.`);
    } else if (ev.type.startsWith('agent_')) agent.event(ev);
    else if (ev.type === 'repo') {
      model.session = { ...model.session, repo: ev.repo };
      repoBanner.update(ev.repo);
      // The file watcher reported the clone's files as they came; this shows the finished tree
      // (or none: a failed clone removes its folder).
      if (ev.repo.state !== 'cloning') {
        void scm.refresh();
        if (started) tree.refreshAll();
      }
    } else if (ev.type === 'port_opened') ports.opened(ev.port);
    else if (ev.type === 'port_closed') ports.closed(ev.port);
    else if (ev.type === 'file_changed') {
      tree.changed(ev.path, ev.from);
      scm.changed(ev.path);
      if (ev.path === WORKSPACE && ev.kind === 'modified') void editors.recheckAll();
      else void editors.fileChanged(ev.path, ev.kind, ev.from);
    }
  };
  const events = new SessionEvents(sid, {
    event: onEvent,
    status: (s: LinkStatus) => ((model.link = s), status()),
    reconnected: () => {
      tree.refreshAll();
      void editors.recheckAll();
      void ports.load();
      void scm.refresh();
      void agent.resync();
      void check();
    },
    failed: () => void check(),
  });

  if (initial.state === 'creating') wb.root.querySelector('.main')!.append(bootOverlay(initial));
  onState(initial);
  if (!ended) events.start();
  setInterval(() => !ended && void check(), POLL_MS);
  setInterval(status, 1000);
  status();

  shortcuts(wb, editors, panel, tree);
  window.addEventListener('beforeunload', (e) => {
    if (!ended && editors.dirtyCount()) e.preventDefault();
  });
  // Test and debugging hooks.
  Object.assign(window, {
    mayfly: {
      session: () => model.session,
      terminalText: (i?: number) => panel.text(i),
      echoLatency: () => panel.echoLatency(),
      editorText: (p: string) => editors.text(p),
      lastOpenMs: () => editors.lastOpenMs,
      dropConnections: () => (events.drop(), panel.dropAll()),
      diffTexts: () => scm.diffTexts(),
    },
  });
}

function shortcuts(wb: ReturnType<typeof workbench>, editors: Editors, panel: TerminalPanel, tree: FileTree) {
  window.addEventListener(
    'keydown',
    (e) => {
      const mod = e.ctrlKey || e.metaKey;
      const k = e.key.toLowerCase();
      let done = true;
      if (mod && !e.shiftKey && k === 's') void editors.save();
      else if (mod && e.shiftKey && (e.code === 'Backquote' || k === '~')) (wb.togglePanel(true), panel.create());
      else if (e.ctrlKey && !e.shiftKey && e.code === 'Backquote') {
        const inTerminal = !!(document.activeElement as Element | null)?.closest('.panel');
        if (wb.panel.classList.contains('hidden')) (wb.togglePanel(true), panel.focus());
        else if (inTerminal) wb.togglePanel(false);
        else panel.focus();
      } else if (mod && !e.shiftKey && k === 'b') wb.toggleSidebar();
      else if (mod && e.shiftKey && k === 'e') {
        wb.showView('explorer');
        tree.el.focus();
      } else if (mod && e.shiftKey && k === 'g') wb.showView('scm');
      else if (mod && e.shiftKey && k === 'a') wb.showView('agent');
      else if (e.altKey && k === 'w') void editors.close();
      else if (e.ctrlKey && e.key === 'PageDown') editors.cycle(1);
      else if (e.ctrlKey && e.key === 'PageUp') editors.cycle(-1);
      else done = false;
      if (done) {
        e.preventDefault();
        e.stopPropagation();
      }
    },
    { capture: true },
  );
}

void main();
