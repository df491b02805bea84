// Terminals: xterm.js over the PTY WebSocket. Each terminal has an id chosen here and kept in
// sessionStorage, so a page reload or a dropped connection re-attaches to the same shell in the
// VM, whose scrollback the guest replays. A dropped socket reconnects with backoff and says so.

import { FitAddon } from '@xterm/addon-fit';
import { WebLinksAddon } from '@xterm/addon-web-links';
import { Terminal } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';
import { Backoff, wsBase } from '../lib/backoff';
import { h, icon, render } from '../lib/dom';

export type TermState = 'connecting' | 'live' | 'retrying' | 'exited' | 'ended';

const theme = {
  background: '#181818', foreground: '#cccccc', cursor: '#aeafad', selectionBackground: '#264f78',
  black: '#000000', red: '#cd3131', green: '#0dbc79', yellow: '#e5e510', blue: '#2472c8', magenta: '#bc3fbc',
  cyan: '#11a8cd', white: '#e5e5e5', brightBlack: '#666666', brightRed: '#f14c4c', brightGreen: '#23d18b',
  brightYellow: '#f5f543', brightBlue: '#3b8eea', brightMagenta: '#d670d6', brightCyan: '#29b8db', brightWhite: '#e5e5e5',
};

export function newTerminalId(): string {
  return 't' + Array.from(crypto.getRandomValues(new Uint8Array(10)), (b) => (b % 36).toString(36)).join('');
}

export class TerminalView {
  readonly el: HTMLElement;
  private readonly screen = h('div', { class: 'term-screen' });
  private readonly overlay = h('div', { class: 'term-overlay', hidden: true });
  private readonly term: Terminal;
  private readonly fit = new FitAddon();
  private ws?: WebSocket;
  private readonly backoff = new Backoff(400, 8000);
  private retryTimer?: number;
  private countdown?: number;
  private opened = false;
  state: TermState = 'connecting';

  constructor(
    private readonly sid: string,
    public id: string,
    readonly title: string,
    private readonly on: { state(): void; restart(view: TerminalView): void; failed(): void },
  ) {
    this.el = h('div', { class: 'term' }, this.screen, this.overlay);
    this.term = new Terminal({
      fontFamily: "'JetBrains Mono', 'DejaVu Sans Mono', monospace",
      fontSize: 13,
      lineHeight: 1.2,
      scrollback: 5000,
      cursorBlink: true,
      allowProposedApi: true,
      theme,
    });
    this.term.loadAddon(this.fit);
    this.term.loadAddon(new WebLinksAddon());
    const enc = new TextEncoder();
    this.term.onData((d) => {
      if (this.state === 'exited' && d === '\r') return this.on.restart(this);
      if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(enc.encode(d));
    });
    this.term.onBinary((d) => {
      if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(Uint8Array.from(d, (c) => c.charCodeAt(0)));
    });
    this.term.onResize(({ cols, rows }) => {
      if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: 'resize', cols, rows }));
    });
  }

  /** Opens the terminal in its element (once it is in the page and visible) and connects. */
  start(): void {
    if (this.opened) return;
    this.opened = true;
    this.term.open(this.screen);
    this.resize();
    this.connect();
  }

  resize(): void {
    if (!this.opened || !this.el.offsetParent) return;
    try {
      this.fit.fit();
    } catch {
      // not laid out yet
    }
  }

  focus(): void {
    this.term.focus();
  }

  private setState(s: TermState): void {
    this.state = s;
    this.el.dataset.state = s;
    this.el.classList.toggle('disconnected', s === 'retrying' || s === 'ended');
    this.on.state();
  }

  connect(): void {
    clearTimeout(this.retryTimer);
    clearInterval(this.countdown);
    this.setState('connecting');
    const q = new URLSearchParams({ cols: String(this.term.cols), rows: String(this.term.rows), terminal: this.id });
    const ws = new WebSocket(`${wsBase()}/api/v1/sessions/${encodeURIComponent(this.sid)}/pty?${q}`);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    let attached = false;
    ws.onopen = () => {
      attached = true;
      this.backoff.reset();
      // The guest replays the terminal's scrollback on every attach: start from a clean screen.
      this.term.reset();
      this.overlay.hidden = true;
      this.setState('live');
    };
    ws.onmessage = (m) => {
      if (typeof m.data !== 'string') return this.term.write(new Uint8Array(m.data as ArrayBuffer));
      const n = JSON.parse(m.data) as { type: string; code?: number | null; signal?: number; message?: string };
      if (n.type === 'exit') {
        const how = n.signal ? `was killed by signal ${n.signal}` : `exited with code ${n.code ?? '?'}`;
        this.term.write(`\r\n\x1b[2m[The process ${how}. Press Enter to start a new shell.]\x1b[0m\r\n`);
        this.setState('exited');
      } else if (n.type === 'error') {
        this.term.write(`\r\n\x1b[31m[${n.message}]\x1b[0m\r\n`);
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = undefined;
      if (this.state === 'exited' || this.state === 'ended') return;
      if (!attached) this.on.failed();
      this.scheduleRetry();
    };
  }

  private scheduleRetry(): void {
    const delay = this.backoff.next();
    const at = Date.now() + delay;
    this.setState('retrying');
    const draw = () => {
      const secs = Math.max(0, Math.ceil((at - Date.now()) / 1000));
      render(
        this.overlay,
        h('span', { class: 'spinner' }),
        h('span', null, `Connection to the terminal lost. Reconnecting${secs ? ` in ${secs} s` : ''}…`),
        h('button', { class: 'btn secondary', on: { click: () => this.connect() } }, 'Reconnect now'),
      );
    };
    draw();
    this.overlay.hidden = false;
    this.countdown = window.setInterval(draw, 500);
    this.retryTimer = window.setTimeout(() => this.connect(), delay);
  }

  /** The session ended: stop reconnecting, keep the output readable. */
  end(reason: string): void {
    clearTimeout(this.retryTimer);
    clearInterval(this.countdown);
    this.setState('ended');
    this.ws?.close();
    render(this.overlay, icon('debug-disconnect'), h('span', null, reason));
    this.overlay.hidden = false;
    this.term.options.disableStdin = true;
  }

  /** Drops the socket as a network failure would (tests, and "reconnect" after sleep). */
  drop(): void {
    this.ws?.close();
  }

  /** Re-attaches as a new shell (after the previous one exited). */
  restart(id: string): void {
    this.id = id;
    this.term.reset();
    this.connect();
  }

  /** Milliseconds from a keystroke to its echo coming back from the VM (for tests). */
  echoLatency(key = 'z'): Promise<number> {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error('not connected'));
    return new Promise((resolve) => {
      const t0 = performance.now();
      const seen = (m: MessageEvent) => {
        if (typeof m.data === 'string' || !new TextDecoder().decode(m.data as ArrayBuffer).includes(key)) return;
        ws.removeEventListener('message', seen);
        resolve(performance.now() - t0);
      };
      ws.addEventListener('message', seen);
      this.term.input(key);
    });
  }

  /** Everything in the terminal's buffer, scrollback included. */
  text(): string {
    const b = this.term.buffer.active;
    const lines: string[] = [];
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i)?.translateToString(true) ?? '');
    return lines.join('\n');
  }

  dispose(): void {
    clearTimeout(this.retryTimer);
    clearInterval(this.countdown);
    this.state = 'ended';
    this.ws?.close();
    this.term.dispose();
    this.el.remove();
  }
}
