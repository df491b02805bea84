// The repository line under the title bar: while the session's repository clones, git's latest
// progress line; then that it is ready, or that the clone failed with git's own message (the
// session stays usable). Dismissable; it shows again when the repository's state changes.

import type { Session } from '../lib/api';
import { h, icon, render } from '../lib/dom';

type Repo = NonNullable<Session['repo']>;

export class RepoBanner {
  readonly el = h('div', { class: 'repo-banner', role: 'status', hidden: true });
  private shown?: Repo['state'];
  private dismissedState?: Repo['state'];

  /** Shows `repo` (from the session or a `repo` event). */
  update(repo?: Repo): void {
    if (!repo?.state) return;
    if (repo.state !== this.shown) this.dismissedState = undefined;
    this.shown = repo.state;
    this.el.dataset.state = repo.state;
    this.el.hidden = this.dismissedState === repo.state;
    const where = `${repo.url ?? 'the repository'} → ${repo.path ?? '/root'}`;
    const dismiss = h('button', { class: 'icon-btn', title: 'Dismiss', 'aria-label': 'Dismiss', on: { click: () => this.dismiss() } }, icon('close'));
    if (repo.state === 'cloning') {
      render(this.el, h('div', { class: 'spinner small' }), h('strong', null, 'Cloning'), h('span', { class: 'where' }, where), h('span', { class: 'progress mono' }, repo.message ?? ''), dismiss);
    } else if (repo.state === 'ready') {
      render(this.el, icon('check'), h('strong', null, 'Repository ready'), h('span', { class: 'where' }, where), dismiss);
    } else {
      render(
        this.el,
        icon('error'),
        h('div', { class: 'text' }, h('strong', null, 'Clone failed'), h('span', { class: 'where' }, `${where} — the session is usable without it`), h('pre', { class: 'message mono' }, repo.message ?? '')),
        dismiss,
      );
    }
  }

  private dismiss(): void {
    this.dismissedState = this.shown;
    this.el.hidden = true;
  }
}
