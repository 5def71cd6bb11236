// `npm run bench:write [-- --seconds 5 --rounds 5 --tasks 100000 --writers 1,8,32]`: what our
// capture triggers cost the host's writes. pgbench runs single-row UPDATEs of a task's status on a
// table of `tasks` rows three ways: with no triggers (the reference), with the minimal capture
// trigger (bench/minimal-capture.ts: the floor of trigger capture, a second reference) and with
// ours; each round runs the three back to back at each number of writers, and a row's figures are
// the medians over the rounds. Targets (issue 14): ≥ 0.85× the trigger-less throughput at 8
// writers, ≥ 0.75× at 32; 1 writer and ours against the minimal trigger are reported. While it
// runs, a real listener of ours reads the outbox (it arms the doorbell, as in production): every
// event written must be read, and at 8 writers the oldest event of each read must be at most 250
// ms old (p99; insert → read), the share of a client's latency beyond messageTime that the issue
// allows.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import pg from 'pg';
import { Listener } from '../lib/listener.js';
import { useCapture, type Capture } from './minimal-capture.js';
import { isMain, runStandalone } from './standalone.js';
import { median, positive, type BenchRow } from './support.js';

const run = promisify(execFile);

/** Each round's order: the reference first, then the floor, then ours. */
const CAPTURES: readonly Capture[] = ['none', 'minimal', 'ours'];

/** Our throughput's least share of the trigger-less one, by number of writers (issue 14). */
const TARGETS: Record<number, number> = { 8: 0.85, 32: 0.75 };

const UPDATE_STATUS = `\\set id random(1, :tasks)
UPDATE tasks SET status = CASE WHEN status = 'open' THEN 'done' ELSE 'open' END WHERE id = :id;
`;

export interface WritePathOptions {
  /** A database with our migrations and the reference schema (see withBenchDatabase). */
  databaseUrl: string;
  /** Seconds per pgbench run; default 5. */
  seconds?: number;
  /** Rounds (each: no triggers, the minimal trigger and ours at every writer count); default 5. */
  rounds?: number;
  /** Rows of the tasks table; default 100,000. */
  tasks?: number;
  /** Writer counts; default 1, 8, 32. */
  writers?: readonly number[];
  log?: (line: string) => void;
}

/** Every run's throughput (transactions/s), per writer count; and what the listener read. */
export interface WritePathDetail {
  runs: { writers: number; tps: Record<Capture, number[]>; lagMs: { p50: number; p99: number; max: number; reads: number } }[];
  eventsWritten: number;
  eventsRead: number;
}

async function pgbench(url: string, script: string, writers: number, seconds: number, tasks: number): Promise<number> {
  const { stdout } = await run('pgbench', [
    '--no-vacuum', '--file', script, '--client', String(writers), '--jobs', String(Math.min(writers, 2)),
    '--time', String(seconds), '--define', `tasks=${tasks}`, url,
  ]);
  const tps = /tps = ([\d.]+)/.exec(stdout);
  if (!tps) throw new Error(`no tps in pgbench's output:\n${stdout}`);
  return Number(tps[1]);
}

