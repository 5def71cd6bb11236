/**
 * Connection attempts per key (client IP) in a sliding window: at most `max` accepted attempts in
 * any `timeWindow` milliseconds. Refused attempts do not count, so a client that waits gets in.
 */
export class SlidingWindowLimiter {
  readonly #max: number;
  readonly #timeWindow: number;
  readonly #hits = new Map<string, number[]>();
  readonly #sweeper: NodeJS.Timeout;

  constructor(max: number, timeWindow: number) {
    this.#max = max;
    this.#timeWindow = timeWindow;
    // Forget clients whose attempts have all left the window, so memory follows active clients.
    this.#sweeper = setInterval(() => this.#sweep(), timeWindow).unref();
  }

  /** Records an attempt by `key` at `now`; false when it is over the limit. */
  allow(key: string, now = Date.now()): boolean {
    let hits = this.#hits.get(key);
    if (!hits) this.#hits.set(key, (hits = []));
    const cutoff = now - this.#timeWindow;
    let expired = 0;
    while (expired < hits.length && (hits[expired] as number) <= cutoff) expired++;
    if (expired) hits.splice(0, expired);
    if (hits.length >= this.#max) return false;
    hits.push(now);
    return true;
  }

  close(): void {
    clearInterval(this.#sweeper);
    this.#hits.clear();
  }

  #sweep(now = Date.now()): void {
    for (const [key, hits] of this.#hits) {
      if ((hits[hits.length - 1] ?? 0) <= now - this.#timeWindow) this.#hits.delete(key);
    }
  }
}
