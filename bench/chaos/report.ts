// What a chaos run prints and keeps: the delivery summary over every client, the server's memory
// over time (a table and a sparkline).
import { PROBLEMS, type ClientReport, type Problem } from '../../harness/delivery/check.js';
import { formatReport } from '../../harness/delivery/report.js';
import type { PluginStats } from '../../harness/lines.js';
import type { CheckedClient } from './clients.js';

/** A memory sample of the server, with when it was taken and what the faults were doing. */
export interface MemorySample extends PluginStats {
  /** Seconds since the start of the run. */
  at: number;
  phase: string;
}

/** The delivery verdict over every client. */
export interface Totals {
  clients: number;
  byKind: Record<string, number>;
  owed: number;
  delivered: number;
  counts: Record<Problem, number>;
}

export function totals(checked: readonly CheckedClient[]): Totals {
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
export function formatTotals(total: Totals, written: number): string {
  const kinds = Object.entries(total.byKind).map(([kind, count]) => `${count} ${kind}`).join(', ');
  return lines([
    ['clients checked', `${number(total.clients)} (${kinds})`],
    ['events written', `${number(written)} (outbox rows committed during the run)`],
    ['events owed', `${number(total.owed)} (summed over clients)`],
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

/** The memory table, at most `rows` rows (evenly spread; the last sample always shown), and sparklines of all. */
export function formatMemory(samples: readonly MemorySample[], rows = 21): string {
  if (!samples.length) return '  (no samples)';
  const step = Math.max(1, Math.ceil((samples.length - 1) / (rows - 1)));
  const shown = samples.filter((_, index) => index % step === 0 || index === samples.length - 1);
  const header = ['time', 'rss MB', 'heap MB', 'clients', 'events read', 'faults'];
  const table = [
    header,
    ...shown.map((sample) => [
      `${Math.floor(sample.at / 60)}:${String(Math.round(sample.at % 60)).padStart(2, '0')}`,
      mb(sample.rss),
      mb(sample.heapUsed),
      String(sample.connections),
      number(sample.eventsReceived),
      sample.phase === 'no fault' ? '' : sample.phase,
    ]),
  ];
  const widths = header.map((_, column) => Math.max(...table.map((line) => (line[column] as string).length)));
  const text = table.map((line) =>
    `  ${line.map((cell, column) => (column === 0 || column === line.length - 1 ? cell.padEnd(widths[column] as number) : cell.padStart(widths[column] as number))).join('  ').trimEnd()}`,
  );
  const range = (values: number[]): string => `${mb(Math.min(...values))}–${mb(Math.max(...values))} MB`;
  const rss = samples.map((sample) => sample.rss);
  const heap = samples.map((sample) => sample.heapUsed);
  text.push(
    '',
    `  rss   ${sparkline(rss)}  ${range(rss)}`,
    `  heap  ${sparkline(heap)}  ${range(heap)}`,
    `  (${samples.length} samples, one every ~10 s${step > 1 ? `; the table shows every ${step}th` : ''})`,
  );
  return text.join('\n');
}

/** The checker's own report of the clients that had problems (at most `limit` of them). */
export function formatProblems(checked: readonly CheckedClient[], rows: number, limit = 12): string {
  const failing = checked.filter(({ report }) => PROBLEMS.some((problem) => report.counts[problem] > 0));
  if (!failing.length) return '';
  const clients: ClientReport[] = failing.slice(0, limit).map(({ report, kind, ending }) => ({ ...report, name: `${report.name} (${kind}, ${ending})` }));
  const more = failing.length > limit ? `\n  … and ${failing.length - limit} more clients with problems (see the JSON result)` : '';
  return `${formatReport({ rows, clients })}${more}`;
}
