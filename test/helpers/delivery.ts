// The delivery checker: what each client received, against the outbox rows committed during a
// test. The promise it checks: a client that stays connected receives every event of its tenant
// (and filter) committed after its handshake, exactly once, and the events of one writer in the
// order that writer committed them; nothing from before its handshake, nothing of anyone else.
//
// Clients never see outbox ids, so a received event is matched to its row by (task_id, event,
// timestamp); the checker verifies that no two rows share that key and fails loudly if they do.
import type pg from 'pg';
import type { Test } from 'tap';
import { TestClient, type ReceivedEvent, type TestServer } from './server.js';

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
   * Outbox positions (see {@link outboxPosition}) read just before `connect()` began and just after
   * `open`. Rows at or below `before` are from before the connection and must not arrive; rows
   * above `after` must all arrive. In between, the first row received marks the client's own
   * position: every row after it must arrive too. Without it, the lowest id received is the start.
   */
  start?: { before: number; after: number };
  /**
   * For a client that was closed on purpose: the ids of the rows it is owed at most (committed
   * before the close began, e.g. from {@link committedIds}). Later rows may be missing; those
   * that arrived are checked like the rest, and a writer's rows must still arrive as a prefix.
   */
  owedOnly?: ReadonlySet<number>;
}

/** The kinds of delivery failure, each counted per client. */
export const PROBLEMS = ['lost', 'duplicated', 'foreign', 'early', 'unknown', 'outOfOrder', 'badFrames'] as const;
export type Problem = (typeof PROBLEMS)[number];

const DESCRIPTIONS: Record<Problem, string> = {
  lost: 'owed but never received',
  duplicated: 'received more than once (extra copies)',
  foreign: 'of another environment, or outside the filter',
  early: 'committed before the client connected',
  unknown: 'matching no outbox row (or with another object_class_id)',
  outOfOrder: "received after a later row of the same writer (or transaction)",
  badFrames: 'frames that are not a non-empty array ascending by timestamp',
};

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

const keyOf = (event: { taskId?: number; task_id?: number; event: string; timestamp: string }): string =>
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

