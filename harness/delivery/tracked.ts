// The clients the delivery checker follows: each connection bracketed by the outbox positions
// before and after its handshake, and the wait, at the end, until every client has all it is owed.
import type pg from 'pg';
import { outboxPosition } from '../../lib/outbox.js';
import type { ReceivedEvent, TestClient } from '../client.js';
import { clientPosition, isFor, keyOf, type ClientRecord, type OutboxRow } from './check.js';

/** Who a client is: its environment and filter, and a name for the report. */
export interface ClientSpec {
  name: string;
  environmentId: number;
  objectClassIds: readonly number[] | null;
}

/** A connected client together with what the checker needs to know about it. */
export interface TrackedClient {
  client: TestClient;
  record(): ClientRecord;
}

/** What {@link track} needs: who the client is and how it connects. */
export interface TrackOptions extends Omit<ClientSpec, 'objectClassIds'> {
  objectClassIds?: readonly number[] | null;
  /** Opens the connection (with a token minted beforehand); rejects on an HTTP refusal. */
  connect: () => Promise<TestClient>;
}

/** Connects a client, bracketing its handshake with the outbox positions before and after it. */
export async function track(pool: pg.Pool, options: TrackOptions): Promise<TrackedClient> {
  const before = await outboxPosition(pool);
  const client = await options.connect();
  const after = await outboxPosition(pool);
  return {
    client,
    record: () => ({
      name: options.name,
      environmentId: options.environmentId,
      objectClassIds: options.objectClassIds ?? null,
      frames: client.frames,
      start: { before, after },
    }),
  };
}

/**
 * Writes one task per environment and class in one statement, and waits until every client has
 * received the ones meant for it. The stream is in commit order, so by then each client has
 * everything committed before: what is still missing is lost. Returns the names of the clients
 * that did not get theirs within `timeout` ms (the checker then says what else they lack).
 */
export async function settle(pool: pg.Pool, clients: readonly TrackedClient[], timeout = 15_000): Promise<string[]> {
  const { rows } = await pool.query<{ id: string; environment_id: string; object_class_id: string }>(
    `INSERT INTO tasks (environment_id, object_class_id, name)
     SELECT environment_id, id, 'sentinel' FROM object_classes ORDER BY id
     RETURNING id, environment_id, object_class_id`,
  );
  const sentinels = rows.map((row) => ({ taskId: Number(row.id), environmentId: Number(row.environment_id), objectClassId: Number(row.object_class_id) }));
  const late: string[] = [];
  await Promise.all(
    clients.map(async ({ client, record }) => {
      const { name, environmentId, objectClassIds } = record();
      const mine = sentinels.filter((s) => s.environmentId === environmentId && (objectClassIds === null || objectClassIds.includes(s.objectClassId)));
      const ids = new Set(mine.map((s) => s.taskId));
      const done = (): boolean => client.closed !== null || client.events.filter((event) => ids.has(event.task_id)).length >= ids.size;
      await client.waitFor(done, `${name}'s sentinels`, timeout).catch(() => late.push(name));
      if (client.closed && !late.includes(name)) late.push(`${name} (closed ${client.closed.code})`);
    }),
  );
  return late;
}

/**
 * Waits until the client has every row of `committed` it is owed (or is closed); false when it
 * has not within `timeout` ms. As the checker does, its position is its lowest row received, kept
 * within its handshake's bracket: a client that leaves on purpose first takes what it is owed.
 */
export async function waitForOwed({ client, record }: TrackedClient, committed: readonly OutboxRow[], timeout: number): Promise<boolean> {
  const { start } = record();
  const mine = committed.filter((row) => isFor(record(), row));
  const byKey = new Map(mine.map((row) => [keyOf(row), row]));
  const received = new Set<number>();
  let lowest = Infinity;
  let scanned = 0;
  const done = (): boolean => {
    for (; scanned < client.frames.length; scanned++) {
      const frame = client.frames[scanned];
      if (!Array.isArray(frame)) continue;
      for (const event of frame as ReceivedEvent[]) {
        const row = byKey.get(keyOf(event));
        if (!row) continue;
        received.add(row.id);
        lowest = Math.min(lowest, row.id);
      }
    }
    const position = clientPosition(lowest, start);
    return client.closed !== null || mine.every((row) => row.id <= position || received.has(row.id));
  };
  return client.waitFor(done, 'the events committed before leaving', timeout).then(
    () => true,
    () => false,
  );
}
