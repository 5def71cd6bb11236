// The delivery checker: what each client received, against the outbox rows committed during a
// test. The promise it checks: a client that stays connected receives every event of its tenant
// (and filter) committed after its handshake, exactly once, and the events of one writer in the
// order that writer committed them; nothing from before its handshake, nothing of anyone else.
//
// Clients never see outbox ids, so a received event is matched to its row by (task_id, event,
// timestamp); the checker verifies that no two rows share that key and fails loudly if they do.
import type { ReceivedEvent } from '../client.js';

/** One outbox row, as the checker compares it. */
export interface OutboxRow {
  id: number;
  environmentId: number;
  objectClassId: number | null;
  taskId: number;
  event: string;
  /** As the plugin formats it: ISO 8601, microseconds, `+00:00`. */
  timestamp: string;
  /** The writing transaction. */
  xid: string;
  /**
   * The connection that wrote it, when known. One writer is one sequence of transactions, so its
   * rows must reach a client in id order. Rows without a writer are ordered within their
   * transaction only.
   */
  writer?: string;
}

/** What one client was meant to receive and what it did receive. */
export interface ClientRecord {
  name: string;
  environmentId: number;
  /** The `object_class_ids` filter; `null` for none. */
  objectClassIds: readonly number[] | null;
  /** Every frame it received, in arrival order (error frames included: they are reported). */
  frames: readonly unknown[];
  /**
   * Outbox positions (see lib/outbox.ts's outboxPosition) read just before `connect()` began and
   * just after `open`. Rows at or below `before` are from before the connection and must not
   * arrive; rows above `after` must all arrive. In between, the first row received marks the
   * client's own position: every row after it must arrive too. Without it, the lowest id received
   * is the start.
   */
  start?: { before: number; after: number };
  /**
   * For a client that was closed on purpose: the ids of the rows it is owed at most (committed
   * before the close began, e.g. from committedIds). Later rows may be missing; those that
   * arrived are checked like the rest, and a writer's rows must still arrive as a prefix.
   */
  owedOnly?: ReadonlySet<number>;
}

/** The kinds of delivery failure, each counted per client. */
export const PROBLEMS = ['lost', 'duplicated', 'foreign', 'early', 'unknown', 'outOfOrder', 'badFrames'] as const;
export type Problem = (typeof PROBLEMS)[number];

/** The verdict for one client. */
export interface ClientReport {
  name: string;
  /** Rows it was owed. */
  owed: number;
  /** Events it received. */
  received: number;
  counts: Record<Problem, number>;
  /** A few examples per problem, for the printout. */
  examples: Record<Problem, string[]>;
}

/** The verdict for every client. */
export interface DeliveryReport {
  rows: number;
  clients: ClientReport[];
}

const EXAMPLES = 5;

/** What a client can see of a row, or of an event it received: (task_id, event, timestamp). */
export const keyOf = (event: { taskId?: number; task_id?: number; event: string; timestamp: string }): string =>
  `${event.taskId ?? event.task_id}|${event.event}|${event.timestamp}`;

const describe = (row: OutboxRow): string =>
  `#${row.id} ${row.event} task ${row.taskId} env ${row.environmentId} class ${row.objectClassId} ${row.timestamp}${row.writer ? ` (${row.writer})` : ''}`;

/** Indexes rows by what a client can see of them; throws when two rows share a key. */
function indexRows(rows: readonly OutboxRow[]): Map<string, OutboxRow> {
  const byKey = new Map<string, OutboxRow>();
  for (const row of rows) {
    const key = keyOf(row);
    const other = byKey.get(key);
    if (other) {
      throw new Error(
        `delivery checker: outbox rows ${describe(other)} and ${describe(row)} share (task_id, event, timestamp); ` +
          'received events cannot be matched to rows. Write no two events of one task and kind in the same microsecond.',
      );
    }
    byKey.set(key, row);
  }
  return byKey;
}

/** Whether `row` is of the client's environment and passes its filter. */
export function isFor(client: Pick<ClientRecord, 'environmentId' | 'objectClassIds'>, row: OutboxRow): boolean {
  if (row.environmentId !== client.environmentId) return false;
  return client.objectClassIds === null || (row.objectClassId !== null && client.objectClassIds.includes(row.objectClassId));
}

/**
 * Where a client's stream starts: every row above it is owed. The lowest row id it received,
 * minus one, kept within its handshake's bracket (`start`) when known.
 */
