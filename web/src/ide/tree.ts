// The explorer's file tree of the workspace: directories load when expanded, refresh when the
// VM reports changes under them, and remember which are open (per tab, in sessionStorage).
// Keyboard: arrows move and expand, Enter opens, F2 renames, Delete deletes.

import { api, FileInfo } from '../lib/api';
import { confirmDialog } from '../lib/dialogs';
import { h, icon, keys, render } from '../lib/dom';
import { fileIcon } from './fileicons';
import { showMenu } from './menu';

interface Node {
  info: FileInfo;
  children?: Node[];
  expanded: boolean;
  error?: string;
}

export interface TreeHost {
  /** Opens a file; `focus`: move the keyboard to the editor (Enter, double click). */
  open(info: FileInfo, focus: boolean): void;
  removed(path: string): void;
  renamed(from: string, to: string): void;
  error(message: string): void;
}

type Editing = { kind: 'file' | 'dir'; parent: string } | { kind: 'rename'; path: string };

export const dirname = (p: string) => p.slice(0, p.lastIndexOf('/')) || '/';
const basename = (p: string) => p.slice(p.lastIndexOf('/') + 1);
const join = (dir: string, name: string) => (dir === '/' ? '' : dir) + '/' + name;

function sortEntries(a: FileInfo, b: FileInfo): number {
  if ((a.type === 'dir') !== (b.type === 'dir')) return a.type === 'dir' ? -1 : 1;
  return a.name.localeCompare(b.name, undefined, { numeric: true, sensitivity: 'base' });
}

export class FileTree {
  readonly el: HTMLElement;
  private readonly nodes = new Map<string, Node>();
  private readonly root: Node;
  private focused: string;
  private editing?: Editing;
  private edit?: { e: Editing; row: HTMLElement; field: HTMLInputElement };
  private readonly dirty = new Set<string>();
  private refreshTimer?: number;
  private readonly storageKey: string;

  constructor(
    private readonly sid: string,
    readonly rootPath: string,
    private readonly host: TreeHost,
  ) {
    this.root = { info: { name: basename(rootPath) || '/', path: rootPath, type: 'dir', size: 0, mode: 0, modified: 0 }, expanded: true };
    this.nodes.set(rootPath, this.root);
    this.focused = rootPath;
    this.storageKey = `mayfly:expanded:${sid}`;
    this.el = h('div', {
      class: 'tree',
      role: 'tree',
      tabindex: 0,
      'aria-label': 'Files',
      on: {
        click: (e: MouseEvent) => this.onClick(e),
        dblclick: (e: MouseEvent) => this.onClick(e, true),
        contextmenu: (e: MouseEvent) => this.onContextMenu(e),
        keydown: (e: KeyboardEvent) => this.onKey(e),
      },
    });
  }

  /** Loads the root and the directories that were open before a reload. */
  async load(): Promise<void> {
    await this.fetch(this.root);
    const saved: string[] = JSON.parse(sessionStorage.getItem(this.storageKey) ?? '[]');
    for (const path of saved.sort((a, b) => a.length - b.length)) {
      const n = this.nodes.get(path);
      if (n && n.info.type === 'dir') {
        n.expanded = true;
        await this.fetch(n);
      }
    }
    this.render();
  }

  /** Something changed at `path` (a file event): refresh the directories that show it. */
  changed(path: string, from?: string): void {
    if (path === this.rootPath) for (const [p, n] of this.nodes) n.children && this.dirty.add(p);
    for (const p of [path, from]) if (p) this.dirty.add(dirname(p));
    clearTimeout(this.refreshTimer);
    this.refreshTimer = window.setTimeout(() => void this.refreshDirty(), 60);
  }

  /** Reloads every loaded directory (after a reconnect, when events may have been missed). */
  refreshAll(): void {
    this.changed(this.rootPath);
  }

  private async refreshDirty(): Promise<void> {
    const dirs = [...this.dirty].filter((d) => this.nodes.get(d)?.children);
    this.dirty.clear();
    await Promise.all(dirs.map((d) => this.fetch(this.nodes.get(d)!)));
    this.render();
  }

