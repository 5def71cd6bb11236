// The outbox rows the delivery checker compares clients with, read by id (every row committed
// after a mark), with the writing transaction, and kept when the pruner deletes them.
import type pg from 'pg';
import { EVENT_TIMESTAMP } from '../../lib/outbox.js';
import type { OutboxRow } from './check.js';

/** Where {@link keepOutboxCopy} keeps every outbox row, pruned or not. */
export const OUTBOX_COPY = 'public.outbox_copy';

/** The tables {@link readOutbox} reads: the outbox, or its copy. */
export type OutboxTable = 'task_events.outbox' | typeof OUTBOX_COPY;

/**
 * An event's timestamp as the plugin sends it: ISO 8601, microseconds, `+00:00`. The same
 * expression as lib/outbox.ts's read (which does not export it), so that received events match
 * their rows.
 */

/**
 * Every committed outbox row with an id above `after`, in id order, labelled with its writer
 * when `writerOf` knows its task.
 */
export async function readOutbox(
  pool: pg.Pool,
  after = 0,
  writerOf: (taskId: number) => string | undefined = () => undefined,
  table: OutboxTable = 'task_events.outbox',
): Promise<OutboxRow[]> {
  const { rows } = await pool.query<{ id: string; environment_id: string; object_class_id: string | null; task_id: string; event: string; timestamp: string; xid: string }>(
    `SELECT id, environment_id, object_class_id, task_id, event, xid::text AS xid, ${EVENT_TIMESTAMP} AS timestamp
     FROM ${table} WHERE id > $1 ORDER BY id`,
    [after],
  );
  return rows.map((row) => {
    const taskId = Number(row.task_id);
    const writer = writerOf(taskId);
    return {
      id: Number(row.id),
      environmentId: Number(row.environment_id),
      objectClassId: row.object_class_id === null ? null : Number(row.object_class_id),
      taskId,
      event: row.event,
      timestamp: row.timestamp,
      xid: row.xid,
      ...(writer ? { writer } : {}),
    };
  });
}

/**
 * From now on, every row inserted into the outbox is copied (same id, xid, created_at) to
 * {@link OUTBOX_COPY} in the same transaction: for tests where the pruner deletes rows before the
 * checker reads them. Test databases only.
 */
export async function keepOutboxCopy(pool: pg.Pool): Promise<void> {
  await pool.query(`
    CREATE TABLE ${OUTBOX_COPY} (LIKE task_events.outbox);
    CREATE FUNCTION public.copy_outbox_rows() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO ${OUTBOX_COPY} SELECT * FROM new_rows;
      RETURN NULL;
    END $$;
    CREATE TRIGGER copy_outbox_rows AFTER INSERT ON task_events.outbox
      REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION public.copy_outbox_rows();`);
}

/** The ids of the outbox rows committed by now (visible to a snapshot taken now). */
export async function committedIds(pool: pg.Pool): Promise<Set<number>> {
  const { rows } = await pool.query<{ id: string }>('SELECT id FROM task_events.outbox');
  return new Set(rows.map((row) => Number(row.id)));
}
