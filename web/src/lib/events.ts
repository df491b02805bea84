// A session's event stream over WebSocket, reconnected with backoff while the session lives.
// Each (re)connection replays the state history and open ports first, so handlers must be
// idempotent; file events are live only, so a reconnect should be followed by a rescan.

import { SessionEvent } from './api';
import { Backoff, wsBase } from './backoff';

export type LinkStatus = { kind: 'connecting' } | { kind: 'live' } | { kind: 'retrying'; at: number };

export interface EventHandlers {
  event(ev: SessionEvent): void;
  status(s: LinkStatus): void;
  /** Connected again after a drop (not called for the first connection). */
  reconnected(): void;
  /** The stream could not connect: the page should check whether the session still exists. */
  failed(): void;
}

export class SessionEvents {
  private ws?: WebSocket;
  private timer?: number;
  private stopped = false;
  private everOpen = false;
  private readonly backoff = new Backoff(500, 8000);

  constructor(
    private readonly id: string,
    private readonly on: EventHandlers,
  ) {}

  start(): void {
    this.connect();
  }

  /** Stops for good (the session ended). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.ws?.close();
  }

  /** For tests and the "reconnect now" button: drop the socket as a network failure would. */
  drop(): void {
    this.ws?.close();
  }

  retryNow(): void {
    if (this.stopped || this.ws) return;
    clearTimeout(this.timer);
    this.connect();
  }

  private connect(): void {
    this.on.status({ kind: 'connecting' });
    const ws = new WebSocket(`${wsBase()}/api/v1/sessions/${encodeURIComponent(this.id)}/events`);
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.backoff.reset();
      this.on.status({ kind: 'live' });
      if (this.everOpen) this.on.reconnected();
      this.everOpen = true;
    };
    ws.onmessage = (m) => {
      try {
        this.on.event(JSON.parse(m.data as string) as SessionEvent);
      } catch (e) {
        console.warn('bad event', e);
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = undefined;
      if (this.stopped) return;
      if (!opened) this.on.failed();
      const delay = this.backoff.next();
      this.on.status({ kind: 'retrying', at: Date.now() + delay });
      this.timer = window.setTimeout(() => this.connect(), delay);
    };
  }
}
