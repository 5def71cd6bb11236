// What a chaos run prints and keeps: the delivery summary over every client, the resuming
// clients one by one, the instances' memory over time (a table and sparklines).
import { PROBLEMS, type ClientReport, type Problem } from '../../harness/delivery/check.js';
import { formatReport } from '../../harness/delivery/report.js';
import type { CheckedClient } from './clients.js';
import type { ResumingReport } from './resuming.js';

/** One instance's memory and sockets at a sample. */
export interface InstanceSample {
  name: string;
  slot: string;
  rss: number;
  heapUsed: number;
  connections: number;
}

/** A memory sample of every live instance, with when it was taken and what the faults were doing. */
export interface MemorySample {
  /** Seconds since the start of the run. */
  at: number;
  phase: string;
  instances: InstanceSample[];
}

/** The delivery verdict over every client. */
export interface Totals {
  clients: number;
  byKind: Record<string, number>;
  owed: number;
  delivered: number;
  counts: Record<Problem, number>;
}

export function totals(checked: readonly Pick<CheckedClient, 'kind' | 'report'>[]): Totals {
  const counts = Object.fromEntries(PROBLEMS.map((problem) => [problem, 0])) as Record<Problem, number>;
  const byKind: Record<string, number> = {};
  let owed = 0;
  let delivered = 0;
  for (const { kind, report } of checked) {
    byKind[kind] = (byKind[kind] ?? 0) + 1;
    owed += report.owed;
    delivered += report.received;
    for (const problem of PROBLEMS) counts[problem] += report.counts[problem];
  }
  return { clients: checked.length, byKind, owed, delivered, counts };
}

const number = (value: number): string => value.toLocaleString('en-US');
const mb = (bytes: number): string => (bytes / 1024 / 1024).toFixed(1);

const LABELS: Record<Problem, string> = {
  lost: 'lost',
  duplicated: 'duplicated',
  foreign: 'foreign (other tenant/filter)',
  early: 'early (before connecting)',
  unknown: 'unknown (no such committed row)',
  outOfOrder: 'out-of-order',
  badFrames: 'bad frames',
};

/** Rows of `label  value`, aligned; a value's further lines are indented to its column. */
export function lines(pairs: readonly (readonly [string, string])[]): string {
  const width = Math.max(...pairs.map(([label]) => label.length));
  const indent = `\n${' '.repeat(width + 4)}`;
  return pairs.map(([label, value]) => `  ${label.padEnd(width)}  ${value.split('\n').join(indent)}`).join('\n');
}

/** The delivery summary: clients, events, and every problem count. */
export function formatTotals(total: Totals, written: number, owedNote = 'summed over clients'): string {
  const kinds = Object.entries(total.byKind).map(([kind, count]) => `${count} ${kind}`).join(', ');
  return lines([
    ['clients checked', `${number(total.clients)} (${kinds})`],
    ['events written', `${number(written)} (outbox rows committed during the run)`],
    ['events owed', `${number(total.owed)} (${owedNote})`],
    ['events delivered', number(total.delivered)],
    ...PROBLEMS.map((problem) => [LABELS[problem], number(total.counts[problem])] as const),
  ]);
}

const BARS = '▁▂▃▄▅▆▇█';

/** One character per value, scaled from the lowest to the highest. */
export function sparkline(values: readonly number[]): string {
  const low = Math.min(...values);
  const high = Math.max(...values);
  return values.map((value) => BARS[high === low ? 0 : Math.round(((value - low) / (high - low)) * (BARS.length - 1))]).join('');
}

/** The resuming clients one by one: what each was owed and got, its resumes, gaps and why it reconnected. */
export function formatResuming(reports: readonly ResumingReport[]): string {
  const header = ['client', 'owed', 'received', 'problems', 'resumes', 'gaps', 'reconnected after'];
  const table = [
    header,
    ...reports.map((report) => [
      report.name,
      number(report.owed),
      number(report.received),
      String(PROBLEMS.reduce((sum, problem) => sum + report.counts[problem], 0)),
      String(report.resumes),
      String(report.gaps),
      Object.entries(report.retries).sort((a, b) => b[1] - a[1]).map(([why, count]) => `${why} ×${count}`).join(', ') + (report.error ? `; ENDED: ${report.error}` : ''),
    ]),
  ];
  return alignTable(table, [0, 6]);
}

/** Rows of cells, the columns in `left` aligned left and the others right. */
function alignTable(table: readonly string[][], left: readonly number[]): string {
  const widths = (table[0] as string[]).map((_, column) => Math.max(...table.map((line) => (line[column] as string).length)));
  return table
    .map((line) => `  ${line.map((cell, column) => (left.includes(column) ? cell.padEnd(widths[column] as number) : cell.padStart(widths[column] as number))).join('  ').trimEnd()}`)
    .join('\n');
}

/** The memory table, at most `rows` rows (evenly spread; the last sample always shown), and sparklines of all. */
export function formatMemory(samples: readonly MemorySample[], slots: readonly string[], rows = 21): string {
  if (!samples.length) return '  (no samples)';
  const step = Math.max(1, Math.ceil((samples.length - 1) / (rows - 1)));
  const shown = samples.filter((_, index) => index % step === 0 || index === samples.length - 1);
  const of = (sample: MemorySample, slot: string): InstanceSample | undefined => sample.instances.find((instance) => instance.slot === slot);
  const header = ['time', ...slots.map((slot) => `${slot}: rss/heap MB`), 'clients', 'faults'];
  const table = [
    header,
    ...shown.map((sample) => [
      `${Math.floor(sample.at / 60)}:${String(Math.round(sample.at % 60)).padStart(2, '0')}`,
      ...slots.map((slot) => {
        const instance = of(sample, slot);
        return instance ? `${instance.name} ${mb(instance.rss)}/${mb(instance.heapUsed)}` : '(restarting)';
      }),
      String(sample.instances.reduce((sum, instance) => sum + instance.connections, 0)),
      sample.phase === 'no fault' ? '' : sample.phase,
    ]),
  ];
  const text = [alignTable(table, [0, header.length - 1])];
  const range = (values: number[]): string => `${mb(Math.min(...values))}–${mb(Math.max(...values))} MB`;
  text.push('');
  for (const slot of slots) {
    const rss = samples.flatMap((sample) => of(sample, slot)?.rss ?? []);
    const heap = samples.flatMap((sample) => of(sample, slot)?.heapUsed ?? []);
    if (!rss.length) continue;
    text.push(`  ${slot} rss   ${sparkline(rss)}  ${range(rss)}`, `  ${slot} heap  ${sparkline(heap)}  ${range(heap)}`);
  }
  text.push(`  (${samples.length} samples, one every ~10 s${step > 1 ? `; the table shows every ${step}th` : ''}; a restarted instance starts afresh)`);
  return text.join('\n');
}

/** The checker's own report of the clients that had problems (at most `limit` of them). */
export function formatProblems(checked: readonly Pick<CheckedClient, 'kind' | 'ending' | 'report'>[], rows: number, limit = 12): string {
  const failing = checked.filter(({ report }) => PROBLEMS.some((problem) => report.counts[problem] > 0));
  if (!failing.length) return '';
  const clients: ClientReport[] = failing.slice(0, limit).map(({ report, kind, ending }) => ({ ...report, name: `${report.name} (${kind}, ${ending})` }));
  const more = failing.length > limit ? `\n  … and ${failing.length - limit} more clients with problems (see the JSON result)` : '';
  return `${formatReport({ rows, clients })}${more}`;
}
