// The ports view: every port listening in the VM with its preview URL — open it in a new tab
// or in the preview pane, and choose who may open it: private, team or public.

import { api, Port, Visibility } from '../lib/api';
import { notify } from '../lib/dialogs';
import { h, icon, render } from '../lib/dom';
import { action, sectionHeader } from './layout';
import { showMenu } from './menu';

/** Each visibility: its name, icon and who may open the preview URL. */
const VISIBILITY: Record<Visibility, { name: string; icon: string; who: string }> = {
  private: { name: 'Private', icon: 'lock', who: 'only you (and admins), signed in' },
  team: { name: 'Team', icon: 'organization', who: 'anyone signed in to this Mayfly' },
  public: { name: 'Public', icon: 'globe', who: 'anyone with the URL, no sign-in' },
};
const ORDER: Visibility[] = ['private', 'team', 'public'];
const explain = (v: Visibility) => `${VISIBILITY[v].name}: ${VISIBILITY[v].who}.`;

export class PortsView {
  readonly el: HTMLElement;
  private readonly list = h('div', { class: 'ports', tabindex: 0, role: 'list', 'aria-label': 'Ports' });
  private readonly badge = h('span', { class: 'count-badge', hidden: true });
  private readonly ports = new Map<number, Port>();

  constructor(
    section: HTMLElement,
    private readonly sid: string,
    private readonly on: { preview(p: Port): void; count(n: number): void },
  ) {
    this.el = section;
    render(
      section,
      sectionHeader('Ports', [action('refresh', 'Refresh Ports', () => void this.load())], () => section.classList.toggle('collapsed'), this.badge),
      this.list,
    );
    this.draw();
  }

  async load(): Promise<void> {
    try {
      const ports = await api.ports(this.sid);
      this.ports.clear();
      for (const p of ports) this.ports.set(p.port, p);
      this.draw();
    } catch (e) {
      console.warn('ports', e);
    }
  }

  opened(p: Port): void {
    this.ports.set(p.port, p);
    this.draw();
  }

  closed(port: number): void {
    this.ports.delete(port);
    this.draw();
  }

  clear(): void {
    this.ports.clear();
    this.draw();
  }

  /** The visibility menu under the port's button. */
  private choose(p: Port, button: HTMLElement): void {
    const r = button.getBoundingClientRect();
    showMenu(
      r.left,
      r.bottom + 2,
      ORDER.map((v) => ({
        label: `${VISIBILITY[v].name} — ${VISIBILITY[v].who}`,
        icon: v === p.visibility ? 'check' : VISIBILITY[v].icon,
        run: () => void (v !== p.visibility && this.set(p, v)),
      })),
    );
  }

  private async set(p: Port, visibility: Visibility): Promise<void> {
    try {
      this.ports.set(p.port, await api.setVisibility(this.sid, p.port, visibility));
      this.draw();
    } catch (e) {
      notify('error', `Cannot make port ${p.port} ${visibility}: ${(e as Error).message}`);
    }
  }

  private draw(): void {
    const ports = [...this.ports.values()].sort((a, b) => a.port - b.port);
    this.badge.textContent = String(ports.length);
    this.badge.hidden = !ports.length;
    this.on.count(ports.length);
    if (!ports.length) {
      return render(
        this.list,
        h('div', { class: 'ports-empty' }, 'No ports are listening. Start a server in the terminal and its preview URL appears here.'),
      );
    }
    render(
      this.list,
      ports.map((p) => {
        const v = VISIBILITY[p.visibility] ?? VISIBILITY.private;
        const tip = `${explain(p.visibility)} Click to choose:\n${ORDER.map(explain).join('\n')}`;
        const button: HTMLButtonElement = h(
          'button',
          {
            class: `icon-btn visibility ${p.visibility}`,
            title: tip,
            'aria-label': `Visibility: ${v.name}`,
            'aria-haspopup': 'menu',
            on: { click: () => this.choose(p, button) },
          },
          icon(v.icon),
        );
        return h(
          'div',
          { class: 'port-row', role: 'listitem', dataset: { port: String(p.port) } },
          h('span', { class: 'dot ok', title: 'Listening' }),
          h(
            'div',
            { class: 'port-main' },
            h('span', { class: 'port-number mono' }, String(p.port)),
            h('span', { class: `visibility-chip ${p.visibility}`, title: explain(p.visibility) }, v.name),
          ),
          h(
            'div',
            { class: 'port-actions' },
            button,
            action('open-preview', 'Preview in Editor', () => this.on.preview(p)),
            h('a', { class: 'icon-btn', href: p.url, target: '_blank', rel: 'noopener', title: 'Open in Browser', 'aria-label': 'Open in Browser' }, icon('link-external')),
          ),
          h('a', { class: 'port-url', href: p.url, target: '_blank', rel: 'noopener', title: `Open ${p.url} in a new tab` }, p.url.replace(/^https?:\/\//, '').replace(/\/$/, '')),
        );
      }),
    );
  }
}
