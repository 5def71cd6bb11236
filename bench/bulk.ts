// `npm run bench:bulk [-- --rows 100000]`: a bulk UPDATE delivered to one client (issues 4 and 14).
// A tasks table of `rows` rows, one client on the plugin server (a process of its own), then ONE
// statement, `UPDATE tasks SET status = …` over every row, timed from its start to the client's
// last event: the client must receive exactly `rows` task_status_changed events, in the order the
// UPDATE visits the rows (the capture's order: ctid order, read just before), none missing.
// Events/s = rows / that time; target ≥ 75,000. The reference is the same UPDATE with our
// triggers detached (rows / its statement time): what the database alone costs. A second row
// holds the statement alone (start → commit) against the same statement under the minimal
// capture trigger (bench/minimal-capture.ts, the floor of trigger capture); target ≤ 1.15×. Each of the three statements runs on the table in the same state:
// after one UPDATE of every row and a VACUUM, right after a CHECKPOINT.
// The JSON also holds the split: the statement, commit → first frame, → the server's last send,
// → the last frame, each frame's arrival, the client's parsing. Give `--rows` as a multiple of
// 1,000 (messageLimit): a smaller remainder waits for the timed message, by design.
// Run by itself, against a fresh database on TEST_DATABASE_URL (or DATABASE_URL; else an embedded
// PostgreSQL), dropped after; the JSON goes to bench/results/ (git-ignored).
import { parseArgs } from 'node:util';
import pg from 'pg';
import { openClients, wallClock, type ClientPool } from '../harness/client-pool.js';
import { Conditions } from '../harness/conditions.js';
import { issueTokens } from '../harness/db.js';
import { startLoadServer } from '../harness/load.js';
import type { ServerProcess } from '../harness/server-process.js';
import { useCapture } from './minimal-capture.js';
import { isMain, runStandalone } from './standalone.js';
import { positive, type BenchRow } from './support.js';

const MESSAGE_TIME = 5000;
const TARGET = 75_000;
/** Our statement's most time against the minimal capture's. */
const CAPTURE_TARGET = 1.15;
const TIMEOUT = 300_000;

/** What {@link run} measures. */
export interface BulkOptions {
  /**
   * A database with our migrations and the reference schema (see withBenchDatabase). Its tasks
   * table is emptied first, with our triggers detached: the UPDATE must cover exactly `rows` rows.
   */
  databaseUrl: string;
  /** Rows of the tasks table, all updated by the one statement; default 100,000. */
  rows?: number;
  log?: (line: string) => void;
}

const ROWS = 100_000;

/** What one run measured; times in ms. */
export interface BulkResult {
  rows: number;
  /** The UPDATE with our triggers detached, to its commit. */
  referenceStatementMs: number;
  /** The UPDATE under the minimal capture trigger, to its commit. */
  minimalStatementMs: number;
  /** The UPDATE with our triggers, to its commit. */
  statementMs: number;
  /** Statement start → the client's last event. */
  deliveredMs: number;
  eventsPerSecond: number;
  commitToFirstFrameMs: number;
  /** Commit → the server's last send of them (its read of the outbox and its hub; ms resolution). */
  commitToServerSentMs: number | null;
  commitToLastFrameMs: number;
  frames: number;
  /** Each frame's arrival after the commit, and its events. */
  arrivals: { afterCommitMs: number; events: number }[];
  /** The client's JSON.parse of every frame, summed. */
  clientParseMs: number;
  /** Events missing, out of task order, of another kind, or past `rows`; whether the client was closed. */
  problems: { lost: number; outOfOrder: number; otherEvents: number; extra: number; closed: boolean };
}

/** The one client's events: task ids in arrival order, and each frame's arrival. */
class Received {
  readonly taskIds: Int32Array;
  readonly arrivals: { at: number; events: number }[] = [];
  readonly conditions = new Conditions();
  count = 0;
  otherEvents = 0;
  extra = 0;
  parseMs = 0;
  closed = false;

  constructor(readonly rows: number) {
    this.taskIds = new Int32Array(rows);
  }

  frame = (_client: number, frame: Buffer, receivedAt: number): void => {
    const parseStarted = performance.now();
    const events = JSON.parse(frame.toString()) as { task_id: number; event: string }[];
    this.parseMs += performance.now() - parseStarted;
    this.arrivals.push({ at: receivedAt, events: events.length });
    for (const event of events) {
      if (event.event !== 'task_status_changed') this.otherEvents++;
      else if (this.count === this.rows) this.extra++;
      else this.taskIds[this.count++] = event.task_id;
    }
    this.conditions.check();
  };

  close = (): void => {
    this.closed = true;
    this.conditions.check();
  };
}

/** Milliseconds `work` takes. */
async function timed(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return performance.now() - started;
}

/** Brings the table to the state every timed statement starts from: its dead row versions reclaimable, the pages written out. */
async function settle(pool: pg.Pool): Promise<void> {
  await pool.query('VACUUM ANALYZE tasks');
  await pool.query('CHECKPOINT');
}

/**
 * The tasks (and only they), then the references: the same full-table UPDATE with no triggers,
 * then under the minimal capture trigger; leaves ours attached and the table settled.
 */
