// The end of a chaos run: every client's verdict summed, what failed, the printout, and the
// result as JSON in bench/results/.
import { PROBLEMS, type OutboxRow } from '../../harness/delivery/check.js';
import type { ServerProcess } from '../../harness/server-process.js';
import { writeResult } from '../support.js';
import type { BulkWriter } from './bulk-writer.js';
import type { Population } from './clients.js';
import type { Faults } from './faults.js';
import type { Instances } from './instances.js';
import type { ChaosOptions } from './options.js';
import { formatMemory, formatProblems, formatResuming, formatTotals, lines, totals, type MemorySample } from './report.js';
import type { ResumingReport } from './resuming.js';

/** What a chaos run did and saw, once its server is closed. */
export interface ChaosRun {
  options: ChaosOptions;
  startedAt: Date;
  /** Seconds the chaos lasted (before settling). */
  ranFor: number;
  interrupted: boolean;
  /** PostgreSQL's version. */
  postgres: string;
  /** What the instances were started with, for the result. */
  serverOptions: Record<string, unknown>;
  instances: Instances;
  /** How each instance live at the end closed, by name. */
  closing: Map<string, Awaited<ReturnType<ServerProcess['shutdown']>>>;
  /** How the v1 clients still connected at the end were closed, by close code. */
  closeCodes: Map<string, number>;
  /** Every v1 client, checked. */
  population: Population;
  /** Every v2 client (the client module), checked. */
  resuming: readonly ResumingReport[];
  /** v2 clients that had not received everything they were owed by the end of the settle. */
  resumingLate: readonly string[];
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
  const { options, startedAt, ranFor, interrupted, postgres, serverOptions, instances, closing, closeCodes } = run;
  const { population, resuming, resumingLate, faults, bulk, transactions, rows, late, settleTimeout, memory, sampleEvery, harnessErrors } = run;
  const counts = {
    connected: instances.count('connected'),
    reconnecting: instances.count('reconnecting'),
    slowConsumers: instances.count('slow-consumer'),
    heartbeatTimeouts: instances.count('heartbeat-timeout'),
  };
  const total = totals(population.checked);
  const v2 = totals(resuming.map((report) => ({ kind: 'long-lived', report })));
  const resumes = resuming.reduce((sum, report) => sum + report.resumes, 0);
  const gaps = resuming.reduce((sum, report) => sum + report.gaps, 0);
  const ended = resuming.filter((report) => report.error);
  const crashed = instances.crashed();
  const unclean = instances.restarts.filter((restart) => !restart.clean);
  const cutCodes = (how: string): string => {
    const codes = [...population.cuts].filter(([key]) => key.startsWith(how)).map(([key, count]) => `${key.split(' ')[1]} × ${count}`);
    return codes.length ? ` (close ${codes.join(', ')})` : '';
  };
  const byEvent = new Map<string, number>();
  for (const row of rows) byEvent.set(row.event, (byEvent.get(row.event) ?? 0) + 1);
  const terminations = faults.log.filter((fault) => fault.kind === 'terminate');
  const lockouts = faults.log.filter((fault) => fault.kind === 'lockout');
  const restarts = faults.log.filter((fault) => fault.kind === 'restart');
  const warnings = [...instances.warnings().values()].reduce((sum, count) => sum + count, 0);
  const stalled = population.counts;
  const lateLive = late.filter((name) => !/\(closed \d+\)$/.test(name));

  const failures: string[] = [];
  for (const problem of PROBLEMS) if (total.counts[problem]) failures.push(`${total.counts[problem]} ${problem} (v1)`);
  for (const problem of PROBLEMS) if (v2.counts[problem]) failures.push(`${v2.counts[problem]} ${problem} (v2)`);
  if (gaps) failures.push(`${gaps} gaps (a v2 cursor refused: events missed)`);
  if (ended.length) failures.push(`${ended.length} v2 clients ended by a terminal error`);
  if (resumingLate.length) failures.push(`${resumingLate.length} v2 clients did not receive everything within ${settleTimeout / 1000} s`);
  for (const instance of crashed) failures.push(`instance ${instance.name} crashed (${JSON.stringify(instance.server.exit)})`);
  for (const restart of unclean) failures.push(`the deploy of ${restart.stopped} did not exit 0 by itself (${restart.detail})`);
  if (population.dropped.length) failures.push(`${population.dropped.length} clients dropped by the server while reading`);
  if (lateLive.length) failures.push(`${lateLive.length} connected clients did not receive everything within ${settleTimeout / 1000} s`);
  if (stalled.stalledKept) failures.push(`${stalled.stalledKept} clients that stopped reading were never dropped`);
  if (stalled.drainTimeouts) failures.push(`${stalled.drainTimeouts} leaving clients waited in vain for events committed before they left`);
  if (harnessErrors.length) failures.push(`${harnessErrors.length} errors of the chaos run itself`);