  private async fetch(n: Node): Promise<void> {
    try {
      const entries = (await api.list(this.sid, n.info.path)).sort(sortEntries);
      const old = new Map((n.children ?? []).map((c) => [c.info.path, c]));
      n.children = entries.map((info) => {
        const prev = old.get(info.path);
        old.delete(info.path);
        if (prev && prev.info.type === info.type) return Object.assign(prev, { info });
        const node: Node = { info, expanded: false };
        this.nodes.set(info.path, node);
        return node;
      });
      for (const gone of old.keys()) this.forget(gone);
      n.error = undefined;
    } catch (e) {
      n.error = (e as Error).message;
      n.children = n.children ?? [];
    }
  }

  private forget(path: string): void {
    for (const p of [...this.nodes.keys()]) if (p === path || p.startsWith(path + '/')) this.nodes.delete(p);
  }

  private saveExpanded(): void {
    const open = [...this.nodes.values()].filter((n) => n.expanded && n !== this.root).map((n) => n.info.path);
    sessionStorage.setItem(this.storageKey, JSON.stringify(open));
  }

  /** Visible rows in order, with their depth. */
  private rows(): [Node, number][] {
    const out: [Node, number][] = [];
    const walk = (n: Node, depth: number) => {
      for (const c of n.children ?? []) {
        out.push([c, depth]);
        if (c.expanded) walk(c, depth + 1);
      }
    };
    walk(this.root, 0);
    return out;
  }

  render(): void {
    const rows = this.rows();
    const items: HTMLElement[] = [];
    if (!this.editing) this.edit = undefined;
    const input = (e: Editing, depth: number, initial: string, type: string) => {
      if (this.edit?.e !== e) this.edit = this.editRow(e, initial, type);
      this.edit.row.style.paddingLeft = `${8 + depth * 12}px`;
      items.push(this.edit.row);
    };
    const e = this.editing;
    if (e && e.kind !== 'rename' && e.parent === this.rootPath) input(e, 0, '', e.kind);
    for (const [n, depth] of rows) {
      const p = n.info.path;
      if (e?.kind === 'rename' && e.path === p) {
        input(e, depth, n.info.name, n.info.type);
        continue;
      }
      const isDir = n.info.type === 'dir';
      const [name, color] = fileIcon(n.info.name, n.info.type, n.expanded);
      items.push(
        h(
          'div',
          {
            class: `tree-row${p === this.focused ? ' focused' : ''}`,
            role: 'treeitem',
            'aria-level': depth + 1,
            'aria-expanded': isDir ? String(n.expanded) : undefined,
            title: p,
            dataset: { path: p },
            style: `padding-left:${8 + depth * 12}px`,
          },
          icon(isDir ? (n.expanded ? 'chevron-down' : 'chevron-right') : 'blank', 'twisty'),
          h('i', { class: `codicon codicon-${name}`, style: `color:${color}` }),
          h('span', { class: 'name' }, n.info.name),
        ),
      );
      if (n.expanded && n.error) items.push(h('div', { class: 'tree-row error', style: `padding-left:${20 + (depth + 1) * 12}px` }, n.error));
      if (e && e.kind !== 'rename' && e.parent === p) input(e, depth + 1, '', e.kind);
    }
    if (this.root.error) items.unshift(h('div', { class: 'tree-row error' }, this.root.error));
    // A refresh while a name is being typed keeps the input, its text, focus and selection.
    const field = this.edit?.field;
    const typing = field && document.activeElement === field ? [field.selectionStart, field.selectionEnd] : undefined;
    render(this.el, items);
    if (field && typing) {
      field.focus();
      field.setSelectionRange(typing[0], typing[1]);
    }
    this.el.querySelector('.tree-row.focused')?.scrollIntoView({ block: 'nearest' });
  }

