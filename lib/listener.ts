import { EventEmitter } from 'node:events';
import type pg from 'pg';
import pgListen from 'pg-listen';
import type { TaskEvent } from './buffer.js';
import { checkout } from './pool.js';

/**
 * The channel the capture triggers notify (only the first writer after each read: the doorbell);
 * the payload is empty, the outbox holds the events.
 */
export const CHANNEL = 'task_events';

/** What the listener needs; it knows nothing of sockets. */
export interface ListenerOptions {
  pool: pg.Pool;
  /** For the LISTEN connection, which lives outside the pool. */
  connection: pg.ClientConfig;
  /** Milliseconds between reads when nothing woke the listener. */
  pollInterval: number;
  /** Rows per FETCH. */
  readBatchSize: number;
  /** Receives the events of each read, in outbox order; called once per fetched batch. */
  onEvents: (events: TaskEvent[]) => void;
}

const RETRY_BASE = 100;
/**
 * Milliseconds before reading again while other transactions still hold the outbox: 100, and
 * {@link DOORBELL_CHECK} once a follow-up found nothing new (a long transaction stays open).
 */
export const FOLLOW_UP_DELAY = 100;
/**
 * Milliseconds between looks at the doorbell: when a writer took it since the last read but no
 * NOTIFY came (the ringer is still open, or rolled back), read anyway. This bounds how late a
 * read can be while writes go on, so events stay within messageTime + 250 ms.
 */
export const DOORBELL_CHECK = 200;
const RETRY_CAP = 5000;

/** Capped exponential backoff with full jitter: the n-th retry waits up to 100·2ⁿ ms, at most 5 s. */
export function retryDelay(attempt: number): number {
  return Math.round(Math.random() * Math.min(RETRY_CAP, RETRY_BASE * 2 ** Math.min(attempt, 16)));
}

// Rows committed after `$1` (a snapshot): their transaction had not started by then (xid >= xmax)
// or was still running (xid in xip). Every other row was visible to that snapshot or never
// commits. Read inside a REPEATABLE READ transaction whose snapshot becomes the next `$1`, the
// reads tile the outbox's commit history with no gap and no overlap, whatever order concurrent
// transactions commit in.
const NEW_ROWS = `
  SELECT id, environment_id, task_id, object_class_id, event,
         to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"') AS timestamp
  FROM (
    -- sorted first, formatted as fetched: the first rows of a 100k-row read leave early
    SELECT id, environment_id, task_id, object_class_id, event, created_at
    FROM task_events.outbox
    WHERE xid >= pg_snapshot_xmax($1::pg_snapshot)
       OR xid = ANY (ARRAY(SELECT pg_snapshot_xip($1::pg_snapshot)))
    ORDER BY id
    OFFSET 0
  ) AS new_rows`;

// Before each read (one round trip, task_events.before_read()): when other transactions hold the
// outbox (they have written events and not committed yet), a follow-up read comes soon and the
// doorbell stays as it is (under a steady write load nobody notifies; the follow-ups read). When
// nobody holds it: re-arm the doorbell (the next writer to take its first value notifies), look
// again, then take the snapshot. Arm, look, snapshot, in this order: a writer the snapshot misses
// either held the outbox when we looked (so we read again soon) or wrote after the arm (so it, or
// an earlier writer since the arm, rings, and the doorbell look catches a ringer that is slow or
// rolled back). See migrations/005.do.cheap-writes.sql.
const BEFORE_READ = 'SELECT task_events.before_read() AS writing';

/** The read transaction's work_mem (the server's default is 4MB): a 100k-row statement's events are sorted in memory. */
const READ_WORK_MEM = '64MB';

/** A snapshot as pg_current_snapshot() writes it (xmin:xmax:xip,…): safe to put in SQL text. */
const SNAPSHOT = /^\d+:\d+:(\d+(,\d+)*)?$/;

/**
 * Opens the read in one round trip: the transaction, its snapshot (the next read's start) and the
 * cursor over the rows committed since `since`, with its first batch.
 */
function openRead(since: string, batchSize: number): string {
  if (!SNAPSHOT.test(since)) throw new Error(`task events: not a snapshot: ${since}`);
  return `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
    SET LOCAL work_mem = '${READ_WORK_MEM}';
    SELECT pg_current_snapshot()::text AS snapshot;
    DECLARE task_events_new_rows NO SCROLL CURSOR FOR ${NEW_ROWS.replaceAll('$1', `'${since}'`)};
    FETCH ${batchSize} FROM task_events_new_rows`;
}

/** A row of NEW_ROWS, fetched as an array (no object per row): id, environment, task, class, event, timestamp. */
type OutboxRow = [id: string, environmentId: string, taskId: string, objectClassId: string | null, event: string, timestamp: string];

