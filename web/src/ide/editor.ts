// Editor tabs over one Monaco editor: one model per open file, dirty markers, save, and what
// happens when a file changes in the VM underneath — a clean buffer follows the disk, a dirty
// one gets a conflict notice (reload or overwrite); a failed save leaves the buffer dirty.

import { api, FileChangeKind, FileInfo } from '../lib/api';
import { confirmDialog, notify } from '../lib/dialogs';
import { h, icon, render } from '../lib/dom';
import { bytes } from '../lib/time';
import { fileIcon } from './fileicons';
import { currentText, LARGE_BYTES, loadFile } from './files';
import { languageFor, monaco } from './monaco';
import { binaryView, Notice, noticeBar, previewView, welcome } from './views';

interface Doc {
  key: string;
  name: string;
  kind: 'text' | 'large' | 'binary' | 'preview';
  model?: monaco.editor.ITextModel;
  view?: monaco.editor.ICodeEditorViewState | null;
  /** The text we believe is on disk (last load or save). */
  disk: string;
  savedVersion: number;
  size: number;
  conflict?: string;
  deleted?: boolean;
  saving?: boolean;
  saveError?: string;
  toast?: { close(): void };
  page?: HTMLElement;
  /** A page tab's icon and colour (previews: the globe). */
  icon?: [string, string];
  /** Frees what a page tab holds (a diff editor) when it closes. */
  dispose?: () => void;
}

export interface EditorHost {
  cursor(state: { line: number; column: number; language: string; readOnly: boolean } | null): void;
  changed(): void;
  activated(key: string): void;
}

export class Editors {
  readonly el: HTMLElement;
  private readonly tabs = h('div', { class: 'tabs', role: 'tablist' });
  private readonly crumbs = h('div', { class: 'breadcrumbs' });
  private readonly notice = h('div', { class: 'notices' });
  private readonly host = h('div', { class: 'monaco-host' });
  private readonly alt = h('div', { class: 'alt-view' });
  private readonly editor: monaco.editor.IStandaloneCodeEditor;
  private readonly docs: Doc[] = [];
  private active?: Doc;
  private readOnlyAll = false;
  /** Milliseconds the last file took from click to text on screen. */
  lastOpenMs = 0;
  private readonly storageKey: string;
  private restored = false;

  constructor(
    private readonly sid: string,
    private readonly on: EditorHost,
  ) {
    this.storageKey = `mayfly:editors:${sid}`;
    this.el = h(
      'div',
      { class: 'editors' },
      h('div', { class: 'tabs-bar' }, this.tabs),
      this.crumbs,
      this.notice,
      h('div', { class: 'editor-body' }, this.host, this.alt),
    );
    this.editor = monaco.editor.create(this.host, {
      theme: 'mayfly-dark',
      automaticLayout: true,
      fontFamily: "'JetBrains Mono', 'DejaVu Sans Mono', monospace",
      fontSize: 13,
      lineHeight: 20,
      padding: { top: 6 },
      minimap: { enabled: true, renderCharacters: false, scale: 1 },
      scrollBeyondLastLine: false,
      smoothScrolling: true,
      cursorBlinking: 'smooth',
      renderLineHighlight: 'all',
      bracketPairColorization: { enabled: true },
      stickyScroll: { enabled: false },
      fixedOverflowWidgets: true,
      model: null,
    });
    // The editor stays laid out under the other views, and a throwaway model is shown once, so
    // the first file opened does not pay for Monaco's first render and its worker's start.
    const warm = monaco.editor.createModel('warm-up\n', 'plaintext');
    this.editor.setModel(warm);
    setTimeout(() => {
      if (this.editor.getModel() === warm) this.editor.setModel(null);
      warm.dispose();
    }, 50);
    this.editor.addCommand(monaco.KeyMod.CtrlCmd | monaco.KeyCode.KeyS, () => void this.save());
    this.editor.onDidChangeCursorPosition(() => this.reportCursor());
    this.editor.onDidChangeModelContent(() => {
      if (this.active) this.drawTabs();
      this.on.changed();
    });
    this.draw();
  }

  get activeKey(): string | undefined {
    return this.active?.key;
  }

  dirty(d: Doc): boolean {
    return !!d.model && d.kind === 'text' && d.model.getAlternativeVersionId() !== d.savedVersion;
  }

