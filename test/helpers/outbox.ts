// Reading what the capture triggers wrote, and hearing the doorbell they ring.
import pg from 'pg';
import type { Test } from 'tap';
import { Conditions } from '../../harness/conditions.js';

/** One outbox row, as the tests compare it. */
export interface CapturedEvent {
  event: string;
  task_id: number;
  environment_id: number;
  object_class_id: number | null;
}

/** The last outbox id so far: events after it are the ones a test caused. */
export async function outboxMark(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query('SELECT coalesce(max(id), 0) AS id FROM task_events.outbox');
  return Number(rows[0].id);
}

/** The outbox rows written after `mark`, in outbox order. */
export async function eventsSince(pool: pg.Pool, mark: number): Promise<CapturedEvent[]> {
  const { rows } = await pool.query(
    `SELECT event, task_id, environment_id, object_class_id
     FROM task_events.outbox WHERE id > $1 ORDER BY id`,
    [mark],
  );
  return rows.map((row) => ({
    event: row.event,
    task_id: Number(row.task_id),
    environment_id: Number(row.environment_id),
    object_class_id: row.object_class_id === null ? null : Number(row.object_class_id),
  }));
}

/** Runs `write` and returns the events it produced. */
export async function eventsOf(pool: pg.Pool, write: () => Promise<unknown>): Promise<CapturedEvent[]> {
  const mark = await outboxMark(pool);
  await write();
  return eventsSince(pool, mark);
}

/** Shorthand for an expected event. */
export function ev(event: string, taskId: number, environmentId: number, objectClassId: number | null): CapturedEvent {
  return { event, task_id: taskId, environment_id: environmentId, object_class_id: objectClassId };
}

/** A connection that LISTENs on a channel and keeps every notification it receives. */
export interface Listener {
  received: pg.Notification[];
  /** Resolves once `condition(received)` holds; rejects after `timeoutMs`. */
  waitFor(condition: (received: pg.Notification[]) => boolean, timeoutMs?: number): Promise<void>;
  /**
   * Every notification sent before now, ready to count: sends a marker NOTIFY and waits for it.
   * Notifications reach a listener in commit order, so all earlier ones have arrived by then.
   */
  drain(timeoutMs?: number): Promise<pg.Notification[]>;
  /** Re-arms the doorbell, as the plugin's listener does before each read: the next writer rings. */
  arm(): Promise<void>;
}

/** Opens a listening connection to `url`, with the doorbell armed; closed when the test ends. */
export async function listen(t: Test, url: string, channel = 'task_events'): Promise<Listener> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  t.teardown(() => client.end());
  const received: pg.Notification[] = [];
  const conditions = new Conditions();
  client.on('notification', (notification) => {
    if (notification.channel !== channel) return;
    received.push(notification);
    conditions.check();
  });
  await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
  const arm = async (): Promise<void> => void (await client.query('SELECT task_events.arm_doorbell()'));
  await arm();

  const waitFor = (condition: (received: pg.Notification[]) => boolean, timeoutMs = 5000): Promise<void> =>
    conditions.waitFor(() => condition(received), `a matching notification on "${channel}"`, timeoutMs, () => `received ${received.length}`);

  let markers = 0;
  const drain = async (timeoutMs = 5000): Promise<pg.Notification[]> => {
    const marker = `drain-marker-${++markers}`;
    const sender = new pg.Client({ connectionString: url });
    await sender.connect();
    try {
      await sender.query('SELECT pg_notify($1, $2)', [channel, marker]);
    } finally {
      await sender.end();
    }
    await waitFor((all) => all.some((n) => n.payload === marker), timeoutMs);
    const upTo = received.findIndex((n) => n.payload === marker);
    const before = received.splice(0, upTo + 1);
    await arm();
    return before.filter((n) => !n.payload?.startsWith('drain-marker-'));
  };

  return { received, waitFor, drain, arm };
}
