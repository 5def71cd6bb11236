// `npm run bench:scale [-- --instances 8 --clients 1000 --rate 200 --seconds 20 --messageTime 1000]`:
// scale-out, measured (issue 14, item 4). For 1, 2, 4, … up to `instances` plugin instances on one
// database, each a process of its own (harness/plugin-server.ts), `clients` ws clients spread
// evenly over them (client i on instance i mod N), while a writer (bench/latency-writer.ts, a
// process of its own) commits `rate` single-row UPDATEs a second: one event per commit, which is
// the most wake-ups per event, the costliest pattern for the outbox reads. Every instance reads every
// event (PostgreSQL is the bus), so each pays its own reads. Over a window of `seconds` of writes
// (less the first second's writes, the warm-up, and the last half second's), for each N:
// - DB CPU of the outbox reads, per instance (accounted in bench/scale-cpu.ts): the CPU time
//   (utime + stime, from /proc: the server runs on this machine; pg_stat_statements is not
//   loaded) of the instance's pool backends, which
//   between handshakes do nothing but the listener's work (a read's two round trips, and a look at
//   the doorbell every 200 ms), told apart by the application_name each instance connects with and
//   from its LISTEN connection by its statements; per second of wall time, per read (the
//   instance's `caught-up` events) and per event read. The LISTEN connections' CPU, the writer's
//   backend (the UPDATE with its capture), the whole bench database with the server's background
//   processes, the instances' own processes and the machine are recorded beside it. Before the
//   writes, 3 s idle (the doorbell looks and polls alone); before the rounds, the price of an
//   event in a read: one INSERT of 50,000 tasks read by one instance without clients. A read's own
//   cost is then the window's reads' CPU less the idle rate and its events at that price, per read.
// - Delivery: a client's k-th event must be the k-th write (bench/latency.ts's Deliveries), every
//   client must have all of them, once each, and the outbox must hold exactly the writes' events;
//   latency p50/p99 from each write's commit to its frame at each client. `messageTime` is 1,000 ms
//   here, not the default 5,000, so that the reads' share of the latency is visible (p99 ≈
//   messageTime + the read's delay); events delivered per second in all (pairs over the writes' time).
// Rows: per N, the DB CPU of the reads per instance and the latency p99, each against 1 instance's
// (reported), and events delivered exactly once per second against what was owed (target: all of
// them). Run by itself, against a fresh database on TEST_DATABASE_URL (or DATABASE_URL; else an
// embedded PostgreSQL, which runs on this machine too), dropped after; the JSON goes to
// bench/results/ (git-ignored).
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { openClients, type ClientPool } from '../harness/client-pool.js';
import { Conditions } from '../harness/conditions.js';
import { issueTokens } from '../harness/db.js';
import type { PluginStats } from '../harness/lines.js';
import { startLoadServer } from '../harness/load.js';
import type { ServerProcess } from '../harness/server-process.js';
import { createTasks, Deliveries, join, runWriter } from './latency.js';
import { APPLICATION, asApplication, round, sample, windowCpu, type InstanceFigures, type WindowCpu } from './scale-cpu.js';
import { isMain, runStandalone } from './standalone.js';
import { positiveArgs, type BenchOptions, type BenchRow } from './support.js';

/** What a run does unless told otherwise. */
const DEFAULTS = {
  /** The most instances: rounds of 1, 2, 4, … up to this. */
  instances: 8,
  clients: 1000,
  /** Writes (single-row UPDATEs, one event each) a second. */
  rate: 200,
  /** Seconds of writes a round. */
  seconds: 15,
  /** The instances' messageTime, ms. */
  messageTime: 1000,
};

/**
 * The window opens this long after the writer's first commit (the first reads), and closes this
 * long before its last write is due (its backend must still be there to be read).
 */
const WARM_UP = 1000;
const COOL_DOWN = 500;
/** Before the writes, the instances idle this long, measured: their doorbell looks and polls alone. */
const IDLE_WINDOW = 3000;
/** Events of the one read that prices an event: one INSERT of this many tasks read by one instance with no clients. */
const CALIBRATION_EVENTS = 50_000;
/**
 * Handshakes in flight at once, over all instances. Each instance's pool grows by one connection
 * per concurrent handshake (to 10): 8 instances of full pools and their LISTEN connections would
 * take 88 of the server's 100 connections; a few per instance keep it well below.
 */