  dirtyCount(): number {
    return this.docs.filter((d) => this.dirty(d)).length;
  }

  /** Opens `info` in a tab (or shows its tab); `focus` moves the keyboard to the editor. */
  async open(info: Pick<FileInfo, 'path' | 'name'>, focus = true): Promise<void> {
    const existing = this.docs.find((d) => d.key === info.path);
    if (existing) return this.show(existing, focus);
    const started = performance.now();
    const loaded = await loadFile(this.sid, info.path).catch((e: Error) => e);
    if (loaded instanceof Error) {
      notify('error', `Cannot open ${info.path}: ${loaded.message}`);
      return;
    }
    if (this.docs.find((d) => d.key === info.path)) return; // opened twice meanwhile
    const doc: Doc = { key: info.path, name: info.name, kind: loaded.kind, disk: '', savedVersion: 0, size: loaded.size };
    if (loaded.kind !== 'binary') {
      const first = loaded.text.slice(0, 200).split('\n')[0];
      doc.model = monaco.editor.createModel(loaded.text, languageFor(info.path, first), monaco.Uri.file(info.path));
      doc.disk = loaded.text;
      doc.savedVersion = doc.model.getAlternativeVersionId();
    }
    this.docs.splice(this.active ? this.docs.indexOf(this.active) + 1 : this.docs.length, 0, doc);
    this.show(doc, focus);
    this.lastOpenMs = performance.now() - started;
  }

  /** Re-opens the files this tab had open before a reload (unsaved edits are not kept). */
  async restore(): Promise<void> {
    const saved: { open: string[]; active?: string } = JSON.parse(sessionStorage.getItem(this.storageKey) ?? '{"open":[]}');
    for (const path of saved.open) await this.open({ path, name: path.slice(path.lastIndexOf('/') + 1) }, false).catch(() => undefined);
    const active = this.docs.find((d) => d.key === saved.active);
    this.restored = true;
    if (active) this.show(active, false);
    this.remember();
  }

  private remember(): void {
    if (!this.restored) return; // do not forget the previous page's tabs before restoring them
    const open = this.docs.filter((d) => d.kind !== 'preview' && !d.deleted).map((d) => d.key);
    sessionStorage.setItem(this.storageKey, JSON.stringify({ open, active: this.active?.key }));
  }

  openPreview(port: number, url: string): void {
    this.openPage(`preview:${port}`, `Preview :${port}`, () => previewView(port, url));
  }

  /** Shows the tab `key`, first making it from `page` when it is not open. A page tab is not a
   * file: it is not saved, restored or followed by file events (previews, diffs). */
  openPage(key: string, name: string, page: () => HTMLElement, opts: { icon?: [string, string]; dispose?: () => void } = {}): void {
    let doc = this.docs.find((d) => d.key === key);
    if (!doc) {
      doc = { key, name, kind: 'preview', disk: '', savedVersion: 0, size: 0, page: page(), icon: opts.icon, dispose: opts.dispose };
      this.docs.push(doc);
    }
    this.show(doc);
  }

  private show(doc: Doc, focus = true): void {
    if (this.active?.model) this.active.view = this.editor.saveViewState();
    this.active = doc;
    if (doc.model) {
      this.editor.setModel(doc.model);
      if (doc.view) this.editor.restoreViewState(doc.view);
    }
    this.draw();
    this.on.activated(doc.key);
    if (doc.model && focus) this.editor.focus();
  }

  /** Closes a tab; asks first when it has unsaved changes. */
  async close(key = this.active?.key): Promise<void> {
    const doc = this.docs.find((d) => d.key === key);
    if (!doc) return;
    if (this.dirty(doc)) {
      const ok = await confirmDialog({
        title: `Discard changes to ${doc.name}?`,
        message: 'Your changes will be lost if you close this editor without saving.',
        confirm: 'Discard',
        danger: true,
      });
      if (!ok) return;
    }
    const i = this.docs.indexOf(doc);
    this.docs.splice(i, 1);
    doc.model?.dispose();
    doc.dispose?.();
    if (this.active === doc) {
      this.active = undefined;
      const next = this.docs[Math.min(i, this.docs.length - 1)];
      if (next) return this.show(next);
      this.editor.setModel(null);
    }
    this.draw();
  }

