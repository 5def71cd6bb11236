// `npm run chaos`: the plugin under chaos for a given time — clients connecting and leaving,
// writers on several connections, faults on a schedule — then every client checked with the
// delivery checker of test/helpers/delivery.ts. Prints lost / duplicated / out-of-order counts and
// the server's memory over time; writes the result to bench/results/. Exit code 0 only when every
// count is zero, no client was dropped and the server never crashed. Not part of `npm test`.
//
//   npm run chaos                          60 s on a throwaway embedded PostgreSQL
//   npm run chaos -- --minutes 10          (or --seconds N)
//   npm run chaos -- --clients 24 --writers 4 --seed 1234
//   DATABASE_URL=postgres://… npm run chaos    on that server (in a fresh database of its own)
import { setMaxListeners } from 'node:events';
import pg from 'pg';
import type { Test } from 'tap';
import { startEmbeddedPostgres } from '../example/embedded.js';
import { createAppRole } from '../test/helpers/backends.js';
import { createTestDatabase } from '../test/helpers/db.js';
import { outboxPosition, PROBLEMS, readOutbox, settle, startMixedWriter, type Target, type WriterMap } from '../test/helpers/delivery.js';
import { startBulkWriter } from './chaos/bulk-writer.js';
import { LONG_LIVED, Population } from './chaos/clients.js';
import { readOptions, UsageError, USAGE, type ChaosOptions } from './chaos/options.js';
import { Faults } from './chaos/faults.js';
import { Random, sleep } from './chaos/random.js';
import { formatMemory, formatProblems, formatTotals, lines, totals, type MemorySample } from './chaos/report.js';
import type { ChaosServerOptions } from './chaos/server.js';
import { ServerProcess } from './chaos/server-process.js';
import { machine, writeResult } from './support.js';

/**
 * The server under chaos: short messages, a quick heartbeat, no rate limit (set in server.ts), and
 * a host app's async hook of 0–25 ms on every request, as real apps have (auth, tracing).
 */
const SERVER: Omit<ChaosServerOptions, 'connectionString'> = { messageTime: 1000, heartbeatInterval: 10_000, pollInterval: 2000, hostHookDelay: 25 };

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

