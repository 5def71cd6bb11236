// `npm run bench:resume [-- --events 100000 --rounds 3]`: a v2 resume of a large backlog (issue 11,
// item 5), against the same events delivered live, in the same run, rounds alternating which goes
// first. One plugin server in a process of its own (messageLimit 1,000, messageTime 5 s); one v2
// client, which parses every frame in full (as bulk.ts's client does).
// - resume: the client connects, takes its ready cursor and disconnects; ONE statement creates
//   `events` tasks (`events` task_created events); once the server's listener has read them (so
//   its read does not run beside the backlog's), the client reconnects with the cursor. Timed
//   from the reconnect (and, in the JSON, from the 101) to the last of the events at the client.
// - reference: the client connected; the same statement; timed from its commit to the last event.
// Each must deliver exactly the statement's events, in outbox order, none twice. Events/s =
// events / the median time; target: the resume ≥ 50,000 events/s. Give `--events` as a multiple
// of 1,000 (messageLimit): a live remainder waits for the timed message, by design.
// Run by itself, against a fresh database on TEST_DATABASE_URL (or DATABASE_URL; else an embedded
// PostgreSQL), dropped after; the JSON goes to bench/results/ (git-ignored).
import pg from 'pg';
import { ClientPool, wallClock } from '../harness/client-pool.js';
import { Conditions } from '../harness/conditions.js';
import { issueTokens } from '../harness/db.js';
import { LIFECYCLE_EVENTS, type PluginStats } from '../harness/lines.js';
import { ServerProcess } from '../harness/server-process.js';
import { isMain, runStandalone } from './standalone.js';
import { median, positiveArgs, type BenchOptions, type BenchRow } from './support.js';
import { V2, v2Url } from './v2.js';

const TARGET = 50_000;
const TIMEOUT = 300_000;

/** What a run does unless told otherwise (`--events`, `--rounds`). */
const DEFAULTS = {
  /** Events of the statement: the backlog's size. */
  events: 100_000,
  /** Measured rounds of each, after one that warms both up. */
  rounds: 3,
};

/** What {@link measure} does; its database gets `events` × 2 × (rounds + 1) tasks. */
export type ResumeOptions = BenchOptions & Partial<typeof DEFAULTS>;

/** One round of each, ms. */
export interface ResumeRound {
  /** Live: the statement's commit → its last event at the client. */
  liveMs: number;
  /** Resume: the reconnect → the last event of the backlog at the client. */
  resumeMs: number;
  /** Resume: the 101 → the last event. */
  resumeFromOpenMs: number;
  /** Resume: the reconnect → the first events frame. */
  resumeFirstFrameMs: number;
  /** How long each statement took, to its commit. */
  statementMs: { live: number; resume: number };
  /** Events frames of the resume. */
  resumeFrames: number;
}

/** Every round's times, and the figures of the rows. */
export interface ResumeDetail {
  events: number;
  rounds: ResumeRound[];
  resumeEventsPerSecond: number;
  liveEventsPerSecond: number;
}

/** What one connection of the v2 client received: its ready cursor, its events' task ids in order. */
class Stream {
  readonly taskIds: Int32Array;
  readonly conditions = new Conditions();
  readyCursor: string | null = null;
  count = 0;
  extra = 0;
  /** Frames that are neither ready, events nor cursor (an error frame). */
  strange: string[] = [];
  frames = 0;
  firstAt = NaN;
  lastAt = NaN;
  closed = false;

  constructor(readonly expected: number) {
    this.taskIds = new Int32Array(expected);
  }

  frame = (_client: number, frame: Buffer, receivedAt: number): void => {
    const message = JSON.parse(frame.toString()) as { type: string; cursor?: string; events?: { task_id: number }[] };
    if (message.type === 'ready') this.readyCursor = message.cursor ?? null;
    else if (message.type === 'events' && message.events) {
      if (this.frames++ === 0) this.firstAt = receivedAt;
      this.lastAt = receivedAt;
      for (const event of message.events) {
        if (this.count === this.expected) this.extra++;
        else this.taskIds[this.count++] = event.task_id;
      }
    } else if (message.type !== 'cursor') this.strange.push(frame.toString().slice(0, 200));
    this.conditions.check();
  };

  close = (): void => {
    this.closed = true;
    this.conditions.check();
  };