  cycle(step: number): void {
    if (!this.active || this.docs.length < 2) return;
    const i = this.docs.indexOf(this.active);
    this.show(this.docs[(i + step + this.docs.length) % this.docs.length]);
  }

  /** Saves the active (or given) file. A file changed on disk since it was loaded is not
   * overwritten unless `overwrite`. */
  async save(doc = this.active, overwrite = false): Promise<boolean> {
    if (!doc?.model || doc.kind !== 'text' || doc.saving || this.readOnlyAll) return false;
    const text = doc.model.getValue();
    const version = doc.model.getAlternativeVersionId();
    doc.saving = true;
    this.draw();
    try {
      if (!overwrite) {
        const now = await currentText(this.sid, doc.key);
        if (now !== null && now !== doc.disk) {
          doc.conflict = now;
          return false;
        }
      }
      await api.write(this.sid, doc.key, new Blob([text]));
      doc.disk = text;
      doc.savedVersion = version;
      doc.conflict = undefined;
      doc.deleted = false;
      doc.saveError = undefined;
      doc.toast?.close();
      return true;
    } catch (e) {
      doc.saveError = (e as Error).message;
      doc.toast?.close();
      doc.toast = notify('error', `Could not save ${doc.key}: ${doc.saveError}`);
      return false;
    } finally {
      doc.saving = false;
      this.draw();
      this.on.changed();
    }
  }

  /** Replaces a buffer with the disk's text, keeping undo. */
  private reload(doc: Doc, text: string): void {
    if (!doc.model) return;
    doc.model.pushEditOperations([], [{ range: doc.model.getFullModelRange(), text }], () => null);
    doc.disk = text;
    doc.savedVersion = doc.model.getAlternativeVersionId();
    doc.conflict = undefined;
    doc.deleted = false;
  }

  /** A file event from the VM. */
  async fileChanged(path: string, kind: FileChangeKind, from?: string): Promise<void> {
    const under = (p: string, d: Doc) => d.key === p || d.key.startsWith(p + '/');
    for (const d of this.docs) {
      if (d.kind === 'preview') continue;
      if ((kind === 'deleted' && under(path, d)) || (from && under(from, d))) {
        d.deleted = true;
      } else if (d.key === path) {
        await this.checkDisk(d);
      }
    }
    this.draw();
  }

  /** Compares every open file with the disk (after a reconnect or a "rescan" event). */
  async recheckAll(): Promise<void> {
    await Promise.all(this.docs.map((d) => this.checkDisk(d)));
    this.draw();
  }

  /** Compares an open text file with the disk: follow it when clean, flag a conflict when not. */
  private async checkDisk(d: Doc): Promise<void> {
    if (d.kind !== 'text' || !d.model) return;
    const now = await currentText(this.sid, d.key).catch(() => null);
    if (now === null) return;
    d.deleted = false;
    if (now === d.disk) return;
    if (this.dirty(d)) d.conflict = now;
    else this.reload(d, now);
  }

  /** The tree deleted `path`: its tabs (and those below it) are gone. */
  removed(path: string): void {
    for (const d of [...this.docs]) {
      if (d.key === path || d.key.startsWith(path + '/')) {
        d.savedVersion = d.model?.getAlternativeVersionId() ?? 0;
        void this.close(d.key);
      }
    }
  }

  /** The tree renamed `from` to `to`: tabs follow (models are re-created under the new name). */
  renamed(from: string, to: string): void {
    for (const d of this.docs) {
      if (d.key !== from && !d.key.startsWith(from + '/')) continue;
      const key = to + d.key.slice(from.length);
      if (d.model) {
        const old = d.model;
        const dirty = this.dirty(d);
        d.model = monaco.editor.createModel(old.getValue(), languageFor(key), monaco.Uri.file(key));
        d.savedVersion = dirty ? -1 : d.model.getAlternativeVersionId();
        if (this.active === d) this.editor.setModel(d.model);
        old.dispose();
      }
      d.key = key;
      d.name = key.slice(key.lastIndexOf('/') + 1);
    }
    this.draw();
  }

  /** The session ended: nothing can be saved any more. */
  freeze(): void {
    this.readOnlyAll = true;
    this.editor.updateOptions({ readOnly: true, readOnlyMessage: { value: 'The session has ended.' } });
    this.draw();
  }

