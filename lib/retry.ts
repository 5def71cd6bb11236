/** The first retry waits up to this many milliseconds; each later one up to twice as long. */
const RETRY_BASE = 100;
/** No retry waits longer than this. */
const RETRY_CAP = 5000;

/**
 * Capped exponential backoff with full jitter, for every retry loop of the plugin (outbox reads,
 * the LISTEN connection): the n-th retry waits up to 100·2ⁿ ms, at most 5 s.
 */
export function retryDelay(attempt: number): number {
  return Math.round(Math.random() * Math.min(RETRY_CAP, RETRY_BASE * 2 ** Math.min(attempt, 16)));
}
