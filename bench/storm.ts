// `npm run bench:storm [-- --clients 1000 --rate 200 --jitter 500]`: a reconnect storm of protocol
// v2 (issue 11, item 5). `clients` v2 clients (raw `ws` clients of harness/client-pool.ts, which
// keep their last cursor as the client module does) on one plugin server in a process of its own,
// while a writer commits ~`rate` events a second (10-row INSERTs, one after another, so commit
// order is task id order). The server is restarted as a deploy does it: SIGTERM (it flushes, closes
// every socket with 1001, exits), then a new process. Once it listens, every client resumes from its
// last cursor with a fresh token, after a delay drawn from 0–`jitter` ms (the client module's first
// backoff is drawn from 0–500 ms), and again with a fresh token and a doubled bound if an attempt fails.
// - Caught up: from the new server listening to the last client having every event committed
//   up to then (the mark); reported beside the reference, the same clients' first connects at
//   once with the same jitter (to the last ready frame), in the same run.
// - Exactly once: the writer stops; every client must have every event it wrote, each once, in
//   commit order, and nothing else (checked against the outbox).
// - Queries per resume: the statements the new server's pg clients sent for the resumes (each
//   handshake's token consume and snapshot, each backlog read's BEGIN, DECLARE, FETCHes and COMMIT),
//   counted inside its process (bench/query-count.ts; pg_stat_statements is not loaded here), per
//   successful resume. Target: no more than the design (2 + 3 + one FETCH per `readBatchSize` of
//   backlog). As a cross-check, pg_stat_database's commits and rollbacks of the bench database over
//   the new server's life against what that process, the writer and the bench itself counted (they
//   differ by a few dozen: PostgreSQL counts new connections, and reports a backend's counts up to a
//   second late, so the old server's and the writer's last second fall inside the window).
// Run by itself, against a fresh database on TEST_DATABASE_URL (or DATABASE_URL; else an embedded
// PostgreSQL), dropped after; the JSON goes to bench/results/ (git-ignored).
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { wallClock } from '../harness/client-pool.js';
import { issueTokens } from '../harness/db.js';
import { LIFECYCLE_EVENTS, type Line, type PluginStats } from '../harness/lines.js';
import { ServerProcess } from '../harness/server-process.js';
import { isMain, runStandalone } from './standalone.js';
import { positiveArgs, type BenchOptions, type BenchRow } from './support.js';
import { spread, StormClients, type Spread } from './storm-clients.js';

const TIMEOUT = 120_000;
/** The plugin's default: a backlog read FETCHes this many rows at a time. */
const READ_BATCH_SIZE = 5000;
/** Rows per INSERT of the writer. */
const WRITE_BATCH = 10;

/** What a run does unless told otherwise (`--clients`, `--rate`, `--jitter`). */
const DEFAULTS = {
  /** v2 clients. */
  clients: 1000,
  /** Events written a second throughout. */
  rate: 200,
  /** A client's first attempt waits 0 to this many ms. */
  jitter: 500,
};

/** What {@link measure} does. */
export type StormOptions = BenchOptions & Partial<typeof DEFAULTS>;

/** The counts of bench/query-count.ts's line. */
interface QueryCounts {
  statements: { token: number; streamPoint: number; backlog: number; other: number };
  backlogReads: number;
  transactions: number;
  other: Record<string, number>;
}

