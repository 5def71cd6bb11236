// `npm run bench:write [-- --seconds 10 --tasks 100000 --writers 1,8,32]`: what our capture
// triggers cost the host's writes. pgbench runs single-row UPDATEs of a task's status on a
// table of `tasks` rows, with our triggers attached and, as the reference, with them detached,
// interleaved at each number of writers. Target (issue 4): ≥ 0.80× the reference at 8 writers.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import pg from 'pg';
import { positive, printRows, withBenchDatabase, writeResult } from './support.js';

const run = promisify(execFile);
const TARGET_AT_8 = 0.8;

const UPDATE_STATUS = `\\set id random(1, :tasks)
UPDATE tasks SET status = CASE WHEN status = 'open' THEN 'done' ELSE 'open' END WHERE id = :id;
`;

async function pgbench(url: string, script: string, writers: number, seconds: number, tasks: number): Promise<number> {
  const { stdout } = await run('pgbench', [
    '--no-vacuum', '--file', script, '--client', String(writers), '--jobs', String(Math.min(writers, 2)),
    '--time', String(seconds), '--define', `tasks=${tasks}`, url,
  ]);
  const tps = /tps = ([\d.]+)/.exec(stdout);
  if (!tps) throw new Error(`no tps in pgbench's output:\n${stdout}`);
  return Number(tps[1]);
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { seconds: { type: 'string' }, tasks: { type: 'string' }, writers: { type: 'string' } } });
  const seconds = positive('seconds', values.seconds, 10);
  const tasks = positive('tasks', values.tasks, 100_000);
  const writerCounts = (values.writers ?? '1,8,32').split(',').map((count) => positive('writers', count, 1));
  const started = new Date();
  const directory = await mkdtemp(join(tmpdir(), 'task-events-bench-'));
  const script = join(directory, 'update-status.sql');
  await writeFile(script, UPDATE_STATUS);
  try {
    return await withBenchDatabase(async ({ url }) => {
      const pool = new pg.Pool({ connectionString: url, max: 1 });
      try {
        await pool.query(`INSERT INTO tasks (environment_id, object_class_id, name)
                          SELECT 1, 1 + n % 3, 'task ' || n FROM generate_series(1, $1::int) AS n`, [tasks]);
        await pool.query('VACUUM ANALYZE tasks');
        const rows: { writers: number; reference: number; ours: number; ratio: number }[] = [];
        for (const writers of writerCounts) {
          await pool.query('SELECT task_events.detach()');
          const reference = await pgbench(url, script, writers, seconds, tasks);
          await pool.query('SELECT task_events.attach()');
          const ours = await pgbench(url, script, writers, seconds, tasks);
          rows.push({ writers, reference, ours, ratio: ours / reference });
          console.log(`# ${writers} writers: ${reference.toFixed(0)} tps without triggers, ${ours.toFixed(0)} with`);
        }
        const { rows: [outbox] } = await pool.query('SELECT count(*)::int AS events FROM task_events.outbox');
        console.log(`\nsingle-row UPDATE of status, ${tasks} tasks, ${seconds} s per run (pgbench tps)`);
        printRows([
          ['writers', 'no triggers   with triggers   ratio'],
          ...rows.map((row): [string, string] => [
            String(row.writers),
            `${row.reference.toFixed(0).padStart(11)}   ${row.ours.toFixed(0).padStart(13)}   ${row.ratio.toFixed(2)}×${row.writers === 8 ? `  (target ≥ ${TARGET_AT_8}×)` : ''}`,
          ]),
        ]);
        const file = await writeResult('write-path', started, { options: { seconds, tasks, writers: writerCounts }, rows, outboxEvents: outbox.events });
        console.log(`# written to ${file}`);
        const at8 = rows.find((row) => row.writers === 8);
        return at8 && at8.ratio < TARGET_AT_8 ? 1 : 0;
      } finally {
        await pool.end();
      }
    });
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
