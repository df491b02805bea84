// The bottom panel: one or more terminals as tabs, their ids remembered per session in
// sessionStorage (so a reload re-attaches every one of them), resized with the panel.

import { h, icon, render } from '../lib/dom';
import { action } from './layout';
import { newTerminalId, TerminalView } from './terminal';

/** The persistent terminal the coding agent's `shell` tool types into. */
const AGENT_TERMINAL = 'agent';

interface Saved {
  ids: string[];
  active: number;
}

export class TerminalPanel {
  readonly el: HTMLElement;
  private readonly list = h('div', { class: 'term-tabs', role: 'tablist' });
  private readonly body = h('div', { class: 'panel-body' });
  private readonly views: TerminalView[] = [];
  private active?: TerminalView;
  private counter = 0;
  private readonly key: string;
  private ended?: string;

  constructor(
    private readonly sid: string,
    private readonly on: { state(): void; failed(): void; hide(): void; maximize(): void },
  ) {
    this.key = `mayfly:terminals:${sid}`;
    this.el = h(
      'div',
      { class: 'panel-inner' },
      h(
        'div',
        { class: 'panel-header' },
        h('div', { class: 'panel-title active' }, 'Terminal'),
        h('div', { class: 'panel-spacer' }),
        this.list,
        h(
          'div',
          { class: 'actions' },
          action('add', 'New Terminal (Ctrl+Shift+`)', () => this.create(), 'new-terminal'),
          action('trash', 'Kill Terminal', () => this.active && this.close(this.active)),
          action('chevron-up', 'Maximize Panel', () => this.on.maximize()),
          action('close', 'Hide Panel (Ctrl+`)', () => this.on.hide()),
        ),
      ),
      this.body,
    );
    new ResizeObserver(() => this.active?.resize()).observe(this.body);
  }

  /** Re-attaches the terminals this tab had before (or opens a first one). */
  restore(): void {
    let saved: Saved = { ids: [], active: 0 };
    try {
      saved = JSON.parse(sessionStorage.getItem(this.key) ?? '') as Saved;
    } catch {
      // nothing saved yet
    }
    const ids = saved.ids?.filter((id) => /^[A-Za-z0-9._-]{1,64}$/.test(id)) ?? [];
    if (!ids.length) return void this.create();
    for (const id of ids) this.add(id);
    this.show(this.views[Math.min(saved.active ?? 0, this.views.length - 1)]);
  }

  private save(): void {
    const saved: Saved = { ids: this.views.map((v) => v.id), active: this.active ? this.views.indexOf(this.active) : 0 };
    sessionStorage.setItem(this.key, JSON.stringify(saved));
  }

  private add(id: string): TerminalView {
    const view = new TerminalView(this.sid, id, id === AGENT_TERMINAL ? 'agent' : `bash ${++this.counter}`, {
      state: () => (this.drawTabs(), this.on.state()),
      restart: (v) => (v.restart(newTerminalId()), this.save()),
      failed: () => this.on.failed(),
    });
    this.views.push(view);
    this.body.append(view.el);
    return view;
  }

  /** Shows the agent's terminal (attaching to it the first time). */
  openAgent(): void {
    if (this.ended) return;
    const v = this.views.find((x) => x.id === AGENT_TERMINAL) ?? this.add(AGENT_TERMINAL);
    this.show(v);
    this.save();
  }

  create(): void {
    if (this.ended) return;
    const v = this.add(newTerminalId());
    this.show(v);
    this.save();
  }

  show(v: TerminalView): void {
    this.active = v;
    for (const x of this.views) x.el.hidden = x !== v;
    v.start();
    requestAnimationFrame(() => {
      v.resize();
      v.focus();
    });
    this.drawTabs();
    this.save();
  }

  close(v: TerminalView): void {
    // The shell stays in the VM until the guest's idle reaper ends it; nobody can attach again.
    const i = this.views.indexOf(v);
    this.views.splice(i, 1);
    v.dispose();
    if (this.active === v) {
      this.active = undefined;
      const next = this.views[Math.min(i, this.views.length - 1)];
      if (next) this.show(next);
    }
    this.drawTabs();
    this.save();
    this.on.state();
  }

  focus(): void {
    if (!this.active) this.create();
    else this.active.focus();
  }

  resize(): void {
    this.active?.resize();
  }

  /** Worst connection state over all terminals, for the status bar. */
  states(): TerminalView['state'][] {
    return this.views.map((v) => v.state);
  }

  end(reason: string): void {
    this.ended = reason;
    for (const v of this.views) v.end(reason);
  }

  dropAll(): void {
    for (const v of this.views) v.drop();
  }

  /** The buffer of terminal `i` (default: the active one). */
  text(i = this.activeIndex): string {
    return this.views[i]?.text() ?? '';
  }

  echoLatency(): Promise<number> {
    return this.active ? this.active.echoLatency() : Promise.reject(new Error('no terminal'));
  }

  get activeIndex(): number {
    return this.active ? this.views.indexOf(this.active) : -1;
  }

  private drawTabs(): void {
    render(
      this.list,
      this.views.map((v) =>
        h(
          'button',
          {
            class: `term-tab${v === this.active ? ' active' : ''} ${v.state}`,
            role: 'tab',
            title: `${v.title} (${v.id})`,
            on: { click: () => this.show(v) },
          },
          icon('terminal'),
          h('span', null, v.title),
          v.state === 'retrying' || v.state === 'connecting' ? h('span', { class: 'spinner small' }) : null,
        ),
      ),
    );
  }
}
