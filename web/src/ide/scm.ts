// The Source Control view: per repository in the VM, its branch with ahead/behind counts, the
// changed files grouped Staged / Changes (click → a diff tab), stage and unstage (one file or
// all), a commit message box (Ctrl+Enter commits) and push to a named branch. Everything runs
// git in the VM over the exec API (lib/git.ts); git's own error text is shown when it fails.
// It does not watch `.git`: it refreshes on workspace file events, on its own actions, when it
// is shown, and every few seconds while it is visible (commits made in the terminal).

import { Change, findRepos, git, GitError, status, Status, WORKSPACE } from '../lib/git';
import { h, icon, keys, render } from '../lib/dom';
import { action, sectionHeader } from './layout';
import { DiffSpec, DiffView } from './diff';
import { fileIcon } from './fileicons';

export interface ScmHost {
  /** Shows a diff tab in the editor area; `closed` is called when the tab closes. */
  openDiff(key: string, name: string, view: DiffView, closed: () => void): void;
  openFile(path: string): void;
  count(n: number): void;
  sessionRepo(): string | undefined;
}

const POLL_MS = 5000;
const MAX_ROWS = 2000;

class RepoView {
  readonly el: HTMLElement;
  readonly message = h('textarea', { class: 'input scm-message', rows: 3, 'aria-label': 'Commit message' });
  readonly branchInput = h('input', { class: 'input scm-branch', 'aria-label': 'Branch to push to', spellcheck: false });
  private readonly head = h('div', { class: 'scm-repo-head' });
  private readonly error = h('pre', { class: 'scm-error', role: 'alert', hidden: true });
  private readonly lists = h('div', { class: 'scm-lists' });
  private readonly commitBtn: HTMLButtonElement;
  private readonly pushBtn: HTMLButtonElement;
  st?: Status;
  busy = false;
  /** The status last drawn: an unchanged one is not redrawn, so a click is never split between
   * a row and its replacement (mousedown on one, mouseup on the other is no click). */
  private drawn = '';

  constructor(
    readonly path: string,
    private readonly scm: SourceControl,
  ) {
    this.message.addEventListener('keydown', (e: KeyboardEvent) => {
      if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') (e.preventDefault(), void this.commit());
    });
    this.commitBtn = h('button', { class: 'btn scm-commit', on: { click: () => void this.commit() } }, icon('check'), 'Commit');
    this.pushBtn = h('button', { class: 'btn secondary scm-push', title: 'git push -u origin HEAD:<branch>', on: { click: () => void this.push() } }, icon('cloud-upload'), 'Push');
    this.el = h(
      'div',
      { class: 'scm-repo', dataset: { repo: path } },
      this.head,
      h('div', { class: 'scm-commit-box' }, this.message, this.commitBtn, h('div', { class: 'scm-push-row' }, this.branchInput, this.pushBtn)),
      this.error,
      this.lists,
    );
  }

  private fail(e: unknown): void {
    this.error.textContent = e instanceof Error ? e.message : String(e);
    this.error.hidden = false;
  }

  /** Runs a git action with the buttons disabled; errors go to the error box. */
  private async run(what: () => Promise<unknown>): Promise<boolean> {
    if (this.busy) return false;
    this.busy = true;
    this.error.hidden = true;
    this.el.classList.add('busy');
    this.commitBtn.disabled = this.pushBtn.disabled = true;
    try {
      await what();
      return true;
    } catch (e) {
      this.fail(e);
      return false;
    } finally {
      this.busy = false;
      this.el.classList.remove('busy');
      this.commitBtn.disabled = this.pushBtn.disabled = false;
      await this.scm.refresh();
    }
  }

  stage(paths: string[] | 'all') {
    return this.run(() => git(this.scm.sid, this.path, ['add', '-A', '--', ...(paths === 'all' ? ['.'] : paths)]));
  }

  unstage(paths: string[] | 'all') {
    const list = paths === 'all' ? ['.'] : paths;
    // Before the first commit there is no HEAD to restore from: drop the paths from the index.
    const args = this.st?.hasHead === false ? ['rm', '--cached', '-r', '-q', '--', ...list] : ['restore', '--staged', '--', ...list];
    return this.run(() => git(this.scm.sid, this.path, args));
  }

  async commit(): Promise<void> {
    const msg = this.message.value.trim();
    if (!msg) return this.fail(new GitError('Write a commit message first.'));
    if (this.st && !this.st.staged.length) return this.fail(new GitError('Nothing is staged: stage the changes to commit first.'));
    if (await this.run(() => git(this.scm.sid, this.path, ['commit', '-q', '-m', msg]))) this.message.value = '';
  }

