// What every benchmark shares: its own database (on TEST_DATABASE_URL or DATABASE_URL, else a
// throwaway embedded PostgreSQL), the machine's description, a printed table, a JSON result in
// bench/results/ (git-ignored).
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { startEmbeddedPostgres } from '../example/embedded.js';
import { migrate } from '../lib/migrate.js';
import { applyReferenceSchema } from '../harness/db.js';

const RESULTS = new URL('./results/', import.meta.url);

/** A `--name` value that must be a positive integer, or `fallback` when absent. */
export function positive(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isSafeInteger(parsed) || parsed < 1) throw new Error(`--${name} must be a positive integer, got '${value}'`);
  return parsed;
}

/** What every measurement takes: its database, and where its progress lines go. */
export interface BenchOptions {
  /** A database with our migrations and the reference schema (see withBenchDatabase). */
  databaseUrl: string;
  log?: (line: string) => void;
}

/**
 * A bench's settings from its command line: `--name N` for each name of `defaults`, each a
 * positive integer; the default where absent.
 */
export function positiveArgs<Settings extends Record<string, number>>(defaults: Settings): Settings {
  const { values } = parseArgs({ options: Object.fromEntries(Object.keys(defaults).map((name) => [name, { type: 'string' as const }])) });
  return Object.fromEntries(Object.entries(defaults).map(([name, fallback]) => [name, positive(name, values[name] as string | undefined, fallback)])) as Settings;
}

/** A benchmark's database: its URL, and the server's (for CREATE DATABASE of further ones). */
export interface BenchDatabase {
  url: string;
  serverUrl: string;
}

/**
 * Waits (up to 5 s) until no one is connected to `database`. A pool's end() resolves before its
 * connections have closed: a forced drop meanwhile would kill one mid-close, and its pool would
 * raise that error with no one listening (the bench process dies).
 */
async function connectionsGone(admin: pg.Client, database: string): Promise<void> {
  const deadline = performance.now() + 5000;
  while (performance.now() < deadline) {
    const { rows } = await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [database]);
    if (rows[0]?.n === 0) return;
    await sleep(20);
  }
}

/**
 * Runs `work` against a fresh database with our migrations and the reference schema (triggers
 * attached), dropped afterwards; starts and stops an embedded PostgreSQL when no server is named.
 */
export async function withBenchDatabase<T>(work: (database: BenchDatabase) => Promise<T>): Promise<T> {
  let serverUrl = process.env.TEST_DATABASE_URL || process.env.DATABASE_URL;
  let stopEmbedded = async (): Promise<void> => {};
  if (!serverUrl) {
    const embedded = await startEmbeddedPostgres({ persistent: false });
    serverUrl = embedded.url;
    stopEmbedded = embedded.stop;
    console.log('# embedded PostgreSQL (set TEST_DATABASE_URL to use another server)');
  }
  const name = `task_events_bench_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
    const url = new URL(serverUrl);
    url.pathname = `/${name}`;
    const pool = new pg.Pool({ connectionString: url.toString(), max: 2 });
    try {
      await migrate(pool);
      await applyReferenceSchema(pool);
    } finally {
      await pool.end();
    }
    return await work({ url: url.toString(), serverUrl });
  } finally {
    await connectionsGone(admin, name);
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
    await admin.end();
    await stopEmbedded();
  }
}

/** The machine a figure was measured on. */
export function machine(): Record<string, unknown> {
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
  };
}

/** Prints label/value rows aligned. */
export function printRows(rows: readonly (readonly [string, string])[]): void {
  const width = Math.max(...rows.map(([label]) => label.length));
  for (const [label, value] of rows) console.log(`${label.padEnd(width)}  ${value}`);
}

/** Writes `{ startedAt, machine, ...result }` to bench/results/<name>-<time>.json; returns the path. */
export async function writeResult(name: string, startedAt: Date, result: Record<string, unknown>): Promise<string> {
  await mkdir(RESULTS, { recursive: true });
  const file = new URL(`${name}-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`, RESULTS);
  await writeFile(file, `${JSON.stringify({ startedAt: startedAt.toISOString(), machine: machine(), ...result }, null, 2)}\n`);
  return file.pathname;
}

/** How a measurement is judged: against its reference (a ratio) or against a fixed bound. */
export type Target =
  | { kind: 'ratio-at-least' | 'ratio-at-most'; value: number }
  | { kind: 'at-most' | 'at-least'; value: number };

/** One row of `npm run bench`: our figure, its reference measured in the same run, the target. */
export interface BenchRow {
  /** What was measured, e.g. 'fan-out, 1,000 clients: commit → all have 1,000 events'. */
  name: string;
  unit: string;
  ours: number;
  reference: { label: string; value: number };
  /** None: reported beside the rows that have one (the write path at 1 and 32 writers). */
  target?: Target;
}

/** Ours divided by the reference, and whether the target is met. */
export function verdict(row: BenchRow): { ratio: number; met: boolean } {
  const ratio = row.ours / row.reference.value;
  if (!row.target) return { ratio, met: true };
  const { kind, value } = row.target;
  const met =
    kind === 'ratio-at-least' ? ratio >= value
    : kind === 'ratio-at-most' ? ratio <= value
    : kind === 'at-most' ? row.ours <= value
    : row.ours >= value;
  return { ratio, met };
}

/** The target as text: '≥ 0.80×', '≤ 1.25×', '≤ 20 KB', or '(reported)'. */
export function targetText(row: BenchRow): string {
  if (!row.target) return '(reported)';
  const { kind, value } = row.target;
  if (kind === 'ratio-at-least') return `≥ ${value.toFixed(2)}×`;
  if (kind === 'ratio-at-most') return `≤ ${value.toFixed(2)}×`;
  return `${kind === 'at-most' ? '≤' : '≥'} ${value.toLocaleString('en-US')} ${row.unit}`;
}

/** The middle value (the mean of the two middle ones for an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}
