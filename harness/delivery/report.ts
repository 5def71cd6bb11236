// The delivery checker's verdict as text: a table of every client's counts, then examples.
import { PROBLEMS, type ClientReport, type DeliveryReport, type Problem } from './check.js';

const DESCRIPTIONS: Record<Problem, string> = {
  lost: 'owed but never received',
  duplicated: 'received more than once (extra copies)',
  foreign: 'of another environment, or outside the filter',
  early: 'committed before the client connected',
  unknown: 'matching no outbox row (or with another object_class_id)',
  outOfOrder: "received after a later row of the same writer (or transaction)",
  badFrames: 'frames that are not a non-empty array ascending by timestamp',
};

/** The sum of every problem count of a client. */
export function problemCount(report: ClientReport): number {
  return PROBLEMS.reduce((sum, problem) => sum + report.counts[problem], 0);
}

/** A table of every client's counts, then examples of each problem found. */
export function formatReport(report: DeliveryReport): string {
  const header = ['client', 'owed', 'received', ...PROBLEMS];
  const table = [header, ...report.clients.map((c) => [c.name, c.owed, c.received, ...PROBLEMS.map((p) => c.counts[p])].map(String))];
  const widths = header.map((_, column) => Math.max(...table.map((line) => (line[column] as string).length)));
  const lines = [`delivery of ${report.rows} outbox rows:`];
  for (const line of table) lines.push(line.map((cell, column) => cell.padEnd(widths[column] as number)).join('  ').trimEnd());
  for (const client of report.clients) {
    for (const problem of PROBLEMS) {
      if (!client.counts[problem]) continue;
      lines.push(`${client.name}: ${client.counts[problem]} ${problem} — ${DESCRIPTIONS[problem]}, e.g.`);
      for (const example of client.examples[problem]) lines.push(`    ${example}`);
    }
  }
  return lines.join('\n');
}