/** What one run measured; times in ms. */
export interface StormDetail {
  clients: number;
  rate: number;
  jitter: number;
  /** The reference: first connects at once → the last ready frame. */
  connectMs: number;
  /** SIGTERM → the old server exited; → the new one listening. */
  terminateMs: number;
  restartMs: number;
  /** Events committed after the first client's stream began up to the mark; the most any client lacked at the restart. */
  eventsToMark: number;
  largestBacklog: number;
  /** New server listening → every client's 101; → its ready frame; → all caught up (the row). */
  allOpenMs: number;
  allReadyMs: number;
  caughtUpMs: number;
  /** Each client's wait: its (last) attempt → its 101; → it had every event up to the mark. p50, p90, max. */
  perClient: { toOpen: Spread; toCaughtUp: Spread };
  /** Failed attempts, retried (none expected). */
  retries: number;
  /** How the old server's sockets closed: code → clients. */
  closeCodes: Record<string, number>;
  /** Handshakes with a cursor the new server accepted. */
  resumes: number;
  /** The new server's statements for them, by kind, and per resume; the design's count. */
  queries: QueryCounts;
  queriesPerResume: number;
  transactionsPerResume: number;
  designQueriesPerResume: number;
  /** Fresh connects on the old server: statements per handshake (the design: token, snapshot). */
  queriesPerConnect: number;
  /** pg_stat_database over the new server's life against the transactions counted. */
  crossCheck: { databaseTransactions: number; serverTransactions: number; writerCommits: number; benchQueries: number; unaccounted: number };
  /** Events the writer committed in all, each checked at every client. */
  eventsWritten: number;
  problems: { lost: number; duplicated: number; unexpected: number; outOfOrder: number; errorFrames: number; unexpectedCloses: number };
}

/** A sequential writer of ~`rate` events a second (task_created, one per task), on a connection of its own. */
class Writer {
  readonly #client: pg.Client;
  readonly #interval: number;
  #stopping = false;
  #done: Promise<void> = Promise.resolve();
  commits = 0;

  constructor(databaseUrl: string, rate: number) {
    this.#client = new pg.Client({ connectionString: databaseUrl });
    this.#interval = (1000 * WRITE_BATCH) / rate;
  }

  async start(): Promise<void> {
    await this.#client.connect();
    const started = performance.now();
    this.#done = (async () => {
      for (let write = 0; !this.#stopping; write++) {
        const wait = started + write * this.#interval - performance.now();
        if (wait > 0) await sleep(wait);
        await this.#client.query(`INSERT INTO tasks (environment_id, object_class_id, name) SELECT 1, 1 + n % 3, 'storm ' || n FROM generate_series(1, ${WRITE_BATCH}) n`);
        this.commits++;
      }
    })();
    this.#done.catch(() => {}); // a failed write is thrown by stop()
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    try {
      await this.#done;
    } finally {
      await this.#client.end();
    }
  }
}

/** The plugin server for many clients of one user, counting its queries, reporting each handshake. */
function startServer(databaseUrl: string): Promise<ServerProcess<PluginStats>> {
  const plugin = { connectionString: databaseUrl, maxConnectionsPerUser: 0, maxConnectionsPerIp: 0, maxConnections: 0 };
  const nodeFlags = ['--import', 'tsx', '--import', fileURLToPath(new URL('./query-count.ts', import.meta.url))];
  return ServerProcess.startPlugin({ plugin, events: [...LIFECYCLE_EVENTS, 'handshake'] }, { nodeFlags, timeout: TIMEOUT });
}

/** The `queries` line the server prints as it exits (rejects if it exits without one). */
function queriesAtExit(server: ServerProcess): Promise<QueryCounts> {
  const counts = new Promise<QueryCounts>((resolve, reject) => {
    server.once('queries', (line: Line) => resolve(line as unknown as QueryCounts));
    server.once('exit', () => reject(new Error('the server exited without its query counts (bench/query-count.ts not loaded?)')));
  });
  counts.catch(() => {}); // awaited once the server has exited
  return counts;
}

/** The resumes the server accepted (handshakes with a cursor, outcome ok), counted as reported. */
function countResumes(server: ServerProcess): { ok: number; fresh: number } {
  const counted = { ok: 0, fresh: 0 };
  server.on('handshake', (line: { outcome?: unknown; resume?: unknown }) => {
    if (line.outcome === 'ok') counted[line.resume ? 'ok' : 'fresh']++;
  });
  return counted;
}

/** Commits and rollbacks of `database` so far, read from another database (so the reading is not counted). */
async function databaseTransactions(databaseUrl: string): Promise<number> {
  const url = new URL(databaseUrl);
  const database = url.pathname.slice(1);
  url.pathname = '/postgres';
  const client = new pg.Client({ connectionString: url.toString() });
  await client.connect();
  try {
    const { rows } = await client.query<{ total: string }>('SELECT xact_commit + xact_rollback AS total FROM pg_stat_database WHERE datname = $1', [database]);
    return Number(rows[0]?.total);
  } finally {
    await client.end();
  }
}