const CONNECT_CONCURRENCY = 24;
/** Deadline of starting the servers and connecting the clients, ms. */
const TIMEOUT = 120_000;

/** What {@link measure} does. */
export type ScaleOptions = BenchOptions & Partial<typeof DEFAULTS>;

/** One round: N instances. */
export interface RoundResult extends WindowCpu {
  instances: number;
  clientsPerInstance: number;
  /** The instances idle (no writes): their reads' DB CPU per instance, ms/s (doorbell looks, polls). */
  idleReadsCpu: number;
  /**
   * A read's own cost, ms of DB CPU: the window's reads' CPU less the idle rate and the events'
   * share (each at the calibrated price), per read.
   */
  perReadFixed: number;
  writes: number;
  writeSeconds: number;
  latency: { p50: number; p99: number; max: number };
  /** (client, event) pairs delivered in order, once each; owed; a second of the writes' time. */
  delivered: number;
  owed: number;
  deliveredPerSecond: number;
  owedPerSecond: number;
  problems: { lost: number; mismatched: number; unexpected: number; closedEarly: number; outboxRows: number };
}

/** The price of an event in a read: one read of many events at one instance with no clients. */
export interface Calibration {
  events: number;
  reads: number;
  readsCpuMs: number;
  seconds: number;
  perEventMicros: number;
}

/** What a run measured. */
export interface ScaleDetail extends Omit<typeof DEFAULTS, 'instances'> {
  calibration: Calibration;
  rounds: RoundResult[];
}


/** 1, 2, 4, … up to `most` (and `most` itself). */
function instanceCounts(most: number): number[] {
  const counts: number[] = [];
  for (let count = 1; count < most; count *= 2) counts.push(count);
  return [...counts, most];
}

/** What the rounds share. */
interface Context {
  databaseUrl: string;
  database: string;
  settings: typeof DEFAULTS;
  pool: pg.Pool;
  monitor: pg.Client;
  log: (line: string) => void;
}

/** `count` plugin instances, each a process of its own connecting as `scale-out-<n>`. */
async function startInstances(context: Context, count: number, servers: ServerProcess<PluginStats>[]): Promise<void> {
  await Promise.all(
    Array.from({ length: count }, async (_, index) => {
      const server = await startLoadServer(asApplication(context.databaseUrl, `${APPLICATION}-${index}`), { messageTime: context.settings.messageTime, events: ['caught-up'], timeout: TIMEOUT });
      servers[index] = server;
    }),
  );
}

/**
 * What an event adds to a read: one INSERT of CALIBRATION_EVENTS tasks (one transaction, one
 * doorbell), read by one instance that has no clients; its reads' DB CPU per event.
 */