  /** The inline name input's row for `e`; made once per edit so that re-renders keep what was typed. */
  private editRow(e: Editing, initial: string, type: string): { e: Editing; row: HTMLElement; field: HTMLInputElement } {
    const field = h('input', { class: 'tree-input', value: initial, spellcheck: false, 'aria-label': 'Name' }) as HTMLInputElement;
    const error = h('div', { class: 'tree-input-error', hidden: true });
    field.addEventListener('keydown', (ev: KeyboardEvent) => {
      ev.stopPropagation();
      if (ev.key === 'Enter') void this.commit(e, field.value.trim(), error);
      if (ev.key === 'Escape') this.cancelEdit();
    });
    // Leaving the input cancels the edit; a re-render moves it (and may blur it) without leaving.
    field.addEventListener('blur', () => setTimeout(() => this.editing === e && document.activeElement !== field && this.cancelEdit(), 150));
    const [name, color] = fileIcon(initial || (type === 'dir' ? 'folder' : 'file'), type);
    const row = h('div', { class: 'tree-row editing' }, icon('blank', 'twisty'), h('i', { class: `codicon codicon-${name}`, style: `color:${color}` }), h('div', { class: 'tree-edit' }, field, error));
    requestAnimationFrame(() => {
      field.focus();
      const dot = initial.lastIndexOf('.');
      field.setSelectionRange(0, dot > 0 ? dot : initial.length);
    });
    return { e, row, field };
  }

  private async toggle(n: Node, open = !n.expanded): Promise<void> {
    if (n.info.type !== 'dir' || n.expanded === open) return;
    n.expanded = open;
    if (open && !n.children) await this.fetch(n);
    this.saveExpanded();
    this.render();
  }

  private focus(path: string): void {
    this.focused = path;
    for (const r of this.el.querySelectorAll<HTMLElement>('.tree-row')) r.classList.toggle('focused', r.dataset.path === path);
    this.el.querySelector('.tree-row.focused')?.scrollIntoView({ block: 'nearest' });
  }

  private onClick(e: MouseEvent, double = false): void {
    const row = (e.target as Element).closest<HTMLElement>('.tree-row[data-path]');
    if (!row) return;
    const n = this.nodes.get(row.dataset.path!);
    if (!n) return;
    this.focus(n.info.path);
    if (n.info.type !== 'dir') this.host.open(n.info, double);
    else if (!double) void this.toggle(n);
  }

  private onKey(e: KeyboardEvent): void {
    const rows = this.rows();
    const i = rows.findIndex(([n]) => n.info.path === this.focused);
    const n = rows[i]?.[0];
    const go = (j: number) => rows[j] && this.focus(rows[j][0].info.path);
    switch (e.key) {
      case 'ArrowDown': go(Math.min(i + 1, rows.length - 1)); break;
      case 'ArrowUp': go(Math.max(i - 1, 0)); break;
      case 'Home': go(0); break;
      case 'End': go(rows.length - 1); break;
      case 'ArrowRight':
        if (n?.info.type === 'dir') n.expanded ? go(i + 1) : void this.toggle(n, true);
        break;
      case 'ArrowLeft':
        if (n?.expanded) void this.toggle(n, false);
        else if (n && dirname(n.info.path) !== this.rootPath) this.focus(dirname(n.info.path));
        break;
      case 'Enter':
      case ' ':
        if (n) n.info.type === 'dir' ? void this.toggle(n) : this.host.open(n.info, e.key === 'Enter');
        break;
      case 'F2': if (n) this.startRename(n.info.path); break;
      case 'Delete': if (n) void this.delete(n.info.path); break;
      default: return;
    }
    e.preventDefault();
  }

  private onContextMenu(e: MouseEvent): void {
    e.preventDefault();
    const row = (e.target as Element).closest<HTMLElement>('.tree-row[data-path]');
    const n = row ? this.nodes.get(row.dataset.path!) : undefined;
    if (n) this.focus(n.info.path);
    const target = n?.info.path ?? this.rootPath;
    const dir = n && n.info.type !== 'dir' ? dirname(target) : target;
    showMenu(e.clientX, e.clientY, [
      { label: 'New File…', icon: 'new-file', run: () => this.startCreate('file', dir) },
      { label: 'New Folder…', icon: 'new-folder', run: () => this.startCreate('dir', dir) },
      ...(n
        ? ([
            '-',
            { label: 'Rename…', icon: 'edit', keys: 'F2', run: () => this.startRename(target) },
            { label: 'Delete', icon: 'trash', keys: keys('Delete'), danger: true, run: () => void this.delete(target) },
          ] as const)
        : []),
      '-',
      { label: 'Copy Path', icon: 'copy', run: () => void navigator.clipboard?.writeText(target) },
      { label: 'Refresh', icon: 'refresh', run: () => this.refreshAll() },
    ]);
  }