  /** Resolves once it has every expected event (or was closed, or got an error frame). */
  async complete(): Promise<void> {
    await this.conditions.waitFor(() => this.count === this.expected || this.closed || this.strange.length > 0, `${this.expected} events`, TIMEOUT, () => `${this.count} received`);
  }

  /** Throws unless it received exactly `taskIds` (the statement's, in outbox order), each once. */
  check(what: string, taskIds: readonly number[]): void {
    let misplaced = 0;
    for (let index = 0; index < this.count; index++) if (this.taskIds[index] !== taskIds[index]) misplaced++;
    const lost = taskIds.length - this.count;
    if (lost || misplaced || this.extra || this.closed || this.strange.length) {
      throw new Error(`${what}: ${lost} lost, ${misplaced} out of order or not the statement's, ${this.extra} extra${this.closed ? ', the client was closed' : ''}${this.strange.length ? `, frames: ${this.strange.join(' ')}` : ''}`);
    }
  }
}

/** The plugin server, its read events summed (`caught-up`), and the bench's own pool. */
class Setup {
  readonly conditions = new Conditions();
  eventsRead = 0;

  constructor(readonly server: ServerProcess<PluginStats>, readonly pool: pg.Pool, readonly events: number) {
    server.on('caught-up', (line: { events?: unknown }) => {
      this.eventsRead += Number(line.events);
      this.conditions.check();
    });
  }

  /** One v2 client of a fresh token, from `cursor` (or from now); resolves at the 101, with its time. */
  async connect(stream: Stream, cursor: string | null): Promise<{ clients: ClientPool; openedAt: number }> {
    const [token] = await issueTokens(this.pool, 1);
    const clients = await ClientPool.connect([v2Url(this.server, token as string, cursor)], { concurrency: 1, timeout: TIMEOUT, protocol: V2, onFrame: stream.frame, onClose: stream.close });
    return { clients, openedAt: wallClock() };
  }

  /** Closes the client and waits until the server has let it go. */
  async disconnect(clients: ClientPool): Promise<void> {
    clients.close();
    await this.server.untilConnections(0, TIMEOUT);
  }