export function clientPosition(lowestReceived: number, start?: ClientRecord['start']): number {
  const position = lowestReceived === Infinity ? Infinity : lowestReceived - 1;
  return start ? Math.min(Math.max(position, start.before), start.after) : position;
}

function isEvent(value: unknown): value is ReceivedEvent {
  if (typeof value !== 'object' || value === null) return false;
  const event = value as Record<string, unknown>;
  return typeof event.task_id === 'number' && typeof event.event === 'string' && typeof event.timestamp === 'string';
}

/** Checks one client against the rows (indexed by {@link indexRows}). */
function checkClient(client: ClientRecord, rows: readonly OutboxRow[], byKey: Map<string, OutboxRow>): ClientReport {
  const counts = Object.fromEntries(PROBLEMS.map((problem) => [problem, 0])) as Record<Problem, number>;
  const examples = Object.fromEntries(PROBLEMS.map((problem) => [problem, []])) as unknown as Record<Problem, string[]>;
  const note = (problem: Problem, text: string): void => {
    counts[problem]++;
    if (examples[problem].length < EXAMPLES) examples[problem].push(text);
  };

  // Frames: each a non-empty array of events, ascending by timestamp.
  const received: ReceivedEvent[] = [];
  client.frames.forEach((frame, index) => {
    if (!Array.isArray(frame) || frame.length === 0 || !frame.every(isEvent)) {
      return note('badFrames', `frame ${index}: ${JSON.stringify(frame).slice(0, 160)}`);
    }
    for (let i = 1; i < frame.length; i++) {
      if ((frame[i - 1] as ReceivedEvent).timestamp > (frame[i] as ReceivedEvent).timestamp) {
        note('badFrames', `frame ${index}: timestamps descend at position ${i}`);
        break;
      }
    }
    received.push(...(frame as ReceivedEvent[]));
  });

  // Match each event to its row; classify what is not this client's.
  const seen = new Map<number, number>();
  const arrived: OutboxRow[] = []; // the client's own rows, first copies, in arrival order
  for (const event of received) {
    const row = byKey.get(keyOf(event));
    if (!row || row.objectClassId !== event.object_class_id) {
      note('unknown', JSON.stringify(event));
      continue;
    }
    if (!isFor(client, row)) {
      note('foreign', describe(row));
      continue;
    }
    if (client.start && row.id <= client.start.before) {
      note('early', describe(row));
      continue;
    }
    const copies = (seen.get(row.id) ?? 0) + 1;
    seen.set(row.id, copies);
    if (copies > 1) {
      note('duplicated', `${describe(row)} (copy ${copies})`);
      continue;
    }
    arrived.push(row);
  }

  const position = clientPosition(arrived.reduce((min, row) => Math.min(min, row.id), Infinity), client.start);
  const mine = rows.filter((row) => row.id > position && isFor(client, row));

  // Per writer (or per transaction), the client must see rows in id order, and, when it stopped
  // early, a prefix of them.
  const streamOf = (row: OutboxRow): string => row.writer ?? `xid ${row.xid}`;
  const highestSeen = new Map<string, OutboxRow>();
  for (const row of arrived) {
    const stream = streamOf(row);
    const highest = highestSeen.get(stream);
    if (highest && highest.id > row.id) note('outOfOrder', `${describe(row)} after ${describe(highest)}`);
    else highestSeen.set(stream, row);
  }

  let owed = 0;
  for (const row of mine) {
    const owedForSure = !client.owedOnly || client.owedOnly.has(row.id);
    const laterOfItsStream = (highestSeen.get(streamOf(row))?.id ?? -Infinity) > row.id;
    if (!owedForSure && !seen.has(row.id) && !laterOfItsStream) continue;
    owed++;
    if (!seen.has(row.id)) note('lost', describe(row));
  }
  return { name: client.name, owed, received: received.length, counts, examples };
}

/**
 * Checks every client against `rows` (every outbox row committed during the test, in id order).
 * Throws when two rows share (task_id, event, timestamp): the matching would be ambiguous.
 */
export function checkDelivery(rows: readonly OutboxRow[], clients: readonly ClientRecord[]): DeliveryReport {
  const sorted = [...rows].sort((a, b) => a.id - b.id);
  const byKey = indexRows(sorted);
  return { rows: sorted.length, clients: clients.map((client) => checkClient(client, sorted, byKey)) };
}