  private noticeFor(d: Doc): Notice | undefined {
    if (this.readOnlyAll) return { kind: 'error', text: 'The session has ended: this file can no longer be saved.' };
    if (d.conflict !== undefined) {
      return {
        kind: 'warning',
        text: 'The file has changed in the VM since you opened it. Your edits are not saved.',
        actions: [
          { label: 'Reload from disk', run: () => (this.reload(d, d.conflict!), this.draw()) },
          { label: 'Overwrite', primary: true, run: () => void this.save(d, true) },
        ],
      };
    }
    if (d.saveError) {
      return { kind: 'error', text: `Could not save: ${d.saveError}`, actions: [{ label: 'Retry', primary: true, run: () => void this.save(d) }] };
    }
    if (d.deleted) return { kind: 'warning', text: 'This file was deleted or moved in the VM. Save to create it again.' };
    if (d.kind === 'large') {
      return { kind: 'info', text: `This file is ${bytes(d.size)}: larger than ${bytes(LARGE_BYTES)}, so it is shown read-only${d.size > LARGE_BYTES ? ' (first 5 MiB)' : ''}.` };
    }
    return undefined;
  }

  draw(): void {
    this.drawTabs();
    this.remember();
    const d = this.active;
    const n = d && d.kind !== 'preview' ? this.noticeFor(d) : undefined;
    render(this.notice, n ? noticeBar(n) : null);
    this.alt.hidden = !!d?.model;
    if (d?.model) this.editor.updateOptions({ readOnly: this.readOnlyAll || d.kind === 'large' });
    render(this.alt, !d ? welcome() : d.kind === 'binary' ? binaryView(d.name, d.size) : d.kind === 'preview' ? d.page! : null);
    render(
      this.crumbs,
      d && d.kind !== 'preview'
        ? d.key.split('/').filter(Boolean).map((seg, i, all) => [i ? icon('chevron-right', 'sep') : null, h('span', { class: i === all.length - 1 ? 'last' : '' }, seg)])
        : null,
    );
    this.crumbs.hidden = !d || d.kind === 'preview';
    this.reportCursor();
  }

  private drawTabs(): void {
    render(
      this.tabs,
      this.docs.map((d) => {
        const dirty = this.dirty(d);
        const [name, color] = d.kind === 'preview' ? (d.icon ?? ['globe', '#4daafc']) : fileIcon(d.name, 'file');
        const sameName = this.docs.filter((o) => o.name === d.name).length > 1;
        return h(
          'div',
          {
            class: `tab${d === this.active ? ' active' : ''}${dirty ? ' dirty' : ''}${d.deleted ? ' deleted' : ''}`,
            role: 'tab',
            title: d.kind === 'preview' ? d.name : d.key + (dirty ? ' • unsaved' : ''),
            'aria-selected': String(d === this.active),
            dataset: { path: d.key },
            on: {
              click: () => this.show(d),
              auxclick: (e: MouseEvent) => e.button === 1 && void this.close(d.key),
            },
          },
          h('i', { class: `codicon codicon-${name}`, style: `color:${color}` }),
          h('span', { class: 'label' }, d.name),
          sameName ? h('span', { class: 'hint' }, d.key.slice(0, d.key.lastIndexOf('/')) || '/') : null,
          d.saving ? h('span', { class: 'spinner small' }) : null,
          h(
            'button',
            { class: 'tab-close', title: dirty ? 'Unsaved changes' : 'Close (Alt+W)', 'aria-label': `Close ${d.name}`, on: { click: (e: MouseEvent) => (e.stopPropagation(), void this.close(d.key)) } },
            icon('close'),
          ),
        );
      }),
    );
  }

  private reportCursor(): void {
    const d = this.active;
    const pos = this.editor.getPosition();
    if (!d?.model || !pos) return this.on.cursor(null);
    this.on.cursor({ line: pos.lineNumber, column: pos.column, language: d.model.getLanguageId(), readOnly: this.readOnlyAll || d.kind === 'large' });
  }

  /** The text of the open file `path` (for tests). */
  text(path: string): string | undefined {
    return this.docs.find((d) => d.key === path)?.model?.getValue();
  }

  layout(): void {
    this.editor.layout();
  }
}
