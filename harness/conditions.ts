// Waiting for a condition over recorded state, with a deadline: the owner of the state calls
// check() whenever it changes, and each pending wait re-evaluates its condition then.

/** Pending waits over one object's state. */
export class Conditions {
  readonly #waiters = new Set<() => void>();

  /**
   * Resolves when `condition` holds; rejects after `timeout` ms with `what` in the message, and
   * what `seen()` says of the state then.
   */
  waitFor(condition: () => boolean, what: string, timeout = 10_000, seen: () => string = () => ''): Promise<void> {
    if (condition()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!condition()) return;
        clearTimeout(timer);
        this.#waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        const detail = seen();
        reject(new Error(`timed out after ${timeout} ms waiting for ${what}${detail ? `; ${detail}` : ''}`));
      }, timeout);
      this.#waiters.add(check);
    });
  }

  /** Re-evaluates every pending condition (call after each change of the state). */
  check(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }
}