  const closings = [...closing].map(([name, close]) => `${name} ${close.closeMs ?? '?'} ms${close.exitedBySelf ? '' : ' (then killed)'}`).join(', ');
  console.log(`
== delivery to v1 clients (each connection checked by harness/delivery/check.ts) ==
${formatTotals(total, rows.length)}
${lines([
  ['cut by restarts', `${stalled.cutByDeploy} by deploys${cutCodes('deploy')}, ${stalled.cutByCrash} by crashes${cutCodes('crash')}: ` +
    'owed nothing past what\nthey received (v1 promises nothing across a connection; what a dying process had read\nand not sent cannot be told), so lost counts only holes before a later row of a writer;\nwhat they did receive is checked in full'],
  ['transactions', `${transactions.toLocaleString('en-US')} committed, ${bulk.rolledBack} rolled back on purpose`],
  ['events by kind', [...byEvent].sort((a, b) => b[1] - a[1]).map(([event, count]) => `${event.replace('task_', '')} ${count.toLocaleString('en-US')}`).join(', ')],
  ['dropped clients', population.dropped.length ? population.dropped.join('; ') : '0 (no client that was reading was closed but by a restart)'],
  ['settle', late.length ? `late: ${late.join(', ')}` : `every client still connected (${population.staying.length}) received everything`],
])}
${formatProblems(population.checked, rows.length)}
== delivery to v2 clients (the client module: every row committed after each one's first ready cursor) ==
${formatTotals(v2, rows.length, "summed over clients: rows their first cursor's snapshot did not see")}
${lines([
  ['resumes', `${resumes} (summed over clients), ${gaps} gaps (cursor refused), ${ended.length} clients ended by a terminal error`],
  ['settle', resumingLate.length ? `late: ${resumingLate.join(', ')}` : `every client (${resuming.length}) received everything it was owed`],
])}
${formatResuming(resuming)}
${formatProblems(resuming.map((report) => ({ kind: 'long-lived', ending: `v2, ${report.resumes} resumes`, report }) as const), rows.length)}
== faults ==
${lines([
  ['restarts', restarts.length ? restarts.map((fault) => `at ${fault.at} s: ${fault.detail}`).join('\n') : 'none (the run was too short)'],
  ['terminations', terminations.length ? `${terminations.length} rounds, ${terminations.map((fault) => fault.detail.split(' ')[0]).join('/')} backends each` : 'none (the run was too short)'],
  ['lockouts', lockouts.length ? lockouts.map((fault) => `at ${fault.at} s: ${fault.detail}`).join('\n') : 'none (the run was too short)'],
  ['stalled clients', `${stalled.stalled} stopped reading, ${stalled.stalledDropped} dropped by the server, ${stalled.stalledCut} cut by a restart ` +
    `(${counts.heartbeatTimeouts} heartbeat timeouts, ${counts.slowConsumers} slow-consumer closes)`],
  ['v1 clients', `${stalled.joined} joined, ${stalled.left} left on purpose (${population.checked.filter((c) => c.ending === 'left (abrupt)').length} abruptly)`],
  ['refused', population.refused.size ? [...population.refused].map(([reason, count]) => `${count} × ${reason}`).join('\n') : 'none'],
  ['instances', `${instances.all.length} processes (${instances.all.map((instance) => instance.name).join(', ')}); LISTEN connected ${counts.connected} times; ` +
    `${warnings} warnings (errors being retried);\n${crashed.length ? `CRASHED: ${crashed.map((instance) => instance.name).join(', ')}` : 'none crashed but those killed on purpose'}; ` +
    `at the end close() took ${closings}`],
  ['closes at shutdown', [...closeCodes].map(([code, count]) => `${count} × ${code}`).join(', ') || 'none'],
])}

== instances' memory (every ${sampleEvery / 1000} s) ==
${formatMemory(memory, [...new Set(instances.all.map((instance) => instance.slot))])}
`);
  if (harnessErrors.length) console.log(`errors of the chaos run itself:\n${harnessErrors.map((error) => `  ${error}`).join('\n')}\n`);
  for (const instance of crashed) console.log(`instance ${instance.name}'s stderr:\n${instance.server.stderr.slice(-4000)}\n`);

  const file = await writeResult('chaos', startedAt, {
    command: `npm run chaos -- ${process.argv.slice(2).join(' ')}`.trim(),
    ranForSeconds: Math.round(ranFor),
    interrupted,
    options: { ...options, databaseUrl: options.databaseUrl ? '(set)' : null },
    server: {
      ...serverOptions, rateLimit: false, counts, warnings: Object.fromEntries(instances.warnings()), closing: Object.fromEntries(closing), closeCodes: Object.fromEntries(closeCodes),
      instances: instances.all.map(({ name, startedAt, stopped, server }) => ({ name, startedAt, stopped, exit: server.exit, crashed: server.crashed, stderr: server.crashed ? server.stderr : undefined })),
    },
    restarts: instances.restarts,
    postgres,
    totals: { ...total, written: rows.length, transactions, rolledBack: bulk.rolledBack, byEvent: Object.fromEntries(byEvent) },
    v2: { ...v2, resumes, gaps, late: resumingLate, clients: resuming },
    clients: population.counts,
    cuts: Object.fromEntries(population.cuts),
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
  console.log(failures.length
    ? `FAIL: ${failures.join('; ')} (seed ${options.seed})`
    : `PASS: every v2 client got every event after its first cursor once, in order, through ${restarts.length} restarts, with no gap; every v1 client got what it was owed; no instance crashed but on purpose`);
  console.log(`result: ${file}`);
  if (harnessErrors.length && failures.length === 1) return 2;
  return failures.length ? 1 : 0;
}