function isFor(client: ClientRecord, row: OutboxRow): boolean {
  if (row.environmentId !== client.environmentId) return false;
  return client.objectClassIds === null || (row.objectClassId !== null && client.objectClassIds.includes(row.objectClassId));
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

  // The client's own position: the lowest id it received, kept within the handshake's bracket.
  const lowest = arrived.reduce((min, row) => Math.min(min, row.id), Infinity);
  let position = lowest === Infinity ? Infinity : lowest - 1;
  if (client.start) position = Math.min(Math.max(position, client.start.before), client.start.after);
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

/** The sum of every problem count of a client. */
export function problemCount(report: ClientReport): number {
  return PROBLEMS.reduce((sum, problem) => sum + report.counts[problem], 0);
}

/** A table of every client's counts, then examples of each problem found. */
export function formatReport(report: DeliveryReport): string {
  const header = ['client', 'owed', 'received', ...PROBLEMS];
  const table = [header, ...report.clients.map((c) => [c.name, c.owed, c.received, ...PROBLEMS.map((p) => c.counts[p])].map(String))];
  const widths = header.map((_, column) => Math.max(...table.map((line) => (line[column] as string).length)));
  const lines = [`delivery of ${report.rows} outbox rows:`];
  for (const line of table) lines.push(line.map((cell, column) => cell.padEnd(widths[column] as number)).join('  ').trimEnd());
  for (const client of report.clients) {
    for (const problem of PROBLEMS) {
      if (!client.counts[problem]) continue;
      lines.push(`${client.name}: ${client.counts[problem]} ${problem} — ${DESCRIPTIONS[problem]}, e.g.`);
      for (const example of client.examples[problem]) lines.push(`    ${example}`);
    }
  }
  return lines.join('\n');
}

/** Asserts that every count of every client is zero; prints the report either way. */
export function assertDelivered(t: Test, report: DeliveryReport): void {
  const text = formatReport(report);
  t.comment(text);
  const zero = Object.fromEntries(PROBLEMS.map((problem) => [problem, 0]));
  for (const client of report.clients) {
    t.same(client.counts, zero, `${client.name}: ${client.owed} events owed, each received once, in order, nothing else`, {
      report: text,
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Reading the outbox, and the positions a handshake is bracketed by.

/** The outbox position now, as the plugin's handshake reads it: the id sequence's last value. */
export async function outboxPosition(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ position: string }>(
    'SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS position FROM task_events.outbox_id_seq',
  );
  return Number(rows[0]?.position);
}

/**
 * Every committed outbox row with an id above `after`, in id order, labelled with its writer
 * when `writerOf` knows its task.
 */
export async function readOutbox(
  pool: pg.Pool,
  after = 0,
  writerOf: (taskId: number) => string | undefined = () => undefined,
  table: 'task_events.outbox' | typeof OUTBOX_COPY = 'task_events.outbox',
): Promise<OutboxRow[]> {
  const { rows } = await pool.query<{ id: string; environment_id: string; object_class_id: string | null; task_id: string; event: string; timestamp: string; xid: string }>(
    `SELECT id, environment_id, object_class_id, task_id, event, xid::text AS xid,
            to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"') AS timestamp
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

/** Where {@link keepOutboxCopy} keeps every outbox row, pruned or not. */
export const OUTBOX_COPY = 'public.outbox_copy';

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

// ---------------------------------------------------------------------------------------------
// Clients the checker follows.

/** A connected client together with what the checker needs to know about it. */
export interface TrackedClient {
  client: TestClient;
  record(): ClientRecord;
}

/** What {@link track} needs: who the client is and how it connects. */
export interface TrackOptions {
  name: string;
  environmentId: number;
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

/** Who a client is: its environment and filter, and a name for the report. */
export interface ClientSpec {
  name: string;
  environmentId: number;
  objectClassIds: readonly number[] | null;
}

/**
 * Connects a client of `spec` to `server` with a real `ws` client, bracketed for the checker.
 * `token`: one minted beforehand, for when the app's pool may be failing (minting uses it).
 */
export function joinTracked(t: Test, pool: pg.Pool, server: TestServer, spec: ClientSpec, token?: string): Promise<TrackedClient> {
  const query = new URLSearchParams(spec.objectClassIds ? { object_class_ids: spec.objectClassIds.join(',') } : {});
  return track(pool, {
    ...spec,
    connect: async () => {
      query.set('uuid', token ?? (await server.token(spec.environmentId)));
      return TestClient.connect(t, server.wsUrl(`/ws/events/tasks/?${query}`));
    },
  });
}

/**
 * The end of a delivery test: stops the writers, waits for every connected client's sentinels,
 * checks them (and `closed`, clients that were closed on purpose) against every outbox row after
 * `mark` (read from `table`: the copy when rows were pruned), and asserts every count is zero.
 */
export async function finishAndCheck(
  t: Test,
  pool: pg.Pool,
  workload: Workload,
  mark: number,
  connected: readonly TrackedClient[],
  closed: readonly ClientRecord[] = [],
  table: 'task_events.outbox' | typeof OUTBOX_COPY = 'task_events.outbox',
): Promise<DeliveryReport> {
  await workload.stop();
  const late = await settle(pool, connected);
  const report = checkDelivery(await workload.rows(pool, mark, table), [...connected.map((client) => client.record()), ...closed]);
  assertDelivered(t, report);
  t.same(late, [], 'every connected client got its sentinels and is still connected');
  return report;
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

// ---------------------------------------------------------------------------------------------
// Writers: several connections, each one sequence of transactions over tasks of its own.

/** Task ids → the writer that created them (and alone changes them). */
export type WriterMap = Map<number, string>;

/** A writer connection, running until stopped. */
export interface MixedWriter {
  readonly name: string;
  /** Transactions committed so far. */
  readonly transactions: number;
  stop(): Promise<void>;
}

/** Where a writer's tasks live: environment and object class. */
export type Target = readonly [environmentId: number, objectClassId: number];

/** Options of {@link startMixedWriter}. */
export interface MixedWriterOptions {
  name: string;
  /** One new task per target in each transaction. */
  targets: readonly Target[];
  /** Records which tasks are this writer's. */
  writers: WriterMap;
  /** Milliseconds between two transactions (a rate, not a wait for anything); 0 for back to back. */
  pause?: number;
}

/** The user of an environment in the reference seed (alice of Acme, bob of Globex). */
const USER_OF: Record<number, number> = { 1: 1, 2: 2 };

/**
 * Writes, on a connection of its own, transactions that touch every kind of event: each creates a
 * task per target and changes status, values, owners, assignees of its earlier tasks and deletes
 * one. Every event of a task comes from the writer that created it. Stopped at the latest when the
 * test ends; `stop()` rejects with the writer's error, if it failed.
 */
export function startMixedWriter(t: Test, pool: pg.Pool, options: MixedWriterOptions): MixedWriter {
  const { name, targets, writers, pause = 0 } = options;
  let transactions = 0;
  let stopped = false;
  let wakeUp: (() => void) | null = null;
  const live: { id: number; environmentId: number; owned: boolean; assigned: boolean }[] = [];

  const step = (n: number): string => {
    const statements = ['BEGIN'];
    statements.push(
      `INSERT INTO tasks (environment_id, object_class_id, name) VALUES ${targets.map(([e, c]) => `(${e}, ${c}, '${name} ${n}')`).join(', ')} RETURNING id, environment_id`,
    );
    // Older tasks, each touched at most once per transaction (no two events of a kind per task).
    const pick = (offset: number): (typeof live)[number] | undefined => live[live.length - 1 - offset];
    const a = pick(0);
    const b = pick(1);
    const c = pick(2);
    if (a) statements.push(`UPDATE tasks SET status = 's${n}' WHERE id = ${a.id}`);
    if (b) statements.push(`UPDATE tasks SET "values" = '{"n": ${n}}', status = 'v${n}' WHERE id = ${b.id}`);
    if (c) {
      statements.push(c.owned ? `DELETE FROM task_owners WHERE task_id = ${c.id}` : `INSERT INTO task_owners VALUES (${c.id}, ${USER_OF[c.environmentId] ?? 1})`);
      statements.push(c.assigned ? `DELETE FROM task_assignees WHERE task_id = ${c.id}` : `INSERT INTO task_assignees VALUES (${c.id}, ${USER_OF[c.environmentId] ?? 1})`);
      c.owned = !c.owned;
      c.assigned = !c.assigned;
    }
    if (live.length > 6) statements.push(`DELETE FROM tasks WHERE id = ${(live.shift() as (typeof live)[number]).id}`);
    statements.push('COMMIT');
    return statements.join(';\n');
  };

  const loop = (async () => {
    const client = await pool.connect();
    try {
      while (!stopped) {
        const results = (await client.query(step(transactions))) as unknown as pg.QueryResult<{ id: string; environment_id: string }>[];
        for (const row of results[1]?.rows ?? []) {
          const id = Number(row.id);
          writers.set(id, name);
          live.push({ id, environmentId: Number(row.environment_id), owned: false, assigned: false });
        }
        transactions++;
        if (pause > 0 && !stopped) await new Promise<void>((resolve) => setTimeout((wakeUp = resolve), pause));
      }
    } finally {
      client.release();
    }
  })();
  loop.catch(() => {}); // reported by stop()
  const stop = async (): Promise<void> => {
    stopped = true;
    wakeUp?.();
    await loop;
  };
  t.teardown(() => stop().catch(() => {}));
  return {
    name,
    get transactions() {
      return transactions;
    },
    stop,
  };
}

/** Several writers, started and stopped together. */
export interface Workload {
  readonly writers: WriterMap;
  readonly all: readonly MixedWriter[];
  /** Transactions committed so far, by all writers. */
  readonly transactions: number;
  /** Resolves once `count` more transactions have committed than when called. */
  waitForMore(count: number, timeout?: number): Promise<void>;
  stop(): Promise<void>;
  /** Every outbox row above `after` (from `table`), labelled with its writer. */
  rows(pool: pg.Pool, after?: number, table?: 'task_events.outbox' | typeof OUTBOX_COPY): Promise<OutboxRow[]>;
}

/**
 * The workload of the fault tests: three writers over two environments and several classes —
 * `w1` Acme classes 1 and 2, `w2` Acme class 1 and Globex class 4, `w3` Globex class 4.
 */
export function startWorkload(t: Test, pool: pg.Pool, options: { pause?: number; writers?: WriterMap } = {}): Workload {
  const writers = options.writers ?? new Map<number, string>();
  const specs: [string, Target[]][] = [
    ['w1', [[1, 1], [1, 2]]],
    ['w2', [[1, 1], [2, 4]]],
    ['w3', [[2, 4]]],
  ];
  const all = specs.map(([name, targets]) => startMixedWriter(t, pool, { name, targets, writers, pause: options.pause }));
  const total = (): number => all.reduce((sum, writer) => sum + writer.transactions, 0);
  return {
    writers,
    all,
    get transactions() {
      return total();
    },
    waitForMore: async (count, timeout = 15_000) => {
      const target = total() + count;
      const deadline = Date.now() + timeout;
      while (total() < target) {
        if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${count} more transactions (have ${total()} of ${target})`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
    stop: async () => {
      await Promise.all(all.map((writer) => writer.stop()));
    },
    rows: (pool, after = 0, table = 'task_events.outbox') => readOutbox(pool, after, (taskId) => writers.get(taskId), table),
  };
}