  /** Starts an inline name input for a new file or folder in `dir` (default: the focused one). */
  startCreate(kind: 'file' | 'dir', dir?: string): void {
    if (!dir) {
      const f = this.nodes.get(this.focused);
      dir = f && f !== this.root ? (f.info.type === 'dir' ? f.info.path : dirname(f.info.path)) : this.rootPath;
    }
    const parent = this.nodes.get(dir);
    if (parent && parent !== this.root) void this.toggle(parent, true);
    this.editing = { kind, parent: dir };
    this.render();
  }

  startRename(path: string): void {
    this.editing = { kind: 'rename', path };
    this.render();
  }

  private cancelEdit(): void {
    this.editing = undefined;
    this.render();
    this.el.focus();
  }

  private async commit(e: Editing, name: string, error: HTMLElement): Promise<void> {
    const fail = (msg: string) => {
      error.textContent = msg;
      error.hidden = false;
    };
    if (!name) return this.cancelEdit();
    if (name.startsWith('/') || name.split('/').some((s) => s === '' || s === '.' || s === '..')) return fail('Not a valid name.');
    const dir = e.kind === 'rename' ? dirname(e.path) : e.parent;
    const target = join(dir, name);
    if (e.kind === 'rename' && target === e.path) return this.cancelEdit();
    if (this.nodes.has(target)) return fail(`${name} already exists here.`);
    try {
      if (e.kind === 'file') await api.write(this.sid, target, new Blob([]));
      else if (e.kind === 'dir') await api.mkdir(this.sid, target);
      else if (e.kind === 'rename') await api.rename(this.sid, e.path, target);
    } catch (err) {
      return fail((err as Error).message);
    }
    this.editing = undefined;
    if (e.kind === 'rename') this.host.renamed(e.path, target);
    await this.fetch(this.nodes.get(dir) ?? this.root);
    const first = join(dir, name.split('/')[0]);
    this.focused = this.nodes.has(target) ? target : first;
    this.render();
    this.el.focus();
    if (e.kind === 'file') this.host.open({ name: basename(target), path: target, type: 'file', size: 0, mode: 0o644, modified: Date.now() / 1000 }, true);
  }

  private async delete(path: string): Promise<void> {
    const n = this.nodes.get(path);
    if (!n || n === this.root) return;
    const isDir = n.info.type === 'dir';
    const ok = await confirmDialog({
      title: `Delete ${isDir ? 'folder' : 'file'} ‘${n.info.name}’?`,
      message: isDir ? 'The folder and everything in it is removed from the VM.' : 'The file is removed from the VM.',
      confirm: 'Delete',
      danger: true,
    });
    if (!ok) return;
    try {
      await api.removePath(this.sid, path);
    } catch (e) {
      return this.host.error(`Cannot delete ${path}: ${(e as Error).message}`);
    }
    this.host.removed(path);
    const rows = this.rows();
    const i = rows.findIndex(([r]) => r.info.path === path);
    this.focused = rows[i + 1]?.[0].info.path ?? rows[i - 1]?.[0].info.path ?? this.rootPath;
    await this.fetch(this.nodes.get(dirname(path)) ?? this.root);
    this.render();
    this.el.focus();
  }

  /** Highlights `path` if its row is shown (the active editor's file). */
  select(path: string): void {
    if (this.nodes.has(path)) this.focus(path);
  }

  collapseAll(): void {
    for (const n of this.nodes.values()) if (n !== this.root) n.expanded = false;
    this.saveExpanded();
    this.render();
  }
}