async function calibrate(context: Context): Promise<Calibration> {
  const { pool, monitor, database } = context;
  const servers: ServerProcess<PluginStats>[] = [];
  try {
    await startInstances(context, 1, servers);
    const server = servers[0] as ServerProcess<PluginStats>;
    const before = await sample(monitor, servers);
    const expected = (before.instances[0]?.eventsRead as number) + CALIBRATION_EVENTS;
    await pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) SELECT 1, 1 + n % 3, 'calibration ' || n FROM generate_series(1, $1::int) n`, [CALIBRATION_EVENTS]);
    const deadline = performance.now() + TIMEOUT;
    while ((await server.stats()).eventsReceived < expected) {
      if (performance.now() > deadline) throw new Error(`the instance did not read ${CALIBRATION_EVENTS} events within ${TIMEOUT} ms`);
      await sleep(20);
    }
    const cpu = windowCpu(before, await sample(monitor, servers), database);
    const figures = cpu.perInstance[0] as InstanceFigures;
    return { events: figures.eventsRead, reads: figures.reads, readsCpuMs: figures.readsCpuMs, seconds: cpu.seconds, perEventMicros: round((figures.readsCpuMs * 1000) / figures.eventsRead, 2) };
  } finally {
    await Promise.all(servers.map((server) => server.shutdown(30_000)));
  }
}

/** N instances, the clients spread over them, idle then the writes; the windows measured; every delivery checked. */
async function runRound(context: Context, instances: number, calibration: Calibration): Promise<RoundResult> {
  const { databaseUrl, settings, pool, monitor, database, log } = context;
  const { clients, rate, seconds, messageTime } = settings;
  const writeCount = seconds * rate;
  const servers: ServerProcess<PluginStats>[] = [];
  let clientPool: ClientPool | undefined;
  try {
    // Tasks of their own: a write that renames a task to the name it already has makes no event.
    const taskIds = await createTasks(pool);
    await startInstances(context, instances, servers);
    const deliveries = new Deliveries(clients, writeCount);
    const tokens = await issueTokens(pool, clients);
    clientPool = await openClients(servers, tokens, { concurrency: CONNECT_CONCURRENCY, timeout: TIMEOUT, onFrame: deliveries.received, onClose: deliveries.closedEarly });
    const idleStart = await sample(monitor, servers);
    await sleep(IDLE_WINDOW);
    const idle = windowCpu(idleStart, await sample(monitor, servers), database);
    const { rows: marks } = await pool.query<{ id: string }>('SELECT coalesce(max(id), 0) AS id FROM task_events.outbox');
    log(`${instances} instance(s), ${clients} clients connected, idle reads' DB CPU ${idle.readsCpu.perInstance} ms/s an instance; writing ${rate}/s for ${seconds} s`);

    // The window opens WARM_UP after the writer's first commit (its process may take a while to
    // start on a busy machine) and lasts as long as its writes are due to, less both margins.
    const progress = new Conditions();
    let committed = false;
    const writing = runWriter({ databaseUrl: asApplication(databaseUrl, `${APPLICATION}-writer`), taskIds, writes: writeCount, rate }, () => {
      committed = true;
      progress.check();
    });
    writing.catch(() => {}); // awaited below
    await progress.waitFor(() => committed, "the writer's first commit", TIMEOUT);
    await sleep(WARM_UP);
    const before = await sample(monitor, servers);
    // from the moment the first sample read /proc, however late this process got to it
    await sleep(before.server.at + seconds * 1000 - WARM_UP - COOL_DOWN - performance.now());
    const cpu = windowCpu(before, await sample(monitor, servers), database);
    const written = await writing;
    await deliveries.conditions
      .waitFor(() => deliveries.complete + deliveries.closed >= clients, 'every client to have every event', messageTime + 10_000)
      .catch((error: Error) => log(error.message));

    const { rows: outbox } = await pool.query<{ rows: string; other: string }>(
      `SELECT count(*) AS rows, count(*) FILTER (WHERE event <> 'task_value_changed') AS other FROM task_events.outbox WHERE id > $1`,
      [marks[0]?.id],
    );
    const outboxRows = Number(outbox[0]?.rows);
    const joined = join(deliveries, written.writes);
    const { lost, mismatched, unexpected, closedEarly } = joined.problems;
    const owed = outboxRows * clients;
    const delivered = joined.samples - mismatched - unexpected;
    const perSecond = (pick: (figures: InstanceFigures) => number): number => cpu.perInstance.reduce((total, figures) => total + pick(figures), 0) / cpu.seconds;
    const reads = perSecond((figures) => figures.reads);
    const eventsPerSecond = perSecond((figures) => figures.eventsRead);
    return {
      instances,
      clientsPerInstance: clients / instances,
      ...cpu,
      idleReadsCpu: idle.readsCpu.perInstance,
      perReadFixed: round((cpu.readsCpu.total - idle.readsCpu.total - (eventsPerSecond * calibration.perEventMicros) / 1000) / reads, 3),
      writes: written.writes.length,
      writeSeconds: round(written.seconds, 2),
      latency: { p50: joined.p50, p99: joined.p99, max: joined.max },
      delivered,
      owed,
      deliveredPerSecond: Math.round(delivered / written.seconds),
      owedPerSecond: Math.round(owed / written.seconds),
      // every outbox row of the window must be one of the writes (one event each, nothing else)
      problems: { lost, mismatched, unexpected, closedEarly, outboxRows: Math.abs(outboxRows - written.writes.length) + Number(outbox[0]?.other) },
    };
  } finally {
    clientPool?.close();
    await Promise.all(servers.map((server) => server.shutdown(30_000)));
  }
}