/** What the steps of one run share. */
interface Run {
  databaseUrl: string;
  count: number;
  jitter: number;
  log: (line: string) => void;
  pool: pg.Pool;
  writer: Writer;
  clients: StormClients;
  servers: ServerProcess[];
  /** Statements the bench itself ran on the bench database (for the cross-check). */
  benchQueries: number;
}

/** A statement of the bench's own on the bench database, counted. */
function query<Row extends pg.QueryResultRow>(run: Run, text: string, values: unknown[] = []): Promise<pg.QueryResult<Row>> {
  run.benchQueries++;
  return run.pool.query<Row>(text, values);
}

/** A fresh token for a retried attempt, counted. */
async function freshToken(run: Run): Promise<string> {
  run.benchQueries++;
  return (await issueTokens(run.pool, 1))[0] as string;
}

/** A server, counting its statements and the handshakes it accepted. */
async function startCounted(run: Run): Promise<{ server: ServerProcess<PluginStats>; queries: Promise<QueryCounts>; handshakes: { ok: number; fresh: number } }> {
  const server = await startServer(run.databaseUrl);
  run.servers.push(server);
  return { server, queries: queriesAtExit(server), handshakes: countResumes(server) };
}

/** The reference: every client's first connect, at once (jittered), on the first server; → the last ready frame. */
async function firstConnects(run: Run): Promise<Awaited<ReturnType<typeof startCounted>> & { connectMs: number }> {
  const { clients, count, jitter } = run;
  const first = await startCounted(run);
  const tokens = await issueTokens(run.pool, count);
  const started = wallClock();
  await clients.connectAll(first.server, tokens, jitter, () => freshToken(run));
  await clients.until(() => clients.readyAt.every((at) => at > 0), `${count} ready frames`);
  const connectMs = Math.max(...clients.readyAt) - started;
  await first.server.untilConnections(count, TIMEOUT);
  run.log(`${count} v2 clients connected at once (0–${jitter} ms jitter): the last ready frame after ${connectMs.toFixed(0)} ms`);
  return { ...first, connectMs };
}

/**
 * The restart: SIGTERM, every socket closed, a new process; the mark (every event committed when
 * it listens). The cross-check's window opens before the new process starts.
 */
async function restart(run: Run, first: ServerProcess) {
  const { clients, count, writer } = run;
  const tokens = await issueTokens(run.pool, count);
  clients.readyAt.fill(0);
  clients.restarting = true;
  const terminated = wallClock();
  const exit = await first.terminate(30_000);
  const terminateMs = wallClock() - terminated;
  if (exit?.code !== 0) throw new Error(`the first server did not exit cleanly on SIGTERM: ${JSON.stringify(exit)}`);
  await clients.until(() => clients.closed === count, `${count} clients to see the close`);
  clients.restarting = false;
  const window = { transactions: await databaseTransactions(run.databaseUrl), writerCommits: writer.commits, benchQueries: run.benchQueries };

  const second = await startCounted(run);
  const listening = wallClock();
  const { rows } = await query<{ mark: string; events: string }>(run, 'SELECT max(task_id) AS mark, count(*) AS events FROM task_events.outbox WHERE task_id >= $1', [clients.base]);
  const mark = Number(rows[0]?.mark);
  const eventsToMark = Number(rows[0]?.events);
  const largestBacklog = clients.largestGap(mark, eventsToMark);
  clients.setMark(mark, eventsToMark);
  const restartMs = listening - terminated;
  run.log(`SIGTERM → exited ${terminateMs.toFixed(0)} ms, → the new server listening ${restartMs.toFixed(0)} ms; ${eventsToMark} events up to the mark, a client lacks at most ${largestBacklog}`);
  return { second, tokens, listening, window, terminateMs, restartMs, eventsToMark, largestBacklog };
}

