// Reconnect delays: exponential from `min` to `max`, with ±20 % jitter so many tabs do not
// reconnect in lockstep after a server restart.

export class Backoff {
  private attempt = 0;
  constructor(private readonly min = 500, private readonly max = 10_000) {}

  next(): number {
    const d = Math.min(this.max, this.min * 2 ** this.attempt);
    this.attempt++;
    return Math.round(d * (0.8 + Math.random() * 0.4));
  }

  reset(): void {
    this.attempt = 0;
  }

  get attempts(): number {
    return this.attempt;
  }
}

/** The page's origin as a WebSocket base (`ws://host:port`). */
export function wsBase(): string {
  return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host;
}
