// One read of the outbox, and the other small queries the listener makes of it. The SQL lives
// here; when to read (wake-ups, follow-ups, retries) is lib/listener.ts's business.
import type pg from 'pg';
import type { ReadSpan, TaskEvent } from './buffer.js';
import type { Cursor } from './cursor.js';
import { onLiveConnection } from './pool.js';
import { parseSnapshot, unseen, type Snapshot } from './snapshot.js';

/** An outbox row's `created_at` as the contract writes timestamps: ISO 8601, microseconds, `+00:00`. */
export const EVENT_TIMESTAMP = `to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')`;

// The event as a client receives it, serialized by the database: each field the reader takes costs
// it a string (and the pg driver's parse of it), so the client's JSON comes whole, in one field.
// The event name is quoted as JSON (the outbox's owner could write any text there by hand); the
// timestamp comes last, at a fixed place from the end (see toEvent).
const EVENT_JSON = `'{"task_id":' || task_id || ',"object_class_id":' || coalesce(object_class_id::text, 'null')
  || ',"event":' || to_json(event)::text || ',"timestamp":"' || ${EVENT_TIMESTAMP} || '"}'`;

/** The columns of an {@link OutboxRow}, in its order. */
export const EVENT_COLUMNS = `id, environment_id, object_class_id, event, xid, ${EVENT_JSON} AS json`;

// Rows committed after the snapshot `since` that the read's snapshot `upto` sees: their
// transaction had not started by `since` (xid >= xmax) or was still running (xid in xip), and had
// committed by `upto`. Read inside a REPEATABLE READ transaction whose snapshot is `upto` and
// becomes the next `since`, the reads tile the outbox's commit history with no gap and no
// overlap, whatever order concurrent transactions commit in. Only those xids are looked up in the
// index (committedBetween(), from unseen(): the ranges between the two snapshots, around the
// transactions `upto` saw running): the rows of a transaction still open (a bulk UPDATE, a long
// import) are not visited, where a look by `xid >= xmax` alone walked them all at every read only
// to find them invisible (test/outbox-read.test.ts counts the pages a read visits). The xids are
// written into the text, not bound: the cursor is opened with other statements in one round trip,
// which PostgreSQL takes only without parameters (they are numbers, from parsed snapshots).
/**
 * The condition on an outbox row's xid that it was committed after `since` and `upto` sees it
 * (with the row's own visibility), as index lookups; null when no transaction can be in between.
 * The listener's reads and a v2 resume's backlog both ask it.
 */
export function committedBetween({ since, upto }: ReadSpan): string | null {
  const { ranges, xids } = unseen(since, upto);
  const conditions = ranges.map(([above, below]) => `(xid > '${above}'::xid8 AND xid < '${below}'::xid8)`);
  if (xids.length) conditions.push(`xid = ANY ('{${xids.join(',')}}'::xid8[])`);
  return conditions.length ? `(${conditions.join(' OR ')})` : null;
}

/** The read's query, or null when nothing can have committed between the two snapshots. */
export function newRows(span: ReadSpan): string | null {
  const committed = committedBetween(span);
  if (!committed) return null;
  return `
  SELECT ${EVENT_COLUMNS}
  FROM (
    -- sorted first, formatted as fetched: the first rows of a 100k-row read leave early
    SELECT id, environment_id, task_id, object_class_id, event, created_at, xid
    FROM task_events.outbox
    WHERE ${committed}
    ORDER BY id
    OFFSET 0
  ) AS new_rows`;
}

// Before each read (task_events.before_read(), in a transaction of its own that ends before the
// read's snapshot is taken): when other transactions hold the outbox (they have written events
// and not committed yet), a follow-up read comes soon and the doorbell stays as it is (under a
// steady write load nobody notifies; the follow-ups read). When nobody holds it, it re-arms the
// doorbell (the next writer to take its first value notifies) under a lock that keeps writers
// out until its transaction ends; then the snapshot. A writer the snapshot misses either held the
// outbox when we looked (so we read again soon) or wrote after the arm (so it, or an earlier
// writer since the arm, rings, and the doorbell look catches a ringer that is slow or rolled
// back). See migrations/006.do.cheaper-capture.sql.

/**
 * Opens the read: the look before it, then the transaction, its snapshot (the next read's start)
 * and its settings: work_mem (the server's default is 4MB) so that a 100k-row statement's events
 * are sorted in memory; no JIT, whose compiling (a quarter of a second) costs far more than it
 * saves on a read.
 */
const OPEN_READ = `BEGIN; SELECT task_events.before_read(); COMMIT;
  BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
  SELECT pg_current_snapshot(), set_config('work_mem', '64MB', true), set_config('jit', 'off', true)`;

/** A row of newRows() (or a backlog read), fetched as an array of the texts PostgreSQL wrote. */
export type OutboxRow = [id: string, environmentId: string, objectClassId: string | null, event: string, xid: string, json: string];

const AS_WRITTEN = { getTypeParser: () => (value: string) => value } as unknown as pg.CustomTypesConfig;

/**
 * Fetches rows as PostgreSQL writes them (rowMode array, no type parsing: pg's parser for bigint
 * tests each value with a regular expression; toEvent converts what it uses).
 */
export function fetchRows(text: string): pg.QueryArrayConfig {
  return { text, rowMode: 'array', types: AS_WRITTEN };
}

/** Where the timestamp sits in an event's JSON: it ends `"timestamp":"<32 characters>"}`. */
const TIMESTAMP_FROM_END = -34;