/** Every client resumes on the new server; times from its listening to every 101, ready frame, caught up. */
async function resumeAll(run: Run, server: ServerProcess, tokens: readonly string[], listening: number) {
  const { clients, count } = run;
  await clients.connectAll(server, tokens, run.jitter, () => freshToken(run));
  const allOpenMs = Math.max(...clients.openAt) - listening;
  await clients.until(() => clients.caughtUp === count, `${count} clients to catch up to the mark`);
  const caughtUpMs = clients.caughtUpAt - listening;
  await clients.until(() => clients.readyAt.every((at) => at > 0), `${count} ready frames`);
  const allReadyMs = Math.max(...clients.readyAt) - listening;
  const perClient = {
    toOpen: spread(clients.openAt.map((at, client) => at - (clients.attemptAt[client] as number))),
    toCaughtUp: spread(clients.caughtUpAtOf.map((at, client) => at - (clients.attemptAt[client] as number))),
  };
  run.log(`resumed: every 101 after ${allOpenMs.toFixed(0)} ms, every ready frame after ${allReadyMs.toFixed(0)} ms, all caught up after ${caughtUpMs.toFixed(0)} ms (${clients.retries} retries)`);
  run.log(`a client's wait from its attempt: to its 101 ${JSON.stringify(perClient.toOpen)} ms, to caught up ${JSON.stringify(perClient.toCaughtUp)} ms`);
  return { allOpenMs: Math.round(allOpenMs), allReadyMs: Math.round(allReadyMs), caughtUpMs: Math.round(caughtUpMs), perClient };
}

/** The writer stops; every client must get every event it wrote, once each, and nothing else. */
async function exactlyOnce(run: Run): Promise<{ eventsWritten: number; lost: number; duplicated: number; unexpected: number }> {
  const { clients, count } = run;
  await run.writer.stop();
  const { rows } = await query<{ task_id: string }>(run, 'SELECT task_id FROM task_events.outbox WHERE task_id >= $1 ORDER BY id', [clients.base]);
  const taskIds = rows.map((row) => Number(row.task_id));
  clients.setMark(taskIds.at(-1) as number, taskIds.length);
  await clients.until(() => clients.caughtUp === count, `${count} clients to have all ${taskIds.length} events written`);
  return { eventsWritten: taskIds.length, ...clients.check(taskIds) };
}

/** The new server's statements per resume, and the cross-check over its life (it is closed here). */
async function resumeQueries(run: Run, second: Awaited<ReturnType<typeof startCounted>>, window: { transactions: number; writerCommits: number; benchQueries: number }) {
  run.clients.closeAll();
  await second.server.shutdown(30_000);
  const queries = await second.queries;
  await sleep(1500); // a backend reports its counts within a second of going idle, and as it exits
  const databaseTransactionsInWindow = (await databaseTransactions(run.databaseUrl)) - window.transactions;
  const resumes = second.handshakes.ok;
  const { token, streamPoint, backlog } = queries.statements;
  if (resumes && (!token || !streamPoint || !backlog)) {
    throw new Error(`bench/query-count.ts no longer recognizes a resume's statements (${JSON.stringify(queries.statements)}): update it to lib/'s SQL`);
  }
  const writerCommits = run.writer.commits - window.writerCommits;
  const benchQueries = run.benchQueries - window.benchQueries;
  const crossCheck = {
    databaseTransactions: databaseTransactionsInWindow,
    serverTransactions: queries.transactions,
    writerCommits,
    benchQueries,
    unaccounted: databaseTransactionsInWindow - queries.transactions - writerCommits - benchQueries,
  };
  const perResume = { queriesPerResume: (token + streamPoint + backlog) / resumes, transactionsPerResume: (token + streamPoint + queries.backlogReads) / resumes };
  run.log(
    `${resumes} resumes: ${perResume.queriesPerResume.toFixed(2)} statements each (token ${token}, snapshot ${streamPoint}, backlog ${backlog} in ${queries.backlogReads} reads), ` +
      `${perResume.transactionsPerResume.toFixed(2)} transactions; pg_stat_database: ${databaseTransactionsInWindow} transactions over the new server's life, ` +
      `${queries.transactions} counted in it, ${writerCommits} the writer's, ${benchQueries} the bench's: ${crossCheck.unaccounted} unaccounted`,
  );
  return { resumes, queries, ...perResume, crossCheck };
}