/** Teardowns run last-in first-out, as tap's are: the test helpers register theirs here. */
class Teardowns {
  readonly #steps: (() => unknown)[] = [];
  /** What the test helpers take for a tap Test: they only call teardown(). */
  readonly test = { teardown: (step: () => unknown) => void this.#steps.push(step) } as unknown as Test;

  add(step: () => unknown): void {
    this.#steps.push(step);
  }

  async run(): Promise<void> {
    for (let step = this.#steps.pop(); step; step = this.#steps.pop()) {
      try {
        await step();
      } catch (error) {
        console.error(`teardown failed: ${(error as Error).message}`);
      }
    }
  }
}

async function chaos(options: ChaosOptions, teardowns: Teardowns, interrupted: AbortSignal): Promise<number> {
  const startedAt = new Date();
  const random = new Random(options.seed);
  let started = performance.now();
  const elapsed = (): number => (performance.now() - started) / 1000;
  const say = (text: string): void => console.log(`[${elapsed().toFixed(1).padStart(6)} s] ${text}`);

  // The database: a throwaway embedded server, or a fresh database on the one named.
  let serverUrl = options.databaseUrl;
  if (!serverUrl) {
    const embedded = await startEmbeddedPostgres({ persistent: false });
    teardowns.add(() => embedded.stop());
    serverUrl = embedded.url;
  }
  process.env.TEST_DATABASE_URL = serverUrl; // the server test/helpers/db.ts and backends.ts work on
  const role = await createAppRole(teardowns.test); // the app's role, to lock out; the writers are another
  const db = await createTestDatabase(teardowns.test);
  await role.grant(db);
  const version = (await db.pool.query<{ server_version: string }>('SHOW server_version')).rows[0]?.server_version ?? '?';
  const writerRole = new URL(db.url).username;

  const server = await ServerProcess.start({ connectionString: role.url(db, 'te_chaos'), ...SERVER });
  teardowns.add(() => server.kill());
  const deadline = Date.now() + 20_000;
  while (server.counts.connected === 0 && Date.now() < deadline && !server.exit) await sleep(50);
  if (server.counts.connected === 0) throw new Error(`the plugin server's listener did not connect:\n${server.stderr.slice(-2000)}`);

  const writerPool = new pg.Pool({ connectionString: db.url, max: options.writers + 1 });
  writerPool.on('error', () => {}); // the writers' backends are never terminated; an error is reported by stop()
  teardowns.add(() => writerPool.end());

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
    startMixedWriter(teardowns.test, writerPool, {
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
    const sample = await server.sample();
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
  const stalls = async (): Promise<void> => {
    const schedule = random.fork('stalls');
    let next = schedule.between(15, 30);
    for (let index = 1; ; index++) {
      await sleep((next - elapsed()) * 1000, timeUp.signal);
      if (timeUp.signal.aborted) return;
      await population.runStalled(index, schedule);
      next = elapsed() + schedule.between(60, 110);
    }
  };
  const storms = async (): Promise<void> => {
    const schedule = random.fork('storms');
    let next = schedule.between(10, 20);
    for (let index = 1; ; index++) {
      await sleep((next - elapsed()) * 1000, timeUp.signal);
      if (timeUp.signal.aborted) return;
      await population.runStorm(index, STORM_SIZE, schedule);
      next = elapsed() + schedule.between(30, 60);
    }
  };
  const activities = [
    sampler(),
    storms(),
    faults.runTerminations(random.fork('terminations')),
    faults.runLockouts(random.fork('lockouts')),
    stalls(),
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
  const closing = await server.close();
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
  const total = totals(population.checked);
  const byEvent = new Map<string, number>();
  for (const row of rows) byEvent.set(row.event, (byEvent.get(row.event) ?? 0) + 1);
  const terminations = faults.log.filter((fault) => fault.kind === 'terminate');
  const lockouts = faults.log.filter((fault) => fault.kind === 'lockout');
  const warnings = [...server.warnings.values()].reduce((sum, count) => sum + count, 0);
  const stalled = population.counts;
  const lateLive = late.filter((name) => !/\(closed \d+\)$/.test(name));

  const failures: string[] = [];
  for (const problem of PROBLEMS) if (total.counts[problem]) failures.push(`${total.counts[problem]} ${problem}`);
  if (server.crashed) failures.push(`the server crashed (${JSON.stringify(server.exit)})`);
  if (population.dropped.length) failures.push(`${population.dropped.length} clients dropped by the server while reading`);
  if (lateLive.length) failures.push(`${lateLive.length} connected clients did not receive everything within ${SETTLE_TIMEOUT / 1000} s`);
  if (stalled.stalledKept) failures.push(`${stalled.stalledKept} clients that stopped reading were never dropped`);
  if (stalled.drainTimeouts) failures.push(`${stalled.drainTimeouts} leaving clients waited in vain for events committed before they left`);
  if (harnessErrors.length) failures.push(`${harnessErrors.length} errors of the chaos run itself`);

  console.log(`
== delivery (every client checked by test/helpers/delivery.ts) ==
${formatTotals(total, rows.length)}
${lines([
  ['transactions', `${transactions().toLocaleString('en-US')} committed, ${bulk.rolledBack} rolled back on purpose`],
  ['events by kind', [...byEvent].sort((a, b) => b[1] - a[1]).map(([event, count]) => `${event.replace('task_', '')} ${count.toLocaleString('en-US')}`).join(', ')],
  ['dropped clients', population.dropped.length ? population.dropped.join('; ') : '0 (no client that was reading was closed by the server)'],
  ['settle', late.length ? `late: ${late.join(', ')}` : `every client still connected (${population.staying.length}) received everything`],
])}
${formatProblems(population.checked, rows.length)}
== faults ==
${lines([
  ['terminations', `${terminations.length} rounds, ${terminations.map((fault) => fault.detail.split(' ')[0]).join('/')} backends each`],
  ['lockouts', lockouts.length ? lockouts.map((fault) => `at ${fault.at} s: ${fault.detail}`).join('\n') : 'none (the run was too short)'],
  ['stalled clients', `${stalled.stalled} stopped reading, ${stalled.stalledDropped} dropped by the server (${server.counts.heartbeatTimeouts} heartbeat timeouts, ${server.counts.slowConsumers} slow-consumer closes)`],
  ['clients', `${stalled.joined} joined, ${stalled.left} left on purpose (${population.checked.filter((c) => c.ending === 'left (abrupt)').length} abruptly)`],
  ['refused', population.refused.size ? [...population.refused].map(([reason, count]) => `${count} × ${reason}`).join('\n') : 'none'],
  ['server', `LISTEN connected ${server.counts.connected} times; ${warnings} warnings (errors being retried); ` +
    `${server.crashed ? 'CRASHED' : `never crashed; close() took ${closing.closeMs ?? '?'} ms, then it ${closing.exitedBySelf ? 'exited by itself' : 'had to be killed'}`}`],
  ['closes at shutdown', [...closeCodes].map(([code, count]) => `${count} × ${code}`).join(', ')],
])}

== server memory (every ${SAMPLE_EVERY / 1000} s) ==
${formatMemory(memory)}
`);
  if (harnessErrors.length) console.log(`errors of the chaos run itself:\n${harnessErrors.map((error) => `  ${error}`).join('\n')}\n`);
  if (server.crashed) console.log(`the server's stderr:\n${server.stderr.slice(-4000)}\n`);

  const file = await writeResult('chaos', startedAt, {
    command: `npm run chaos -- ${process.argv.slice(2).join(' ')}`.trim(),
    ranForSeconds: Math.round(ranFor),
    interrupted: interrupted.aborted,
    options: { ...options, databaseUrl: options.databaseUrl ? '(set)' : null },
    server: { ...SERVER, rateLimit: false, crashed: server.crashed, exit: server.exit, closing, counts: server.counts, warnings: Object.fromEntries(server.warnings), closeCodes: Object.fromEntries(closeCodes), stderr: server.crashed ? server.stderr : undefined },
    postgres: version,
    totals: { ...total, written: rows.length, transactions: transactions(), rolledBack: bulk.rolledBack, byEvent: Object.fromEntries(byEvent) },
    clients: population.counts,
    refused: Object.fromEntries(population.refused),
    dropped: population.dropped,
    late,
    faults: faults.log,
    lockoutHandshakes: faults.lockoutHandshakes,
    memory,
    checked: population.checked.map(({ kind, ending, report }) => ({
      name: report.name, kind, ending, owed: report.owed, received: report.received, counts: report.counts,
      ...(PROBLEMS.some((problem) => report.counts[problem]) ? { examples: report.examples } : {}),
    })),
    harnessErrors,
    failures,
  });
  console.log(failures.length ? `FAIL: ${failures.join('; ')} (seed ${options.seed})` : `PASS: every client got every event it was owed, once, in order; nothing else; the server never crashed`);
  console.log(`result: ${file}`);
  if (harnessErrors.length && failures.length === 1) return 2;
  return failures.length ? 1 : 0;
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
  const teardowns = new Teardowns();
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