/** An outbox row as the hub takes it, of the read `read`. */
export function toEvent([id, environmentId, objectClassId, event, xid, json]: OutboxRow, read: ReadSpan): TaskEvent {
  return {
    id: Number(id),
    xid: Number(xid),
    read,
    environmentId: Number(environmentId),
    objectClassId: objectClassId === null ? null : Number(objectClassId),
    event,
    timestamp: json.slice(TIMESTAMP_FROM_END, -2),
    json,
  };
}

/** What a read found out besides its events. */
export interface ReadOutcome {
  /** The read's snapshot: where the next read starts. */
  snapshot: string;
  /** What it covered: every event committed after `since` that `upto` sees was handed on. */
  read: ReadSpan;
  /** Other transactions held the outbox before the read: read again soon. */
  writing: boolean;
}

/**
 * Reads the rows committed since the snapshot `since`, `batchSize` at a time, handing each batch
 * (never an empty one) on in outbox order; the database prepares the next batch while this one is
 * handed on. The look and the snapshot take one round trip; the cursor and its first batch a
 * second, skipped when nothing can have committed since `since`.
 */
export async function readOutbox(
  client: pg.PoolClient,
  since: string,
  batchSize: number,
  onBatch: (events: TaskEvent[]) => void,
): Promise<ReadOutcome> {
  const from = parseSnapshot(since);
  if (!from) throw new Error(`task events: not a snapshot: ${since}`);
  // One result per statement of OPEN_READ: BEGIN, the look, COMMIT, BEGIN, the snapshot (and settings).
  const [, look, , , current] = (await client.query(fetchRows(OPEN_READ))) as unknown as pg.QueryArrayResult[];
  const writing = look?.rows[0]?.[0] === 't';
  const snapshot = String(current?.rows[0]?.[0]);
  const read: ReadSpan = { since: from, upto: parseSnapshot(snapshot) as Snapshot };
  const query = newRows(read);
  if (query) {
    // the cursor and its first batch, in one round trip
    const opened = (await client.query(fetchRows(`DECLARE task_events_new_rows NO SCROLL CURSOR FOR ${query};
      FETCH ${batchSize} FROM task_events_new_rows`))) as unknown as pg.QueryArrayResult<OutboxRow>[];
    const fetch = (): Promise<pg.QueryArrayResult<OutboxRow>> => {
      const fetched = client.query<OutboxRow>(fetchRows(`FETCH ${batchSize} FROM task_events_new_rows`));
      // awaited below; if handing on the batch before it throws, its failure must not go unhandled
      fetched.catch(() => {});
      return fetched;
    };
    let next = Promise.resolve(opened[1] as pg.QueryArrayResult<OutboxRow>);
    for (;;) {
      const batch = await next;
      const more = batch.rows.length === batchSize;
      if (more) next = fetch();
      if (batch.rows.length) onBatch(batch.rows.map((row) => toEvent(row, read)));
      if (!more) break;
    }
  }
  await client.query('COMMIT');
  return { snapshot, read, writing };
}

/** The starting point of a listener: nothing committed before now is read. */
export async function currentSnapshot(pool: pg.Pool): Promise<string> {
  const { rows } = await pool.query<{ snapshot: string }>('SELECT pg_current_snapshot()::text AS snapshot');
  return (rows[0] as { snapshot: string }).snapshot;
}

/** Whether a writer took the doorbell since it was last armed. */
export async function doorbellTaken(pool: pg.Pool): Promise<boolean> {
  const { rows } = await pool.query<{ taken: boolean }>('SELECT task_events.doorbell_taken() AS taken');
  return Boolean(rows[0]?.taken);
}

/** The outbox position now: events with a larger id were created after this call. */
export async function outboxPosition(pool: pg.Pool): Promise<number> {
  const { rows } = await onLiveConnection(() => pool.query<{ position: string }>(
    'SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS position FROM task_events.outbox_id_seq',
  ));
  return Number((rows[0] as { position: string }).position);
}

/**
 * Where a v2 stream starts now: the current snapshot, and whether the outbox may have pruned rows
 * after `from` (a row goes once a pruning mark older than `retentionMs` is above its xid; every
 * row `from` lacks has an xid at or above its floor's xmin).
 */
export async function streamPoint(pool: pg.Pool, from: Cursor | null, retentionMs: number): Promise<{ snapshot: Snapshot; expired: boolean }> {
  const { rows } = await onLiveConnection(() => pool.query<{ snapshot: string; horizon: string | null }>(
    `SELECT pg_current_snapshot()::text AS snapshot,
            (SELECT max(oldest_running)::text FROM task_events.prune_horizon
             WHERE taken_at < now() - make_interval(secs => $1::double precision / 1000)) AS horizon`,
    [retentionMs],
  ));
  const row = rows[0] as { snapshot: string; horizon: string | null };
  const expired = from !== null && row.horizon !== null && Number(row.horizon) > from.floor.xmin;
  return { snapshot: parseSnapshot(row.snapshot) as Snapshot, expired };
}

/** The key that signs v2 cursors (migration 005). */
export async function cursorKey(pool: pg.Pool): Promise<Buffer> {
  const { rows } = await pool.query<{ key: Buffer }>('SELECT key FROM task_events.cursor_key');
  if (!rows[0]) throw new Error('task_events.cursor_key is empty');
  return rows[0].key;
}