export async function measure(options: WritePathOptions): Promise<{ rows: BenchRow[]; detail: WritePathDetail }> {
  const { databaseUrl, seconds = 5, rounds = 5, tasks = 100_000, writers = [1, 8, 32], log = () => {} } = options;
  const directory = await mkdtemp(join(tmpdir(), 'task-events-bench-'));
  const script = join(directory, 'update-status.sql');
  await writeFile(script, UPDATE_STATUS);
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 3 });
  let eventsRead = 0;
  // while our triggers are attached: how old the oldest event of each batch read is (light: one
  // Date.parse a batch, so the listener takes as little as it can from pgbench's CPU)
  let lags: number[] | null = null;
  const listener = new Listener({
    pool, connection: { connectionString: databaseUrl }, pollInterval: 2000, readBatchSize: 5000,
    onEvents: (events) => {
      eventsRead += events.length;
      lags?.push(Date.now() - Date.parse((events[0] as { timestamp: string }).timestamp));
    },
  });
  const lagsOf = new Map<number, number[]>(writers.map((count) => [count, []]));
  try {
    await pool.query(`INSERT INTO tasks (environment_id, object_class_id, name)
                      SELECT 1, 1 + n % 3, 'task ' || n FROM generate_series(1, $1::int) AS n`, [tasks]);
    await pool.query('VACUUM ANALYZE tasks');
    await listener.start();
    const detail: WritePathDetail = {
      runs: writers.map((count) => ({ writers: count, tps: { none: [], minimal: [], ours: [] }, lagMs: { p50: 0, p99: 0, max: 0, reads: 0 } })),
      eventsWritten: 0,
      eventsRead: 0,
    };
    const { rows: [start] } = await pool.query<{ events: string }>('SELECT count(*) AS events FROM task_events.outbox');
    for (let round = 1; round <= rounds; round++) {
      for (const runs of detail.runs) {
        for (const capture of CAPTURES) {
          await useCapture(pool, capture);
          if (capture === 'ours') lags = lagsOf.get(runs.writers) as number[];
          runs.tps[capture].push(await pgbench(databaseUrl, script, runs.writers, seconds, tasks));
          lags = null;
        }
        log(`round ${round}, ${runs.writers} writers: ${CAPTURES.map((capture) => `${runs.tps[capture].at(-1)?.toFixed(0)} tps ${capture}`).join(', ')}`);
      }
    }
    const { rows: [end] } = await pool.query<{ events: string }>('SELECT count(*) AS events FROM task_events.outbox');
    detail.eventsWritten = Number(end?.events) - Number(start?.events);
    const deadline = Date.now() + 10_000;
    while (eventsRead < detail.eventsWritten && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    detail.eventsRead = eventsRead;
    if (eventsRead !== detail.eventsWritten) throw new Error(`the listener read ${eventsRead} events of ${detail.eventsWritten} written`);
    for (const runs of detail.runs) {
      const sorted = [...(lagsOf.get(runs.writers) as number[])].sort((a, b) => a - b);
      const at = (share: number): number => sorted[Math.min(sorted.length - 1, Math.floor(share * sorted.length))] ?? 0;
      runs.lagMs = { p50: at(0.5), p99: at(0.99), max: sorted.at(-1) ?? 0, reads: sorted.length };
      log(`${runs.writers} writers: oldest event of a read, p50 ${runs.lagMs.p50} ms, p99 ${runs.lagMs.p99} ms, max ${runs.lagMs.max} ms (${sorted.length} reads)`);
    }
    const at8 = detail.runs.find((runs) => runs.writers === 8);
    const rows = detail.runs.flatMap((runs): BenchRow[] => {
      const name = `write path, ${runs.writers} writer${runs.writers === 1 ? '' : 's'}: single-row status UPDATE`;
      const target = TARGETS[runs.writers];
      const ours = median(runs.tps.ours);
      return [
        { name, unit: 'tps', ours, reference: { label: 'no triggers', value: median(runs.tps.none) }, ...(target && { target: { kind: 'ratio-at-least', value: target } as const }) },
        { name: `${name}, against the minimal capture trigger`, unit: 'tps', ours, reference: { label: 'minimal trigger', value: median(runs.tps.minimal) } },
      ];
    });
    if (at8) {
      rows.push({
        name: 'write path, 8 writers: insert → read by our listener, p99 (oldest event of each read)',
        unit: 'ms',
        ours: at8.lagMs.p99,
        reference: { label: 'the allowance beyond messageTime', value: 250 },
        target: { kind: 'at-most', value: 250 },
      });
    }
    return { rows, detail };
  } finally {
    await listener.close();
    await pool.end();
    await rm(directory, { recursive: true, force: true });
  }
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: { seconds: { type: 'string' }, rounds: { type: 'string' }, tasks: { type: 'string' }, writers: { type: 'string' } } });
  const seconds = positive('seconds', values.seconds, 5);
  const rounds = positive('rounds', values.rounds, 5);
  const tasks = positive('tasks', values.tasks, 100_000);
  const writers = (values.writers ?? '1,8,32').split(',').map((count) => positive('writers', count.trim(), 1));
  runStandalone('write-path', { seconds, rounds, tasks, writers }, (databaseUrl, log) => measure({ databaseUrl, seconds, rounds, tasks, writers, log }));
}
