// A diff tab: Monaco's side-by-side diff editor over two versions of one file, read from the
// VM — HEAD ↔ index for a staged change, index ↔ working tree for an unstaged one. Both sides
// are read-only; "Open File" opens the working-tree file in a normal editor tab.

import { Change, git } from '../lib/git';
import { h, icon } from '../lib/dom';
import { loadFile } from './files';
import { languageFor, monaco } from './monaco';

export interface DiffSpec {
  repo: string;
  change: Change;
  staged: boolean;
}

const BINARY = '\u0000';

/** One side of the diff: '' when the file does not exist on that side, BINARY when not text. */
async function side(sid: string, spec: DiffSpec, which: 'left' | 'right'): Promise<string> {
  const { repo, change, staged } = spec;
  const L = change.letter;
  const fromGit = async (rev: string, path: string) => {
    const text = await git(sid, repo, ['show', `${rev}:${path}`]);
    return text.includes('\u0000') || text.includes('\ufffd') ? BINARY : text;
  };
  if (which === 'left') {
    if (L === '?' || (staged && L === 'A')) return '';
    return staged ? fromGit('HEAD', change.from ?? change.path) : fromGit('', change.path);
  }
  if (L === 'D') return '';
  if (staged) return fromGit('', change.path);
  const f = await loadFile(sid, `${repo}/${change.path}`);
  return f.kind === 'text' ? f.text : BINARY;
}

export class DiffView {
  readonly el: HTMLElement;
  private readonly editor: monaco.editor.IStandaloneDiffEditor;
  private readonly message = h('div', { class: 'diff-message', hidden: true });
  private readonly models: monaco.editor.ITextModel[] = [];

  constructor(
    private readonly sid: string,
    readonly spec: DiffSpec,
    openFile: (path: string) => void,
  ) {
    const { change, staged } = spec;
    const host = h('div', { class: 'diff-host' });
    this.el = h(
      'div',
      { class: 'diff-view', dataset: { path: `${spec.repo}/${change.path}`, staged: String(staged) } },
      h(
        'div',
        { class: 'diff-bar' },
        icon('git-compare'),
        h('span', { class: 'diff-title' }, change.from ? `${change.from} → ${change.path}` : change.path),
        h('span', { class: 'hint' }, staged ? 'HEAD ↔ Index' : change.letter === '?' ? 'Untracked' : 'Index ↔ Working Tree'),
        h('div', { class: 'spacer' }),
        change.letter !== 'D'
          ? h('button', { class: 'btn secondary small', on: { click: () => openFile(`${spec.repo}/${change.path}`) } }, icon('go-to-file'), 'Open File')
          : null,
      ),
      this.message,
      host,
    );
    this.editor = monaco.editor.createDiffEditor(host, {
      theme: 'mayfly-dark',
      automaticLayout: true,
      readOnly: true,
      originalEditable: false,
      fontFamily: "'JetBrains Mono', 'DejaVu Sans Mono', monospace",
      fontSize: 13,
      lineHeight: 20,
      minimap: { enabled: false },
      scrollBeyondLastLine: false,
      renderSideBySide: true,
      useInlineViewWhenSpaceIsLimited: false,
    });
    void this.refresh();
  }

  /** Re-reads both sides from the VM. */
  async refresh(): Promise<void> {
    let left: string, right: string;
    try {
      [left, right] = await Promise.all([side(this.sid, this.spec, 'left'), side(this.sid, this.spec, 'right')]);
    } catch (e) {
      return this.show(`Cannot show this diff: ${(e as Error).message}`);
    }
    if (left === BINARY || right === BINARY) return this.show('Binary file: not shown as text.');
    this.message.hidden = true;
    const lang = languageFor(this.spec.change.path);
    const cur = this.editor.getModel();
    if (cur && cur.original.getValue() === left && cur.modified.getValue() === right) return;
    const original = monaco.editor.createModel(left, lang);
    const modified = monaco.editor.createModel(right, lang);
    this.editor.setModel({ original, modified });
    this.models.splice(0).forEach((m) => m.dispose());
    this.models.push(original, modified);
  }

  private show(text: string): void {
    this.message.textContent = text;
    this.message.hidden = false;
  }

  /** The two sides as shown (for tests). */
  texts(): { original: string; modified: string } | null {
    const m = this.editor.getModel();
    return m ? { original: m.original.getValue(), modified: m.modified.getValue() } : null;
  }

  dispose(): void {
    this.editor.dispose();
    this.models.forEach((m) => m.dispose());
  }
}