async function prepare(pool: pg.Pool, rows: number): Promise<{ referenceMs: number; minimalMs: number }> {
  await useCapture(pool, 'none');
  await pool.query('TRUNCATE tasks CASCADE');
  await pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) SELECT 1, 1 + n % 3, 'task ' || n FROM generate_series(1, $1::int) n`, [rows]);
  // a fresh table's pages are full: its first UPDATE writes every row elsewhere, the later ones need not
  await pool.query(`UPDATE tasks SET status = 'new'`);
  await settle(pool);
  const referenceMs = await timed(() => pool.query(`UPDATE tasks SET status = 'in progress'`));
  await useCapture(pool, 'minimal');
  await settle(pool);
  const minimalMs = await timed(() => pool.query(`UPDATE tasks SET status = 'review'`));
  await useCapture(pool, 'ours');
  await settle(pool);
  return { referenceMs, minimalMs };
}

/** Counts the received task ids that are not the expected ones at their place. */
function outOfOrder(received: Received, expected: number[]): number {
  let wrong = 0;
  for (let index = 0; index < received.count; index++) if (received.taskIds[index] !== expected[index]) wrong++;
  return wrong;
}

/**
 * One run: the row and what it measured. Rejects when the client did not receive exactly the
 * statement's events, in order, after logging what it measured.
 */
export async function measure(options: BulkOptions): Promise<{ rows: BenchRow[]; detail: BulkResult }> {
  const { databaseUrl, rows = ROWS, log = () => {} } = options;
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  let server: ServerProcess | undefined;
  let clients: ClientPool | undefined;
  let detail: BulkResult;
  try {
    const { referenceMs: referenceStatementMs, minimalMs: minimalStatementMs } = await prepare(pool, rows);
    log(`${rows} tasks; the UPDATE without triggers took ${referenceStatementMs.toFixed(0)} ms, under the minimal capture trigger ${minimalStatementMs.toFixed(0)} ms`);
    server = await startLoadServer(databaseUrl, { messageTime: MESSAGE_TIME, timeout: TIMEOUT });
    const received = new Received(rows);
    clients = await openClients(server, await issueTokens(pool, 1), { concurrency: 1, timeout: TIMEOUT, onFrame: received.frame, onClose: received.close });

    // the capture's order is the UPDATE's: its sequential scan's, the rows' physical order
    const { rows: ids } = await pool.query<{ id: string }>('SELECT id FROM tasks ORDER BY ctid');
    const startedAt = wallClock();
    await pool.query(`UPDATE tasks SET status = 'done'`);
    const committedAt = wallClock();
    log(`the UPDATE with our triggers took ${(committedAt - startedAt).toFixed(0)} ms; waiting for ${rows} events`);
    await received.conditions
      .waitFor(() => received.count === rows || received.closed, `the client to have ${rows} events`, TIMEOUT)
      .catch((error: Error) => log(`${error.message} (it has ${received.count})`));
    const lastAt = received.arrivals.at(-1)?.at ?? NaN;
    const deliveredMs = lastAt - startedAt;
    const serverSentAt = await server.sentAt(Math.floor(startedAt), rows, 10_000);

    const round = (ms: number): number => Math.round(ms * 10) / 10;
    detail = {
      rows,
      referenceStatementMs: round(referenceStatementMs),
      minimalStatementMs: round(minimalStatementMs),
      statementMs: round(committedAt - startedAt),
      deliveredMs: round(deliveredMs),
      eventsPerSecond: Math.round(received.count === rows ? rows / (deliveredMs / 1000) : 0),
      commitToFirstFrameMs: round((received.arrivals[0]?.at ?? NaN) - committedAt),
      commitToServerSentMs: serverSentAt === null ? null : round(serverSentAt - committedAt),
      commitToLastFrameMs: round(lastAt - committedAt),
      frames: received.arrivals.length,
      arrivals: received.arrivals.map(({ at, events }) => ({ afterCommitMs: round(at - committedAt), events })),
      clientParseMs: round(received.parseMs),
      problems: {
        lost: rows - received.count,
        outOfOrder: outOfOrder(received, ids.map((row) => Number(row.id))),
        otherEvents: received.otherEvents,
        extra: received.extra,
        closed: received.closed,
      },
    };
  } finally {
    clients?.close();
    await server?.shutdown(30_000);
    await pool.end();
  }
  log(
    `statement ${detail.statementMs} ms (without triggers ${detail.referenceStatementMs} ms); commit → first frame ${detail.commitToFirstFrameMs} ms, ` +
      `→ server's last send ${detail.commitToServerSentMs} ms, → last frame ${detail.commitToLastFrameMs} ms; ${detail.frames} frames, client parsing ${detail.clientParseMs} ms`,
  );
  const { lost, outOfOrder: misplaced, otherEvents, extra, closed } = detail.problems;
  if (lost + misplaced + otherEvents + extra > 0 || closed) {
    throw new Error(`delivery incomplete: ${lost} lost, ${misplaced} out of order, ${otherEvents} of another kind, ${extra} extra${closed ? ', client closed' : ''}`);
  }
  return { rows: benchRows(detail), detail };
}

function benchRows(result: BulkResult): BenchRow[] {
  return [
    {
      name: `bulk UPDATE of ${result.rows.toLocaleString('en-US')} rows → 1 client (statement start → last event)`,
      unit: 'events/s',
      ours: result.eventsPerSecond,
      reference: { label: 'the UPDATE without triggers (rows / its time)', value: Math.round(result.rows / (result.referenceStatementMs / 1000)) },
      target: { kind: 'at-least', value: TARGET },
    },
    {
      name: `bulk UPDATE of ${result.rows.toLocaleString('en-US')} rows: the statement with our capture (start → commit)`,
      unit: 'ms',
      ours: result.statementMs,
      reference: { label: 'the same under the minimal capture trigger', value: result.minimalStatementMs },
      target: { kind: 'ratio-at-most', value: CAPTURE_TARGET },
    },
  ];
}

/** The bulk row: events/s against the UPDATE without triggers. */
export async function run(options: BulkOptions): Promise<BenchRow[]> {
  return (await measure(options)).rows;
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: { rows: { type: 'string' } } });
  const rows = positive('rows', values.rows, ROWS);
  runStandalone('bulk', { rows }, (databaseUrl, log) => measure({ databaseUrl, log, rows }));
}
