import type { Identity } from './options.js';

/** The caps on open connections; `0` means no cap. */
export interface CapsOptions {
  maxConnectionsPerUser: number;
  maxConnectionsPerIp: number;
  maxConnections: number;
}

/**
 * Open connections per user, per client IP and in total, in this process. A connection takes its
 * slots when it opens and gives them back when it closes; the one that would go over a cap is
 * refused, so it is always the newest that is turned away and earlier ones are never touched.
 */
export class ConnectionCaps {
  readonly #options: CapsOptions;
  readonly #perUser = new Map<string, number>();
  readonly #perIp = new Map<string, number>();
  #total = 0;

  constructor(options: CapsOptions) {
    this.#options = options;
  }

  /**
   * True when one more connection from `ip` would be over the IP or total cap: checked before the
   * token is spent, so a full server turns a client away without costing it its token.
   */
  full(ip: string): boolean {
    const { maxConnectionsPerIp, maxConnections } = this.#options;
    return over(this.#total, maxConnections) || over(this.#perIp.get(ip) ?? 0, maxConnectionsPerIp);
  }

  /** Takes the slots of one connection; `null` when it would go over a cap. The release is idempotent. */
  acquire(identity: Identity, ip: string): (() => void) | null {
    const user = `${identity.environmentId}/${identity.userId}`;
    if (this.full(ip) || over(this.#perUser.get(user) ?? 0, this.#options.maxConnectionsPerUser)) return null;
    this.#total++;
    increment(this.#perIp, ip, 1);
    increment(this.#perUser, user, 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#total--;
      increment(this.#perIp, ip, -1);
      increment(this.#perUser, user, -1);
    };
  }
}

function over(count: number, max: number): boolean {
  return max > 0 && count >= max;
}

/** Keeps only keys with open connections, so memory follows the connected clients. */
function increment(counts: Map<string, number>, key: string, by: number): void {
  const count = (counts.get(key) ?? 0) + by;
  if (count > 0) counts.set(key, count);
  else counts.delete(key);
}