/** One line a round, as the log and the README table say it. */
function describe(result: RoundResult): string {
  const { readsCpu } = result;
  return (
    `${result.instances} instance(s): reads' DB CPU ${readsCpu.perInstance} ms/s per instance (${readsCpu.total} in all; ${readsCpu.perRead} ms a read, ` +
    `${readsCpu.perEventMicros} µs an event; ${result.readsPerSecond} reads/s an instance, ${result.eventsPerRead} events a read; idle ${result.idleReadsCpu} ms/s, ` +
    `a read's own cost ${result.perReadFixed} ms); ` +
    `LISTEN ${result.listenCpu}, writer ${result.writerCpu}, bench database in all ${result.databaseCpu} (other databases ${result.otherDatabasesCpu}) ms/s; ` +
    `instances ${result.instancesCpu}, clients ${result.clientsCpu} ms/s, machine ${result.machineBusy} of ${result.cores * 1000} ms/s (${result.elsewhere} elsewhere); ` +
    `latency p50 ${result.latency.p50} p99 ${result.latency.p99} max ${result.latency.max} ms; delivered ${result.deliveredPerSecond.toLocaleString('en-US')} of ${result.owedPerSecond.toLocaleString('en-US')} events/s`
  );
}

/** Every round; see the header. */
export async function measure(options: ScaleOptions): Promise<{ rows: BenchRow[]; detail: ScaleDetail }> {
  const { databaseUrl, log = () => {}, instances, ...settings } = { ...DEFAULTS, ...options };
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  const monitor = new pg.Client({ connectionString: asApplication(databaseUrl, `${APPLICATION}-monitor`) });
  try {
    await monitor.connect();
    const context: Context = {
      databaseUrl,
      database: new URL(databaseUrl).pathname.slice(1),
      settings: { ...settings, instances },
      pool,
      monitor,
      log,
    };
    const calibration = await calibrate(context);
    log(`one instance read ${calibration.events.toLocaleString('en-US')} events of one transaction in ${calibration.reads} read(s): ${calibration.readsCpuMs} ms of DB CPU, ${calibration.perEventMicros} µs an event`);
    const rounds: RoundResult[] = [];
    for (const count of instanceCounts(instances)) {
      const result = await runRound(context, count, calibration);
      log(describe(result));
      rounds.push(result);
    }
    return { rows: benchRows(rounds, settings.rate, settings.messageTime), detail: { ...settings, calibration, rounds } };
  } finally {
    await monitor.end().catch(() => {});
    await pool.end();
  }
}

function benchRows(rounds: readonly RoundResult[], rate: number, messageTime: number): BenchRow[] {
  const first = rounds[0] as RoundResult;
  return rounds.flatMap((result) => {
    const what = `scale-out, ${result.instances} instance${result.instances > 1 ? 's' : ''} × ${result.clientsPerInstance.toLocaleString('en-US')} clients, ${rate} writes/s`;
    const problems = Object.entries(result.problems).filter(([, value]) => value > 0);
    return [
      { name: `${what}: DB CPU of the outbox reads, per instance (CPU ms a second)`, unit: 'ms/s', ours: result.readsCpu.perInstance, reference: { label: '1 instance', value: first.readsCpu.perInstance } },
      { name: `${what}: commit → client latency p99 (messageTime ${messageTime.toLocaleString('en-US')} ms)`, unit: 'ms', ours: result.latency.p99, reference: { label: '1 instance', value: first.latency.p99 } },
      {
        name: `${what}: events delivered exactly once, in all${problems.length ? ` (${problems.map(([name, value]) => `${value} ${name}`).join(', ')})` : ''}`,
        unit: 'events/s',
        ours: result.deliveredPerSecond,
        reference: { label: 'owed (outbox rows × clients)', value: result.owedPerSecond },
        target: { kind: 'ratio-at-least', value: 1 },
      },
    ];
  });
}

if (isMain(import.meta.url)) {
  const settings = positiveArgs(DEFAULTS);
  runStandalone('scale-out', settings, (databaseUrl, log) => measure({ databaseUrl, log, ...settings }));
}