function toEvent([id, environmentId, taskId, objectClassId, event, timestamp]: OutboxRow): TaskEvent {
  const classId = objectClassId === null ? null : Number(objectClassId);
  return {
    id: Number(id),
    environmentId: Number(environmentId),
    objectClassId: classId,
    timestamp,
    // timestamps come from to_char (nothing to escape); the event name is quoted as JSON, since
    // the outbox's owner could write any text there by hand
    json: `{"task_id":${Number(taskId)},"object_class_id":${classId},"event":${JSON.stringify(event)},"timestamp":"${timestamp}"}`,
  };
}

type Subscriber = ReturnType<typeof pgListen.default>;

/**
 * Reads new outbox rows and hands them on, in order, once each. A NOTIFY on {@link CHANNEL}
 * wakes it; so does every (re)connect of the LISTEN connection, a follow-up read
 * {@link FOLLOW_UP_DELAY} ms after a read that saw other transactions writing the outbox, and a
 * timer, so an event is late by at most `pollInterval` when its wake-up was lost (a writer that
 * rang the doorbell and then rolled back). Nothing here gives up: reads and the LISTEN
 * connection retry forever (capped, jittered) until {@link Listener.close}.
 *
 * Emits `connected` (LISTEN is active), `reconnecting` (attempt), `caught-up` ({ events }) after
 * each read, and `warning` (error) for failures it will retry.
 */
export class Listener extends EventEmitter {
  readonly #options: ListenerOptions;
  #snapshot: string | null = null;
  /** Ids handed on by a read that failed half-way: the retry must not hand them on again. */
  #handedOn = new Set<number>();
  #reading: Promise<void> | null = null;
  #readAgain = false;
  #readFailures = 0;
  #closing = false;
  #subscriber: Subscriber | null = null;
  /** A connect of the LISTEN connection under way; close() waits for it. */
  #subscribing: Promise<void> | null = null;
  #pollTimer: NodeJS.Timeout | null = null;
  #readRetryTimer: NodeJS.Timeout | null = null;
  #followUpTimer: NodeJS.Timeout | null = null;
  /** Follow-up reads in a row that found nothing new (the delay doubles with each). */
  #idleFollowUps = 0;
  #doorbellTimer: NodeJS.Timeout | null = null;
  #subscribeTimer: NodeJS.Timeout | null = null;

  constructor(options: ListenerOptions) {
    super();
    this.#options = options;
  }

  /**
   * Fixes the starting point (nothing committed before it is read) and starts listening.
   * Rejects when the database cannot be reached now; after that, failures are retried.
   */
  async start(): Promise<void> {
    const { rows } = await this.#options.pool.query<{ snapshot: string }>('SELECT pg_current_snapshot()::text AS snapshot');
    this.#snapshot = (rows[0] as { snapshot: string }).snapshot;
    this.#pollTimer = setInterval(() => this.wake(), this.#options.pollInterval).unref();
    this.#doorbellTimer = setInterval(() => void this.#checkDoorbell(), DOORBELL_CHECK).unref();
    this.#startSubscribe(0);
  }

