// `npm run chaos`: the plugin under chaos for a given time — two instances on one database, each
// restarted now and then (SIGTERM, a deploy; SIGKILL, a crash); v1 clients connecting and leaving;
// clients of the client module (v2) resuming through every restart; writers on several
// connections; faults on a schedule — then every client checked. Prints lost / duplicated /
// out-of-order counts and the instances' memory over time; writes the result to bench/results/.
// Exit code 0 only when every count is zero, no v2 client had a gap, no v1 client was dropped but
// by a restart and no instance crashed but on purpose. Not part of `npm test`.
//
//   npm run chaos                          60 s on a throwaway embedded PostgreSQL
//   npm run chaos -- --minutes 10          (or --seconds N)
//   npm run chaos -- --clients 24 --v2-clients 10 --writers 4 --restart-every 120 --seed 1234
//   DATABASE_URL=postgres://… npm run chaos    on that server (in a fresh database of its own)
import { setMaxListeners } from 'node:events';
import pg from 'pg';
import { startEmbeddedPostgres } from '../example/embedded.js';
import { createAppRole } from '../harness/backends.js';
import { createTestDatabase } from '../harness/db.js';
import { readOutbox } from '../harness/delivery/outbox.js';
import { settle } from '../harness/delivery/tracked.js';
import { startMixedWriter, type Target, type WriterMap } from '../harness/delivery/writers.js';
import { TeardownStack } from '../harness/teardown.js';
import { outboxPosition } from '../lib/outbox.js';
import { startBulkWriter } from './chaos/bulk-writer.js';
import { Population } from './chaos/clients.js';
import { readOptions, UsageError, USAGE, type ChaosOptions } from './chaos/options.js';
import { Faults } from './chaos/faults.js';
import { Instances } from './chaos/instances.js';
import { Random, sleep } from './chaos/random.js';
import { lines, type InstanceSample, type MemorySample } from './chaos/report.js';
import { RESUMING, ResumingClients } from './chaos/resuming.js';
import { LONG_LIVED } from './chaos/subscriptions.js';
import { finish } from './chaos/verdict.js';
import { machine } from './support.js';

/**
 * The server under chaos: short messages, a quick heartbeat, no rate limit (the plugin server's
 * default), and a host app's async hook of 0–25 ms on every request, as real apps have (auth, tracing).
 */
const SERVER = { messageTime: 1000, heartbeatInterval: 10_000, pollInterval: 2000, hostHookDelay: 25 };

/** The instances, one process each at a time. */
const SLOTS = ['a', 'b'];

/** The mixed writers' tasks: each writer its own environments and classes. */
const MIXED_TARGETS: readonly Target[][] = [
  [[1, 1], [1, 2]],
  [[1, 3], [2, 4]],
  [[2, 4]],
  [[1, 1]],
  [[1, 2], [1, 3]],
  [[2, 4], [1, 1]],
];

/** Clients of a reconnect storm, all connecting at once (every 30–60 s after the last one ended). */
const STORM_SIZE = 30;

/** Milliseconds between memory samples. */
const SAMPLE_EVERY = 10_000;

/** How long the clients still connected at the end may take to receive everything. */
const SETTLE_TIMEOUT = 60_000;