  /** ONE statement creating `events` tasks; resolves with its time, its commit (wallClock) and the outbox's mark before it. */
  async write(): Promise<{ statementMs: number; committedAt: number; mark: string }> {
    const { rows } = await this.pool.query<{ id: string }>('SELECT coalesce(max(id), 0) AS id FROM task_events.outbox');
    const startedAt = wallClock();
    await this.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) SELECT 1, 1 + n % 3, 'resume ' || n FROM generate_series(1, $1::int) n`, [this.events]);
    const committedAt = wallClock();
    return { statementMs: committedAt - startedAt, committedAt, mark: (rows[0] as { id: string }).id };
  }

  /** The task ids of the events after `mark`, in outbox order: the statement's (read once the client has them). */
  async taskIdsAfter(mark: string): Promise<number[]> {
    const { rows } = await this.pool.query<{ task_id: string }>('SELECT task_id FROM task_events.outbox WHERE id > $1 ORDER BY id', [mark]);
    if (rows.length !== this.events) throw new Error(`the statement wrote ${rows.length} outbox rows, not ${this.events}`);
    return rows.map((row) => Number(row.task_id));
  }

  /** Resolves once the server's listener has read `events` events since `before` were read. */
  async readByListener(before: number): Promise<void> {
    await this.conditions.waitFor(() => this.eventsRead - before >= this.events, `the listener to read ${this.events} events`, TIMEOUT);
  }
}

/** Live: a connected v2 client, the statement, its commit → the last event at the client. */
async function liveRound(setup: Setup): Promise<{ ms: number; statementMs: number }> {
  const stream = new Stream(setup.events);
  const { clients } = await setup.connect(stream, null);
  try {
    await stream.conditions.waitFor(() => stream.readyCursor !== null, 'the ready frame', TIMEOUT);
    await setup.server.untilConnections(1, TIMEOUT);
    const { statementMs, committedAt, mark } = await setup.write();
    await stream.complete();
    stream.check('live', await setup.taskIdsAfter(mark));
    return { ms: stream.lastAt - committedAt, statementMs };
  } finally {
    await setup.disconnect(clients);
  }
}

/** Resume: the ready cursor, away, the statement (read by the listener), back with the cursor. */
async function resumeRound(setup: Setup): Promise<Omit<ResumeRound, 'liveMs' | 'statementMs'> & { statementMs: number }> {
  const first = new Stream(0);
  const away = await setup.connect(first, null);
  await first.conditions.waitFor(() => first.readyCursor !== null, 'the ready frame', TIMEOUT);
  await setup.server.untilConnections(1, TIMEOUT);
  await setup.disconnect(away.clients);

  const readBefore = setup.eventsRead;
  const { statementMs, mark } = await setup.write();
  await setup.readByListener(readBefore);

  const stream = new Stream(setup.events);
  const reconnectAt = wallClock();
  const { clients, openedAt } = await setup.connect(stream, first.readyCursor);
  try {
    await stream.complete();
    stream.check('resume', await setup.taskIdsAfter(mark));
    return {
      resumeMs: stream.lastAt - reconnectAt,
      resumeFromOpenMs: stream.lastAt - openedAt,
      resumeFirstFrameMs: stream.firstAt - reconnectAt,
      resumeFrames: stream.frames,
      statementMs,
    };
  } finally {
    await setup.disconnect(clients);
  }
}

/** Rounds of both, alternating which goes first; the first round of each warms up and is not counted. */
export async function measure(options: ResumeOptions): Promise<{ rows: BenchRow[]; detail: ResumeDetail }> {
  const { databaseUrl, events, rounds, log = () => {} } = { ...DEFAULTS, ...options };
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  let server: ServerProcess<PluginStats> | undefined;
  const measured: ResumeRound[] = [];
  try {
    server = await ServerProcess.startPlugin({ plugin: { connectionString: databaseUrl }, events: [...LIFECYCLE_EVENTS, 'caught-up'] }, { timeout: TIMEOUT });
    const setup = new Setup(server, pool, events);
    for (let round = 0; round <= rounds; round++) {
      let live: { ms: number; statementMs: number } | undefined;
      let resume: Awaited<ReturnType<typeof resumeRound>> | undefined;
      for (const which of round % 2 ? ['resume', 'live'] : ['live', 'resume']) {
        if (which === 'live') live = await liveRound(setup);
        else resume = await resumeRound(setup);
      }
      if (!live || !resume) throw new Error('a round did not run');
      const { statementMs, ...resumed } = resume;
      const times: ResumeRound = { liveMs: round1(live.ms), ...roundAll(resumed), statementMs: { live: round1(live.statementMs), resume: round1(statementMs) } };
      log(`${round ? `round ${round}` : 'warm-up'}: resume ${times.resumeMs} ms (from the 101 ${times.resumeFromOpenMs} ms, first frame at ${times.resumeFirstFrameMs} ms, ${times.resumeFrames} frames), live ${times.liveMs} ms`);
      if (round > 0) measured.push(times);
    }
  } finally {
    await server?.shutdown(30_000);
    await pool.end();
  }
  const detail: ResumeDetail = {
    events,
    rounds: measured,
    resumeEventsPerSecond: Math.round(events / (median(measured.map((times) => times.resumeMs)) / 1000)),
    liveEventsPerSecond: Math.round(events / (median(measured.map((times) => times.liveMs)) / 1000)),
  };
  return { rows: benchRows(detail), detail };
}

function round1(ms: number): number {
  return Math.round(ms * 10) / 10;
}

function roundAll<T extends Record<string, number>>(times: T): T {
  return Object.fromEntries(Object.entries(times).map(([key, value]) => [key, round1(value)])) as T;
}

function benchRows(detail: ResumeDetail): BenchRow[] {
  return [
    {
      name: `v2 resume of a ${detail.events.toLocaleString('en-US')}-event backlog → 1 client (reconnect → last event)`,
      unit: 'events/s',
      ours: detail.resumeEventsPerSecond,
      reference: { label: 'the same live to a connected v2 client (commit → last event)', value: detail.liveEventsPerSecond },
      target: { kind: 'at-least', value: TARGET },
    },
  ];
}

if (isMain(import.meta.url)) {
  const settings = positiveArgs(DEFAULTS);
  runStandalone('resume', settings, (databaseUrl, log) => measure({ databaseUrl, log, ...settings }));
}