/** The restart, timed; every client resumed; the checks. See the header. */
export async function measure(options: StormOptions): Promise<{ rows: BenchRow[]; detail: StormDetail }> {
  const { databaseUrl, clients: count, rate, jitter, log = () => {} } = { ...DEFAULTS, ...options };
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  const writer = new Writer(databaseUrl, rate);
  const servers: ServerProcess[] = [];
  let clients: StormClients | undefined;
  try {
    // The writer's tasks come after these: every client's stream has all of their events.
    const { rows: bases } = await pool.query<{ id: string }>('SELECT coalesce(max(id), 0) AS id FROM tasks');
    clients = new StormClients(count, Number(bases[0]?.id) + 1, TIMEOUT);
    const run: Run = { databaseUrl, count, jitter, log, pool, writer, clients, servers, benchQueries: 1 };
    const first = await firstConnects(run);

    // Live: the writer, until every client has had a message (so each holds a cursor past its ready one).
    await run.writer.start();
    await run.clients.until(() => run.clients.frames.every((frames) => frames > 0), 'every client to have an events frame');
    log(`writing ~${rate} events/s; every client has had events`);

    const { second, tokens, listening, window, ...restarted } = await restart(run, first.server);
    const resumed = await resumeAll(run, second.server, tokens, listening);
    const { eventsWritten, ...delivery } = await exactlyOnce(run);
    const fresh = await first.queries;
    const counted = await resumeQueries(run, second, window);
    const detail: StormDetail = {
      clients: count,
      rate,
      jitter,
      connectMs: Math.round(first.connectMs),
      ...restarted,
      terminateMs: Math.round(restarted.terminateMs),
      restartMs: Math.round(restarted.restartMs),
      ...resumed,
      retries: clients.retries,
      closeCodes: Object.fromEntries(clients.closeCodes),
      ...counted,
      designQueriesPerResume: 2 + 3 + Math.floor(restarted.largestBacklog / READ_BATCH_SIZE) + 1,
      queriesPerConnect: (fresh.statements.token + fresh.statements.streamPoint) / first.handshakes.fresh,
      eventsWritten,
      problems: { ...delivery, outOfOrder: clients.outOfOrder, errorFrames: clients.errorFrames.length, unexpectedCloses: clients.unexpectedCloses.length },
    };
    const problems = Object.entries(detail.problems).filter(([, value]) => value > 0);
    if (problems.length) throw new Error(`delivery not exactly once: ${problems.map(([name, value]) => `${value} ${name}`).join(', ')}`);
    if (detail.resumes !== count) throw new Error(`${detail.resumes} resumes accepted, ${count} expected`);
    return { rows: benchRows(detail), detail };
  } finally {
    clients?.closeAll();
    await writer.stop().catch(() => {});
    await Promise.all(servers.map((server) => server.shutdown(30_000)));
    await pool.end();
  }
}

function benchRows(detail: StormDetail): BenchRow[] {
  const clients = detail.clients.toLocaleString('en-US');
  return [
    {
      name: `reconnect storm, ${clients} v2 clients, ~${detail.rate} events/s: new server listening → all caught up`,
      unit: 'ms',
      ours: detail.caughtUpMs,
      reference: { label: `${clients} first connects at once, same jitter → all ready`, value: detail.connectMs },
    },
    {
      name: 'reconnect storm: statements per resume (counted in the server process)',
      unit: 'queries',
      ours: Math.round(detail.queriesPerResume * 100) / 100,
      reference: { label: 'the design (token, snapshot, BEGIN, DECLARE, FETCH, COMMIT)', value: detail.designQueriesPerResume },
      target: { kind: 'ratio-at-most', value: 1 },
    },
  ];
}

if (isMain(import.meta.url)) {
  const settings = positiveArgs(DEFAULTS);
  runStandalone('storm', settings, (databaseUrl, log) => measure({ databaseUrl, log, ...settings }));
}
