import type pg from 'pg';
import { HostErrors } from './errors.js';
import { checkout } from './pool.js';
import type { TokenStore } from './tokens.js';

/** What the pruner needs. */
export interface RetentionOptions {
  pool: pg.Pool;
  /** Its expired tokens are deleted in the same rounds. */
  tokens: TokenStore;
  /** Outbox rows older than this many milliseconds are deleted. */
  outboxRetention: number;
  /** Milliseconds between two pruning rounds. */
  pruneInterval: number;
  /** A failure of a round (it is tried again next round). */
  onWarning: (error: Error) => void;
}

/** Rows per DELETE: each is its own short transaction, so writers are never held up. */
const PRUNE_BATCH = 1000;

// Marks the oldest transaction still running; see migrations/004.do.prune-horizon.sql.
const MARK_HORIZON = `
  INSERT INTO task_events.prune_horizon (oldest_running) VALUES (pg_snapshot_xmin(pg_current_snapshot()))`;

// The newest mark older than the retention: rows below it committed longer ago than that.
const HORIZON = `
  SELECT max(oldest_running) FROM task_events.prune_horizon
  WHERE taken_at < now() - make_interval(secs => $1::double precision / 1000)`;

// By row address: the outbox's one index is on xid (an index on id would slow every writer).
const PRUNE_OUTBOX = `
  DELETE FROM task_events.outbox WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM task_events.outbox WHERE xid < (${HORIZON})
    ORDER BY xid LIMIT ${PRUNE_BATCH}))`;

// Marks older than the one in use will never be needed again.
const PRUNE_MARKS = `
  DELETE FROM task_events.prune_horizon
  WHERE taken_at < (SELECT max(taken_at) FROM task_events.prune_horizon
                    WHERE taken_at < now() - make_interval(secs => $1::double precision / 1000))`;

/**
 * Deletes outbox rows committed longer than `outboxRetention` ago, and expired tokens, in the
 * background. With several instances on one
 * database, one prunes at a time (a session advisory lock); the others skip that round.
 */
export class Retention {
  readonly #options: RetentionOptions;
  readonly #timer: NodeJS.Timeout;
  #running: Promise<unknown> | null = null;
  #closing = false;

  constructor(options: RetentionOptions) {
    this.#options = options;
    this.#timer = setInterval(() => {
      if (this.#running) return;
      this.#running = this.prune()
        .catch((error) => options.onWarning(new HostErrors.PRUNE({ cause: error })))
        .finally(() => {
          this.#running = null;
        });
    }, options.pruneInterval).unref();
  }

  /** One round; resolves to what was deleted, or `null` when another instance holds the lock. */
  async prune(): Promise<{ outbox: number; tokens: number } | null> {
    const client = await checkout(this.#options.pool);
    let failure: Error | undefined;
    try {
      const { rows } = await client.query<{ locked: boolean }>(`SELECT pg_try_advisory_lock(hashtext('task_events.prune')) AS locked`);
      if (!rows[0]?.locked) return null;
      try {
        const retention = [this.#options.outboxRetention];
        await client.query(MARK_HORIZON);
        const outbox = await this.#deleteInBatches(client, PRUNE_OUTBOX, retention);
        await client.query(PRUNE_MARKS, retention);
        return { outbox, tokens: await this.#options.tokens.prune() };
      } finally {
        await client.query(`SELECT pg_advisory_unlock(hashtext('task_events.prune'))`);
      }
    } catch (error) {
      failure = error as Error;
      throw error;
    } finally {
      client.giveBack(failure);
    }
  }

  async close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#timer);
    await this.#running;
  }

  async #deleteInBatches(client: pg.PoolClient, sql: string, params: unknown[]): Promise<number> {
    let deleted = 0;
    for (;;) {
      const { rowCount } = await client.query(sql, params);
      deleted += rowCount ?? 0;
      if ((rowCount ?? 0) < PRUNE_BATCH || this.#closing) return deleted;
    }
  }
}