  /**
   * The outbox position now: events with a larger id were created after this call. A handshake
   * reads it so that a new connection gets exactly the events created after it opened.
   */
  async position(): Promise<number> {
    const { rows } = await this.#options.pool.query<{ position: string }>(
      'SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS position FROM task_events.outbox_id_seq',
    );
    return Number((rows[0] as { position: string }).position);
  }

  /** Asks for a read; reads never overlap, and wake-ups during one fold into one more. */
  wake(): void {
    if (this.#closing || this.#snapshot === null) return;
    if (this.#reading) {
      this.#readAgain = true;
      return;
    }
    this.#reading = this.#readUntilQuiet().finally(() => {
      this.#reading = null;
    });
  }

  /** Stops listening and reading; waits for a read under way. */
  async close(): Promise<void> {
    this.#closing = true;
    if (this.#pollTimer) clearInterval(this.#pollTimer);
    if (this.#readRetryTimer) clearTimeout(this.#readRetryTimer);
    if (this.#followUpTimer) clearTimeout(this.#followUpTimer);
    if (this.#doorbellTimer) clearInterval(this.#doorbellTimer);
    if (this.#subscribeTimer) clearTimeout(this.#subscribeTimer);
    await this.#reading;
    await this.#subscribing;
    const subscriber = this.#subscriber;
    this.#subscriber = null;
    await subscriber?.close().catch(() => {});
  }

  async #readUntilQuiet(): Promise<void> {
    do {
      this.#readAgain = false;
      try {
        const { count, writing } = await this.#read();
        this.#readFailures = 0;
        this.emit('caught-up', { events: count });
        this.#idleFollowUps = count > 0 ? 0 : this.#idleFollowUps + 1;
        if (writing) this.#followUp();
        else this.#idleFollowUps = 0;
      } catch (error) {
        this.emit('warning', new Error('task events: reading the outbox failed; retrying', { cause: error }));
        if (this.#closing) return;
        this.#readRetryTimer = setTimeout(() => this.wake(), retryDelay(++this.#readFailures));
        return;
      }
    } while (this.#readAgain && !this.#closing);
  }

  /** Reads again shortly: transactions that held the outbox during the last read may commit unrung. */
  #followUp(): void {
    if (this.#followUpTimer || this.#closing) return;
    const delay = Math.min(DOORBELL_CHECK, FOLLOW_UP_DELAY * 2 ** Math.min(this.#idleFollowUps, 8));
    this.#followUpTimer = setTimeout(() => {
      this.#followUpTimer = null;
      this.wake();
    }, delay);
  }

  /** Reads when a writer took the doorbell since the last read (its NOTIFY may be late or lost). */
  async #checkDoorbell(): Promise<void> {
    if (this.#reading || this.#closing || this.#snapshot === null) return;
    try {
      const { rows } = await this.#options.pool.query<{ taken: boolean }>('SELECT is_called AS taken FROM task_events.doorbell');
      if (rows[0]?.taken) this.wake();
    } catch {
      // the read's own retries report database trouble; a missed look is made up by the next one
    }
  }

  /** One read: the events committed since the last one, and whether others were writing. */
  async #read(): Promise<{ count: number; writing: boolean }> {
    const { pool, readBatchSize, onEvents } = this.#options;
    const client = await checkout(pool);
    let count = 0;
    try {
      const writing = Boolean((await client.query<{ writing: boolean }>(BEFORE_READ)).rows[0]?.writing);
      const opened = (await client.query({ text: openRead(this.#snapshot as string, readBatchSize), rowMode: 'array' })) as unknown as pg.QueryResult[];
      const snapshot = String((opened[2]?.rows[0] as unknown[])[0]);
      const fetch = (): Promise<pg.QueryResult<OutboxRow>> => {
        const fetched = client.query<OutboxRow>({ text: `FETCH ${readBatchSize} FROM task_events_new_rows`, rowMode: 'array' });
        // awaited below; if handing on the batch before it throws, its failure must not go unhandled
        fetched.catch(() => {});
        return fetched;
      };
      let next = Promise.resolve(opened[4] as pg.QueryResult<OutboxRow>);
      for (;;) {
        const batch = await next;
        const more = batch.rows.length === readBatchSize;
        // the database prepares the next batch while this one is handed on
        if (more) next = fetch();
        const events: TaskEvent[] = [];
        for (const row of batch.rows) {
          const event = toEvent(row);
          if (this.#handedOn.has(event.id)) continue;
          this.#handedOn.add(event.id);
          events.push(event);
        }
        if (events.length) {
          count += events.length;
          onEvents(events);
        }
        if (!more) break;
      }
      await client.query('COMMIT');
      this.#snapshot = snapshot;
      this.#handedOn.clear();
      client.giveBack();
      return { count, writing };
    } catch (error) {
      client.giveBack(error as Error);
      throw error;
    }
  }

  #startSubscribe(attempt: number): void {
    this.#subscribing = this.#subscribe(attempt).finally(() => {
      this.#subscribing = null;
    });
  }

  /**
   * Connects the LISTEN connection. pg-listen is told not to reconnect by itself (its reconnect
   * loop cannot be cancelled while an attempt is under way); a lost or failed connection is
   * replaced by a fresh subscriber here, after a capped, jittered delay, until close().
   */
  async #subscribe(attempt: number): Promise<void> {
    if (this.#closing) return;
    let abandoned = false;
    let connected = false;
    const subscriber = pgListen.default(this.#options.connection, {
      retryLimit: 1,
      paranoidChecking: 10_000,
      parse: (payload: string) => payload,
    });
    const replace = (error: unknown): void => {
      if (abandoned) return;
      abandoned = true;
      if (this.#subscriber === subscriber) this.#subscriber = null;
      void subscriber.close().catch(() => {});
      if (this.#closing) return;
      this.emit('warning', new Error('task events: LISTEN connection lost; reconnecting', { cause: error }));
      // After a connection that worked, the first retry comes quickly again.
      this.#retrySubscribe(connected ? 1 : attempt + 1);
    };
    // With retryLimit 1, pg-listen turns a lost connection straight into 'error'.
    subscriber.events.on('error', replace);
    subscriber.notifications.on(CHANNEL, () => this.wake());
    try {
      await subscriber.connect();
      await subscriber.listenTo(CHANNEL);
    } catch (error) {
      return replace(error);
    }
    if (abandoned) return;
    if (this.#closing) {
      abandoned = true;
      await subscriber.close().catch(() => {});
      return;
    }
    this.#subscriber = subscriber;
    connected = true;
    this.#connected();
  }

  #connected(): void {
    this.emit('connected');
    // Whatever committed while we were not listening is in the outbox: read it now.
    this.wake();
  }

  #retrySubscribe(attempt: number): void {
    if (this.#closing) return;
    this.emit('reconnecting', attempt);
    this.#subscribeTimer = setTimeout(() => this.#startSubscribe(attempt), retryDelay(attempt));
  }
}
