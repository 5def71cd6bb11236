// The end of a chaos run: every client's verdict summed, what failed, the printout, and the
// result as JSON in bench/results/.
import { PROBLEMS, type OutboxRow } from '../../harness/delivery/check.js';
import type { PluginStats } from '../../harness/lines.js';
import type { ServerProcess } from '../../harness/server-process.js';
import { writeResult } from '../support.js';
import type { BulkWriter } from './bulk-writer.js';
import type { Population } from './clients.js';
import type { Faults } from './faults.js';
import type { ChaosOptions } from './options.js';
import { formatMemory, formatProblems, formatTotals, lines, totals, type MemorySample } from './report.js';

/** What a chaos run did and saw, once its server is closed. */
export interface ChaosRun {
  options: ChaosOptions;
  startedAt: Date;
  /** Seconds the chaos lasted (before settling). */
  ranFor: number;
  interrupted: boolean;
  /** PostgreSQL's version. */
  postgres: string;
  /** What the server was started with, for the result. */
  serverOptions: Record<string, unknown>;
  server: ServerProcess<PluginStats>;
  closing: Awaited<ReturnType<ServerProcess['shutdown']>>;
  /** How the clients still connected at the end were closed, by close code. */
  closeCodes: Map<string, number>;
  /** Every client, checked. */
  population: Population;
  faults: Faults;
  bulk: BulkWriter;
  /** Transactions committed by every writer. */
  transactions: number;
  /** Every outbox row committed during the run. */
  rows: readonly OutboxRow[];
  /** Clients still connected that did not get their sentinels in time. */
  late: readonly string[];
  settleTimeout: number;
  memory: readonly MemorySample[];
  sampleEvery: number;
  harnessErrors: readonly string[];
}

/** Prints the verdict and writes the result; resolves with the exit code: 0 when nothing failed. */
export async function finish(run: ChaosRun): Promise<number> {
  const { options, startedAt, ranFor, interrupted, postgres, serverOptions, server, closing, closeCodes } = run;
  const { population, faults, bulk, transactions, rows, late, settleTimeout, memory, sampleEvery, harnessErrors } = run;
  const counts = {
    connected: server.count('connected'),
    reconnecting: server.count('reconnecting'),
    slowConsumers: server.count('slow-consumer'),
    heartbeatTimeouts: server.count('heartbeat-timeout'),
  };
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
  if (lateLive.length) failures.push(`${lateLive.length} connected clients did not receive everything within ${settleTimeout / 1000} s`);
  if (stalled.stalledKept) failures.push(`${stalled.stalledKept} clients that stopped reading were never dropped`);
  if (stalled.drainTimeouts) failures.push(`${stalled.drainTimeouts} leaving clients waited in vain for events committed before they left`);
  if (harnessErrors.length) failures.push(`${harnessErrors.length} errors of the chaos run itself`);

  console.log(`
== delivery (every client checked by harness/delivery/check.ts) ==
${formatTotals(total, rows.length)}
${lines([
  ['transactions', `${transactions.toLocaleString('en-US')} committed, ${bulk.rolledBack} rolled back on purpose`],
  ['events by kind', [...byEvent].sort((a, b) => b[1] - a[1]).map(([event, count]) => `${event.replace('task_', '')} ${count.toLocaleString('en-US')}`).join(', ')],
  ['dropped clients', population.dropped.length ? population.dropped.join('; ') : '0 (no client that was reading was closed by the server)'],
  ['settle', late.length ? `late: ${late.join(', ')}` : `every client still connected (${population.staying.length}) received everything`],
])}
${formatProblems(population.checked, rows.length)}
== faults ==
${lines([
  ['terminations', `${terminations.length} rounds, ${terminations.map((fault) => fault.detail.split(' ')[0]).join('/')} backends each`],
  ['lockouts', lockouts.length ? lockouts.map((fault) => `at ${fault.at} s: ${fault.detail}`).join('\n') : 'none (the run was too short)'],
  ['stalled clients', `${stalled.stalled} stopped reading, ${stalled.stalledDropped} dropped by the server (${counts.heartbeatTimeouts} heartbeat timeouts, ${counts.slowConsumers} slow-consumer closes)`],
  ['clients', `${stalled.joined} joined, ${stalled.left} left on purpose (${population.checked.filter((c) => c.ending === 'left (abrupt)').length} abruptly)`],
  ['refused', population.refused.size ? [...population.refused].map(([reason, count]) => `${count} × ${reason}`).join('\n') : 'none'],
  ['server', `LISTEN connected ${counts.connected} times; ${warnings} warnings (errors being retried); ` +
    `${server.crashed ? 'CRASHED' : `never crashed; close() took ${closing.closeMs ?? '?'} ms, then it ${closing.exitedBySelf ? 'exited by itself' : 'had to be killed'}`}`],
  ['closes at shutdown', [...closeCodes].map(([code, count]) => `${count} × ${code}`).join(', ')],
])}

== server memory (every ${sampleEvery / 1000} s) ==
${formatMemory(memory)}
`);
  if (harnessErrors.length) console.log(`errors of the chaos run itself:\n${harnessErrors.map((error) => `  ${error}`).join('\n')}\n`);
  if (server.crashed) console.log(`the server's stderr:\n${server.stderr.slice(-4000)}\n`);

  const file = await writeResult('chaos', startedAt, {
    command: `npm run chaos -- ${process.argv.slice(2).join(' ')}`.trim(),
    ranForSeconds: Math.round(ranFor),
    interrupted,
    options: { ...options, databaseUrl: options.databaseUrl ? '(set)' : null },
    server: { ...serverOptions, rateLimit: false, crashed: server.crashed, exit: server.exit, closing, counts, warnings: Object.fromEntries(server.warnings), closeCodes: Object.fromEntries(closeCodes), stderr: server.crashed ? server.stderr : undefined },
    postgres,
    totals: { ...total, written: rows.length, transactions, rolledBack: bulk.rolledBack, byEvent: Object.fromEntries(byEvent) },
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