async function chaos(options: ChaosOptions, teardowns: TeardownStack, interrupted: AbortSignal): Promise<number> {
  const startedAt = new Date();
  const random = new Random(options.seed);
  let started = performance.now();
  const elapsed = (): number => (performance.now() - started) / 1000;
  const say = (text: string): void => console.log(`[${elapsed().toFixed(1).padStart(6)} s] ${text}`);

  // The database: a throwaway embedded server, or a fresh database on the one named.
  let serverUrl = options.databaseUrl;
  if (!serverUrl) {
    const embedded = await startEmbeddedPostgres({ persistent: false });
    teardowns.teardown(() => embedded.stop());
    serverUrl = embedded.url;
  }
  process.env.TEST_DATABASE_URL = serverUrl; // the server harness/db.ts and backends.ts work on
  const role = await createAppRole(teardowns); // the app's role, to lock out; the writers are another
  const db = await createTestDatabase(teardowns);
  await role.grant(db);
  const version = (await db.pool.query<{ server_version: string }>('SHOW server_version')).rows[0]?.server_version ?? '?';
  const writerRole = new URL(db.url).username;

  const { hostHookDelay, ...plugin } = SERVER;
  const instances = new Instances({ options: { plugin: { connectionString: role.url(db, 'te_chaos'), ...plugin }, hostHookDelay }, teardowns, elapsed, log: say });
  await instances.start(SLOTS);

  const writerPool = new pg.Pool({ connectionString: db.url, max: options.writers + 1 });
  writerPool.on('error', () => {}); // the writers' backends are never terminated; an error is reported by stop()
  teardowns.teardown(() => writerPool.end());

  const longLived = Math.min(LONG_LIVED.length, options.clients);
  const slots = options.clients - longLived;
  const { cpus, memoryGiB, node } = machine();
  const computer = `${String(cpus)} cores, ${String(memoryGiB)} GB, Node ${String(node)}`;
  console.log(`== fastify-task-events chaos run ==
${lines([
  ['duration', `${options.seconds} s`],
  ['seed', String(options.seed)],
  ['v1 clients', `${options.clients} at a time: ${longLived} long-lived (a new one when its instance restarts), ${slots} coming and going; now and then ` +
    `${STORM_SIZE} at once, or one that stops reading`],
  ['v2 clients', `${options.v2Clients} of the client module for the whole run, on whichever instance is up (${RESUMING.slice(0, options.v2Clients).filter((spec) => spec.objectClassIds || spec.eventTypes).length} with objectClassIds and/or eventTypes)`],
  ['writers', `${options.writers} connections (${options.writers - 1} mixed, 1 bulk) as role ${writerRole}`],
  ['faults', `an instance restarted every ~${options.restartEvery} s, by SIGTERM (a deploy) and SIGKILL (a crash) in turn; the app's backends\n` +
    "terminated every 20–40 s; the app's role NOLOGIN for 10–15 s every few minutes"],
  ['instances', `${SLOTS.length} of the plugin, each a child process, on the one database: messageTime ${SERVER.messageTime} ms, heartbeat ` +
    `${SERVER.heartbeatInterval / 1000} s, rateLimit off;\na host preHandler hook of 0–${SERVER.hostHookDelay} ms`],
  ['database', `PostgreSQL ${version} (${options.databaseUrl ? 'DATABASE_URL' : 'embedded, throwaway'}), database ${db.name}`],
  ['machine', computer],
])}
`);

  const writers: WriterMap = new Map();
  const mark = await outboxPosition(db.pool);
  const timeUp = new AbortController();
  setMaxListeners(0, timeUp.signal); // every waiting activity listens to it
  interrupted.addEventListener('abort', () => timeUp.abort(), { once: true });
  started = performance.now();
  const faults = new Faults({ db, role, instances, signal: timeUp.signal, elapsed, duration: options.seconds, log: say });
  const population = new Population({ pool: db.pool, instances, writers, mark, signal: timeUp.signal, log: say, elapsed, phase: () => faults.phase() });

  await population.startLongLived(LONG_LIVED.slice(0, longLived));
  const resuming = new ResumingClients(instances, RESUMING.slice(0, options.v2Clients));
  await resuming.ready(30_000);
  const mixed = Array.from({ length: options.writers - 1 }, (_, index) =>
    startMixedWriter(teardowns, writerPool, {
      name: `w${index + 1}`,
      targets: MIXED_TARGETS[index % MIXED_TARGETS.length] as Target[],
      writers,
      pause: 60 + 20 * (index % 4),
    }),
  );
  const bulk = startBulkWriter(writerPool, { name: 'bulk', writers, random: random.fork('bulk'), pause: [300, 1500] });
  const transactions = (): number => mixed.reduce((sum, writer) => sum + writer.transactions, 0) + bulk.committed;

  const memory: MemorySample[] = [];
  const sampleMemory = async (): Promise<MemorySample | null> => {
    const samples = await Promise.all(instances.live().map(({ name, slot, server }) => server.stats(false, 5000).then(
      ({ rss, heapUsed, connections }): InstanceSample => ({ name, slot, rss, heapUsed, connections }),
      () => null,
    )));
    const entry = { at: Math.round(elapsed()), phase: faults.phase(), instances: samples.filter((sample) => sample !== null) };
    if (!entry.instances.length) return null;
    memory.push(entry);
    return entry;
  };
  const sampler = async (): Promise<void> => {
    for (let tick = 0; !timeUp.signal.aborted; tick++) {
      const sample = await sampleMemory();
      if (sample && tick % 3 === 0) {
        const each = sample.instances.map(({ name, rss, heapUsed, connections }) =>
          `${name} rss ${(rss / 2 ** 20).toFixed(0)} MB heap ${(heapUsed / 2 ** 20).toFixed(0)} MB ${connections} sockets`);
        say(`${each.join('; ')}; ${transactions().toLocaleString('en-US')} transactions; ` +
          `v1 ${population.counts.joined} joined, ${population.counts.left} left; v2 ${resuming.resumes} resumes`);
      }
      await sleep((tick + 1) * SAMPLE_EVERY - (performance.now() - started), timeUp.signal);
    }
  };
  // Runs `run` first `first` seconds into the run (a range), then again `every` seconds after each
  // one ends, until the time is up; the schedule's randomness is forked from `name`.
  const repeat = async (name: string, first: [number, number], every: [number, number], run: (index: number, schedule: Random) => Promise<void>): Promise<void> => {
    const schedule = random.fork(name);
    let next = schedule.between(...first);
    for (let index = 1; ; index++) {
      await sleep((next - elapsed()) * 1000, timeUp.signal);
      if (timeUp.signal.aborted) return;
      await run(index, schedule);
      next = elapsed() + schedule.between(...every);
    }
  };
  const activities = [
    sampler(),
    repeat('storms', [10, 20], [30, 60], (index, schedule) => population.runStorm(index, STORM_SIZE, schedule)),
    faults.runTerminations(random.fork('terminations')),
    faults.runLockouts(random.fork('lockouts')),
    faults.runRestarts(random.fork('restarts'), options.restartEvery),
    population.runLongLived(),
    repeat('stalls', [15, 30], [60, 110], (index, schedule) => population.runStalled(index, schedule)),
    ...Array.from({ length: slots }, (_, index) => population.runSlot(index + 1, random.fork(`slot ${index + 1}`))),
  ];

  await sleep(options.seconds * 1000, timeUp.signal);
  const ranFor = elapsed();
  timeUp.abort();
  say(interrupted.aborted ? 'interrupted: finishing early' : "time's up: the clients still connected stay, the rest finish leaving");
  const harnessErrors: string[] = [];
  for (const outcome of await Promise.allSettled(activities)) {
    if (outcome.status === 'rejected') harnessErrors.push(String((outcome.reason as Error)?.stack ?? outcome.reason));
  }
  for (const writer of mixed) await writer.stop().catch((error: Error) => harnessErrors.push(`writer ${writer.name}: ${error.message}`));
  await bulk.stop();
  harnessErrors.push(...bulk.errors.map((error) => `bulk writer: ${error}`));

  say(`settling: ${population.staying.length} v1 clients still connected and ${resuming.size} v2 clients must receive everything (up to ${SETTLE_TIMEOUT / 1000} s each)`);
  const late = await settle(db.pool, population.staying.map((client) => client.tracked), SETTLE_TIMEOUT);
  // Nothing is written from here on: every row committed during the run.
  const rows = await readOutbox(db.pool, mark, (taskId) => writers.get(taskId));
  const resumingLate = await resuming.settle(db.pool, rows, SETTLE_TIMEOUT);
  resuming.close();
  population.noteDroppedStaying();
  await sampleMemory();
  say('closing the instances (each sends what is buffered and closes every socket with 1001)');
  const closing = await instances.shutdown();
  const closeCodes = new Map<string, number>();
  await Promise.all(
    population.staying.map(async ({ tracked }) => {
      const closed = await tracked.client.waitForClose(10_000).catch(() => null);
      const code = closed ? String(closed.code) : 'not closed';
      closeCodes.set(code, (closeCodes.get(code) ?? 0) + 1);
      if (!closed) tracked.client.socket.terminate();
    }),
  );

  // The verdict: every client against every row committed during the run.
  population.checkStaying(rows);
  return finish({
    options, startedAt, ranFor, interrupted: interrupted.aborted, postgres: version, serverOptions: SERVER, instances, closing, closeCodes,
    population, resuming: resuming.check(rows), resumingLate, faults, bulk, transactions: transactions(), rows, late,
    settleTimeout: SETTLE_TIMEOUT, memory, sampleEvery: SAMPLE_EVERY, harnessErrors,
  });
}

async function main(): Promise<number> {
  let options: ChaosOptions;
  try {
    options = readOptions(process.argv.slice(2), process.env);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`npm run chaos: ${error.message}\n${USAGE}`);
    return 2;
  }
  const teardowns = new TeardownStack();
  const interrupt = new AbortController();
  process.on('SIGINT', () => {
    if (interrupt.signal.aborted) process.exit(130);
    console.log('\nSIGINT: finishing the run early (again to quit at once, leaving the database behind)');
    interrupt.abort();
  });
  try {
    return await chaos(options, teardowns, interrupt.signal);
  } finally {
    await teardowns.run();
  }
}

main().then(
  (code) => process.exit(code),
  (error: Error) => {
    console.error(error);
    process.exit(2);
  },
);
