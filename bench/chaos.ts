// `npm run chaos`: the plugin under chaos for a given time — clients connecting and leaving,
// writers on several connections, faults on a schedule — then every client checked with the
// delivery checker of harness/delivery/. Prints lost / duplicated / out-of-order counts and
// the server's memory over time; writes the result to bench/results/. Exit code 0 only when every
// count is zero, no client was dropped and the server never crashed. Not part of `npm test`.
//
//   npm run chaos                          60 s on a throwaway embedded PostgreSQL
//   npm run chaos -- --minutes 10          (or --seconds N)
//   npm run chaos -- --clients 24 --writers 4 --seed 1234
//   DATABASE_URL=postgres://… npm run chaos    on that server (in a fresh database of its own)
import { setMaxListeners } from 'node:events';
import pg from 'pg';
import { startEmbeddedPostgres } from '../example/embedded.js';
import { createAppRole } from '../harness/backends.js';
import { createTestDatabase } from '../harness/db.js';
import { readOutbox } from '../harness/delivery/outbox.js';
import { settle } from '../harness/delivery/tracked.js';
import { startMixedWriter, type Target, type WriterMap } from '../harness/delivery/writers.js';
import { ServerProcess } from '../harness/server-process.js';
import { TeardownStack } from '../harness/teardown.js';
import { outboxPosition } from '../lib/outbox.js';
import { startBulkWriter } from './chaos/bulk-writer.js';
import { Population } from './chaos/clients.js';
import { readOptions, UsageError, USAGE, type ChaosOptions } from './chaos/options.js';
import { Faults } from './chaos/faults.js';
import { Random, sleep } from './chaos/random.js';
import { lines, type MemorySample } from './chaos/report.js';
import { LONG_LIVED } from './chaos/subscriptions.js';
import { finish } from './chaos/verdict.js';
import { machine } from './support.js';

/**
 * The server under chaos: short messages, a quick heartbeat, no rate limit (the plugin server's
 * default), and a host app's async hook of 0–25 ms on every request, as real apps have (auth, tracing).
 */
const SERVER = { messageTime: 1000, heartbeatInterval: 10_000, pollInterval: 2000, hostHookDelay: 25 };

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
  const server = await ServerProcess.startPlugin({ plugin: { connectionString: role.url(db, 'te_chaos'), ...plugin }, hostHookDelay }, { teardown: teardowns });
  const deadline = Date.now() + 20_000;
  while (server.count('connected') === 0 && Date.now() < deadline && !server.exit) await sleep(50);
  if (server.count('connected') === 0) throw new Error(`the plugin server's listener did not connect:\n${server.stderr.slice(-2000)}`);

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
  ['clients', `${options.clients} at a time: ${longLived} long-lived, ${slots} coming and going; now and then ${STORM_SIZE} at once, or one that stops reading`],
  ['writers', `${options.writers} connections (${options.writers - 1} mixed, 1 bulk) as role ${writerRole}`],
  ['faults', "the app's backends terminated every 20–40 s; the app's role NOLOGIN for 10–15 s every few minutes"],
  ['server', `the plugin in a child process: messageTime ${SERVER.messageTime} ms, heartbeat ${SERVER.heartbeatInterval / 1000} s, rateLimit off; ` +
    `a host preHandler hook of 0–${SERVER.hostHookDelay} ms`],
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
  const faults = new Faults({ db, role, server, signal: timeUp.signal, elapsed, duration: options.seconds, log: say });
  const population = new Population({ pool: db.pool, server, writers, mark, signal: timeUp.signal, log: say, phase: () => faults.phase() });
  server.on('exit', (exit) => server.crashed && say(`! the server crashed: ${JSON.stringify(exit)}`));

  await population.startLongLived(LONG_LIVED.slice(0, longLived));
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
    const sample = await server.stats(false, 5000).catch(() => null);
    if (!sample) return null;
    const entry = { at: Math.round(elapsed()), phase: faults.phase(), ...sample };
    memory.push(entry);
    return entry;
  };
  const sampler = async (): Promise<void> => {
    for (let tick = 0; !timeUp.signal.aborted; tick++) {
      const sample = await sampleMemory();
      if (sample && tick % 3 === 0) {
        say(`rss ${(sample.rss / 2 ** 20).toFixed(0)} MB, heap ${(sample.heapUsed / 2 ** 20).toFixed(0)} MB, ${sample.connections} clients, ` +
          `${sample.eventsReceived.toLocaleString('en-US')} events read; ${transactions().toLocaleString('en-US')} transactions; ` +
          `${population.counts.joined} joined, ${population.counts.left} left`);
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

  say(`settling: ${population.staying.length} clients still connected must receive everything (up to ${SETTLE_TIMEOUT / 1000} s)`);
  const late = await settle(db.pool, population.staying.map((client) => client.tracked), SETTLE_TIMEOUT);
  population.noteDroppedStaying();
  await sampleMemory();
  say('closing the server (it sends what is buffered and closes every socket with 1001)');
  const closing = await server.shutdown();
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
  const rows = await readOutbox(db.pool, mark, (taskId) => writers.get(taskId));
  population.checkStaying(rows);
  return finish({
    options, startedAt, ranFor, interrupted: interrupted.aborted, postgres: version, serverOptions: SERVER, server, closing, closeCodes,
    population, faults, bulk, transactions: transactions(), rows, late, settleTimeout: SETTLE_TIMEOUT, memory, sampleEvery: SAMPLE_EVERY, harnessErrors,
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
