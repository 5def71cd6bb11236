// What a bench of rows (bench/fanout.ts, bench/memory.ts) does when it is run by itself rather
// than imported: its own database, the rows printed with their verdicts, the result as JSON in
// bench/results/, exit code 1 when a target is missed.
import { pathToFileURL } from 'node:url';
import { printRows, targetText, verdict, withBenchDatabase, writeResult, type BenchRow } from './support.js';

/** True when the module at `moduleUrl` is the script node was started with. */
export function isMain(moduleUrl: string): boolean {
  return process.argv[1] !== undefined && moduleUrl === pathToFileURL(process.argv[1]).href;
}

/** `name  ours unit (reference: value) ratio, target, met`, one line a row. */
export function printBenchRows(rows: readonly BenchRow[]): void {
  printRows(
    rows.map((row) => {
      const { ratio, met } = verdict(row);
      const value = (figure: number): string => `${figure.toLocaleString('en-US', { maximumFractionDigits: 1 })} ${row.unit}`;
      return [row.name, `${value(row.ours)} vs ${row.reference.label} ${value(row.reference.value)}: ${ratio.toFixed(2)}×, target ${targetText(row)}, ${met ? 'met' : 'MISSED'}`];
    }),
  );
}

/**
 * Runs `measure` on a fresh bench database, prints its rows, writes `{ options, rows, detail }` to
 * bench/results/<name>-<time>.json, and exits: 0 when every target is met, 1 otherwise or on error.
 */
export function runStandalone<T>(
  name: string,
  options: Record<string, unknown>,
  measure: (databaseUrl: string, log: (line: string) => void) => Promise<{ rows: BenchRow[]; detail: T }>,
): void {
  const work = withBenchDatabase(async (database) => {
    const started = new Date();
    const log = (line: string): void => console.log(`# [${((Date.now() - started.getTime()) / 1000).toFixed(1)} s] ${line}`);
    const { rows, detail } = await measure(database.url, log);
    printBenchRows(rows);
    console.log(`# written to ${await writeResult(name, started, { options, rows, detail })}`);
    return rows.every((row) => verdict(row).met) ? 0 : 1;
  });
  work.then(
    (code) => process.exit(code),
    (error: unknown) => {
      console.error(error);
      process.exit(1);
    },
  );
}
