// Reconnect delays. Pure: the random source is a parameter so that tests can pin it.

/** The first step of the backoff window (ms): attempt 0 waits up to this long. */
export const BASE_DELAY = 500;

/** The widest the backoff window gets (ms). */
export const MAX_DELAY = 30_000;

/** The least a client waits after `ERR_RATE_LIMIT_EXCEEDED` (ms): retrying sooner would be refused again. */
export const RATE_LIMIT_DELAY = 5_000;

/** A connection that stayed open this long (ms) was stable: the next loss starts the backoff over. */
export const STABLE_AFTER = 10_000;

/** An attempt with no `ready` after this many milliseconds is given up (and retried). */
export const READY_WITHIN = 30_000;

/**
 * An open connection with no frame for this many milliseconds is taken for half-open (the server
 * sends an idle v2 client a cursor frame at least every 30 s) and replaced.
 */
export const SILENT_AFTER = 75_000;

/**
 * Full-jitter exponential backoff: attempt `n` (0-based) waits a uniform random time in
 * [0, min(MAX_DELAY, BASE_DELAY · 2ⁿ)). Full jitter spreads the clients of a restarted server
 * over the whole window instead of sending them back in waves.
 */
export function backoffDelay(attempt: number, random: () => number = Math.random): number {
  return random() * Math.min(MAX_DELAY, BASE_DELAY * 2 ** attempt);
}

/**
 * The wait after `ERR_RATE_LIMIT_EXCEEDED`: at least RATE_LIMIT_DELAY, plus a jitter whose window
 * is at least as wide again and grows with the attempt like `backoffDelay`'s (up to MAX_DELAY).
 */
export function rateLimitDelay(attempt: number, random: () => number = Math.random): number {
  return RATE_LIMIT_DELAY + random() * Math.min(MAX_DELAY, Math.max(RATE_LIMIT_DELAY, BASE_DELAY * 2 ** attempt));
}
