// `app.taskEvents.health()`: whether this instance can serve events now, for a readiness probe.
// Built on the events the parts emit (the LISTEN connection's state, each read) and one `SELECT 1`.
import type { EventEmitter } from 'node:events';
import type pg from 'pg';
import { withDeadline } from './deadline.js';
import { secondsSince, subscribe, type ReadDetail } from './signals.js';

/** What `app.taskEvents.health()` answers. */
export interface TaskEventsHealth {
  /** True when `reasons` is empty. */
  ok: boolean;
  /**
   * What is wrong, one line each: `database unreachable`, `listener not connected`, `reads falling
   * behind: …` (no successful read for a while, or the last read found old events), `shutting down`.
   */
  reasons: string[];
  /** The LISTEN connection is up. */
  listenerConnected: boolean;
  /** When the last read of the outbox succeeded (ISO 8601); null before the first. */
  lastReadAt: string | null;
  secondsSinceLastRead: number | null;
  /** Seconds from the creation of the oldest event of the last read to that read; 0 when it found none. */
  readLagSeconds: number;
  /** Whether a `SELECT 1` on the plugin's pool answered within {@link DATABASE_DEADLINE} ms. */
  database: 'reachable' | 'unreachable';
}

/**
 * Reads are behind when none has succeeded for this many poll intervals: the poll alone reads once
 * an interval, so a healthy listener is never more than one behind (a long read of a large backlog
 * may take a few).
 */
export const STALE_READ_INTERVALS = 5;

/**
 * Reads are behind when the oldest event of the last read was created this many seconds before it.
 * A healthy read comes within about 0.2 s of a commit; what is older comes from a transaction that
 * ran that long, or from a listener that could not read.
 */
export const READ_LAG_LIMIT = 30;

/** A `SELECT 1` slower than this (milliseconds) counts as an unreachable database. */
export const DATABASE_DEADLINE = 2000;

/** What the health check watches. */
export interface HealthSources {
  /** `app.taskEvents.events`. */
  events: EventEmitter;
  pool: pg.Pool;
  pollInterval: number;
}

/** The listener's state as its events tell it, and the database check. */
export class HealthWatch {
  readonly #sources: HealthSources;
  readonly #startedAt = Date.now();
  #listenerConnected = false;
  #lastReadAt: number | null = null;
  /** Of the last complete read, and the largest so far of the read under way. */
  #readLag = 0;
  #readingLag = 0;
  #shuttingDown = false;
  /** A check under way: probes that come meanwhile share it. */
  #database: Promise<boolean> | null = null;
  readonly #unsubscribe: () => void;

  constructor(sources: HealthSources) {
    this.#sources = sources;
    this.#unsubscribe = subscribe(sources.events, {
      connected: () => (this.#listenerConnected = true),
      reconnecting: () => (this.#listenerConnected = false),
      read: ({ oldest }: ReadDetail) => (this.#readingLag = Math.max(this.#readingLag, secondsSince(oldest))),
      'caught-up': () => {
        this.#lastReadAt = Date.now();
        this.#readLag = this.#readingLag;
        this.#readingLag = 0;
      },
    });
  }

  /** The instance is closing: not ready from now on. */
  shutdown(): void {
    this.#shuttingDown = true;
    this.#listenerConnected = false;
    this.#unsubscribe();
  }

  async check(): Promise<TaskEventsHealth> {
    const reachable = await this.#checkDatabase();
    const now = Date.now();
    const reasons: string[] = [];
    if (this.#shuttingDown) reasons.push('shutting down');
    if (!reachable) reasons.push('database unreachable');
    if (!this.#listenerConnected && !this.#shuttingDown) reasons.push('listener not connected');
    const sinceRead = (now - (this.#lastReadAt ?? this.#startedAt)) / 1000;
    if (!this.#shuttingDown && sinceRead * 1000 > STALE_READ_INTERVALS * this.#sources.pollInterval) {
      reasons.push(`reads falling behind: no successful read for ${sinceRead.toFixed(1)} s`);
    }
    if (this.#readLag > READ_LAG_LIMIT) reasons.push(`reads falling behind: the last read was ${this.#readLag.toFixed(1)} s behind`);
    return {
      ok: reasons.length === 0,
      reasons,
      listenerConnected: this.#listenerConnected,
      lastReadAt: this.#lastReadAt === null ? null : new Date(this.#lastReadAt).toISOString(),
      secondsSinceLastRead: this.#lastReadAt === null ? null : sinceRead,
      readLagSeconds: this.#readLag,
      database: reachable ? 'reachable' : 'unreachable',
    };
  }

  #checkDatabase(): Promise<boolean> {
    this.#database ??= withDeadline(this.#sources.pool.query('SELECT 1'), DATABASE_DEADLINE, 'SELECT 1')
      .then(() => true, () => false)
      .finally(() => {
        this.#database = null;
      });
    return this.#database;
  }
}