  /** The upstream as [remote, branch] (assumes a remote name without '/'), or the default. */
  private target(): [string, string | undefined] {
    const up = this.st?.upstream;
    if (!up || !up.includes('/')) return ['origin', this.st?.branch ?? undefined];
    return [up.slice(0, up.indexOf('/')), up.slice(up.indexOf('/') + 1)];
  }

  async push(): Promise<void> {
    const [remote, upstreamBranch] = this.target();
    const branch = this.branchInput.value.trim() || upstreamBranch;
    if (!branch) return this.fail(new GitError('Name the branch to push to (HEAD is detached).'));
    await this.run(() => git(this.scm.sid, this.path, ['push', '-u', remote, `HEAD:refs/heads/${branch}`], 120));
  }

  update(st: Status | Error): void {
    const sig = st instanceof Error ? `error:${st.message}` : JSON.stringify(st);
    if (sig === this.drawn) return;
    this.drawn = sig;
    if (st instanceof Error) {
      this.st = undefined;
      render(this.head, icon('repo'), h('span', { class: 'scm-repo-name' }, this.path));
      render(this.lists);
      return this.fail(st);
    }
    this.st = st;
    const branch = st.branch ?? 'detached HEAD';
    const [remote, upstreamBranch] = this.target();
    this.branchInput.placeholder = upstreamBranch ? `Branch: ${upstreamBranch}` : 'Branch to push to';
    this.branchInput.title = `The branch of ${remote} to push to${upstreamBranch ? ` (empty: ${upstreamBranch})` : ''}`;
    this.message.placeholder = `Message (${keys('Ctrl+Enter')} to commit on '${branch}')`;
    render(
      this.head,
      icon('repo'),
      h('span', { class: 'scm-repo-name', title: this.path }, this.path === WORKSPACE ? this.path : this.path.split('/').pop()),
      h('span', { class: 'scm-branch-name', title: st.upstream ? `Tracking ${st.upstream}` : 'No upstream branch' }, icon('git-branch'), branch),
      h(
        'span',
        { class: 'scm-ab', title: st.upstream ? `${st.ahead} to push, ${st.behind} to pull (${st.upstream})` : 'Not published: no upstream branch' },
        st.upstream ? `↑${st.ahead} ↓${st.behind}` : icon('cloud'),
      ),
    );
    render(
      this.lists,
      this.group('Staged Changes', 'staged', st.staged, true),
      this.group('Changes', 'changes', st.changes, false),
      !st.staged.length && !st.changes.length ? h('div', { class: 'scm-clean' }, 'No changes.') : null,
    );
  }

  private group(title: string, cls: string, items: Change[], staged: boolean): HTMLElement | null {
    if (!items.length) return null;
    const all = staged
      ? action('remove', 'Unstage All Changes', () => void this.unstage('all'))
      : action('add', 'Stage All Changes', () => void this.stage('all'));
    return h(
      'div',
      { class: `scm-group ${cls}` },
      h('div', { class: 'scm-group-head' }, icon('chevron-down'), h('span', null, title), h('div', { class: 'actions' }, all), h('span', { class: 'count' }, String(items.length))),
      items.slice(0, MAX_ROWS).map((c) => this.row(c, staged)),
      items.length > MAX_ROWS ? h('div', { class: 'scm-clean' }, `… and ${items.length - MAX_ROWS} more`) : null,
    );
  }

  private row(c: Change, staged: boolean): HTMLElement {
    const name = c.path.split('/').pop()!;
    const dir = c.path.includes('/') ? c.path.slice(0, c.path.lastIndexOf('/')) : '';
    const [ic, color] = fileIcon(name, 'file');
    const letter = c.letter === '?' ? 'U' : c.letter;
    const btn = staged
      ? action('remove', 'Unstage Changes', () => void this.unstage([c.path]))
      : action('add', 'Stage Changes', () => void this.stage([c.path]));
    return h(
      'div',
      {
        class: `scm-row status-${c.letter === '?' ? 'untracked' : c.letter}`,
        role: 'button',
        tabindex: 0,
        title: `${this.path}/${c.path}`,
        dataset: { path: c.path, letter: c.letter },
        on: { click: () => this.scm.diff({ repo: this.path, change: c, staged }), keydown: (e: KeyboardEvent) => e.key === 'Enter' && this.scm.diff({ repo: this.path, change: c, staged }) },
      },
      h('i', { class: `codicon codicon-${ic}`, style: `color:${color}` }),
      h('span', { class: 'name' }, name),
      dir ? h('span', { class: 'hint' }, dir) : null,
      h('div', { class: 'actions' }, c.letter !== 'D' ? action('go-to-file', 'Open File', () => this.scm.host.openFile(`${this.path}/${c.path}`)) : null, btn),
      h('span', { class: 'letter', title: c.from ? `renamed from ${c.from}` : '' }, letter),
    );
  }
}

export class SourceControl {
  readonly el: HTMLElement;
  private readonly body = h('div', { class: 'scm-body' });
  private repos = new Map<string, RepoView>();
  private readonly diffs = new Map<string, DiffView>();
  private pending?: Promise<void>;
  private again = false;
  private timer?: ReturnType<typeof setTimeout>;
  private visible = false;
  private stopped = false;

  constructor(
    readonly sid: string,
    readonly host: ScmHost,
  ) {
    this.el = h(
      'div',
      { class: 'scm' },
      sectionHeader('Source Control', [action('refresh', 'Refresh', () => void this.refresh(), 'scm-refresh')]),
      this.body,
    );
    render(this.body, h('div', { class: 'scm-clean' }, h('span', { class: 'spinner small' })));
    setInterval(() => this.visible && !this.stopped && document.visibilityState === 'visible' && void this.refresh(), POLL_MS);
  }

  /** The view was shown or hidden. */
  shown(visible: boolean): void {
    this.visible = visible;
    if (visible) void this.refresh();
  }

  /** A file changed in the workspace: refresh soon (changes come in bursts). */
  changed(path: string): void {
    if (this.stopped || !(path === WORKSPACE || path.startsWith(WORKSPACE + '/'))) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.refresh(), 300);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** Re-reads every repository's status; calls made while one runs share a second run. */
  refresh(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.pending) {
      this.again = true;
      return this.pending;
    }
    this.pending = this.load().finally(() => {
      this.pending = undefined;
      if (this.again) ((this.again = false), void this.refresh());
    });
    return this.pending;
  }

  private async load(): Promise<void> {
    let paths: string[];
    try {
      paths = await findRepos(this.sid, this.host.sessionRepo());
    } catch (e) {
      return render(this.body, h('div', { class: 'scm-error' }, `Cannot look for repositories: ${(e as Error).message}`));
    }
    const next = new Map<string, RepoView>();
    for (const p of paths) next.set(p, this.repos.get(p) ?? new RepoView(p, this));
    this.repos = next;
    const results = await Promise.all(paths.map((p) => status(this.sid, p).catch((e: Error) => e)));
    results.forEach((st, i) => next.get(paths[i])!.update(st));
    const els = [...next.values()].map((r) => r.el);
    // Re-attaching the same elements would take the keyboard out of a half-typed message.
    const same = els.length === this.body.children.length && els.every((el, i) => this.body.children[i] === el);
    if (!paths.length) render(this.body, this.empty());
    else if (!same) render(this.body, els);
    let n = 0;
    for (const st of results) if (!(st instanceof Error)) n += new Set([...st.staged, ...st.changes].map((c) => c.path)).size;
    this.host.count(n);
    await Promise.all([...this.diffs.values()].map((d) => d.refresh()));
  }

  private empty(): HTMLElement {
    const init = h(
      'button',
      {
        class: 'btn scm-init',
        on: {
          click: async () => {
            init.disabled = true;
            try {
              await git(this.sid, WORKSPACE, ['init', '-q']);
            } catch (e) {
              render(this.body, this.empty(), h('pre', { class: 'scm-error' }, (e as Error).message));
              return;
            }
            await this.refresh();
          },
        },
      },
      'Initialize Repository',
    );
    return h(
      'div',
      { class: 'scm-empty' },
      h('p', null, `No git repository in ${WORKSPACE} or its folders.`),
      init,
      h('p', { class: 'hint' }, `Or clone one in the terminal: git clone <url> ${WORKSPACE}/<name>`),
    );
  }

  diff(spec: DiffSpec): void {
    const key = `diff:${spec.staged ? 'index' : 'tree'}:${spec.repo}/${spec.change.path}`;
    const name = `${spec.change.path.split('/').pop()} (${spec.staged ? 'Index' : spec.change.letter === '?' ? 'Untracked' : 'Working Tree'})`;
    const existing = this.diffs.get(key);
    if (existing) {
      this.host.openDiff(key, name, existing, () => undefined);
      return void existing.refresh();
    }
    const view = new DiffView(this.sid, spec, (p) => this.host.openFile(p));
    this.diffs.set(key, view);
    this.host.openDiff(key, name, view, () => (this.diffs.delete(key), view.dispose()));
  }

  /** The diff tabs' texts (for tests). */
  diffTexts(): { key: string; original: string; modified: string }[] {
    return [...this.diffs.entries()].map(([key, d]) => ({ key, ...(d.texts() ?? { original: '', modified: '' }) }));
  }
}
