// The writer of bench/latency.ts, in a process of its own so that the clients' frames, parsed in the
// bench's process, never delay a commit or the reading of its time. It renames one random task per
// write, each write its own autocommit statement, one after another at `rate` per second, and prints
// `{ taskId, committedAt }` (wall clock, as harness/client-pool.ts's wallClock) as soon as each statement has
// returned; last, `{ done: true, seconds }`. LATENCY_WRITER (JSON, a WriterData) says what to do.
import pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';

/** What the bench hands the writer. */
export interface WriterData {
  databaseUrl: string;
  /** Ids of the tasks to pick from. */
  taskIds: number[];
  writes: number;
  rate: number;
}

/** One committed write, as printed. */
export interface Write {
  taskId: number;
  committedAt: number;
}

const say = (line: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(line)}\n`);

async function write({ databaseUrl, taskIds, writes, rate }: WriterData): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const startedAt = performance.now();
    for (let index = 0; index < writes; index++) {
      // On schedule from the start, so that a slow write is followed at once, not the rate lowered.
      const due = startedAt + (index * 1000) / rate - performance.now();
      if (due > 0) await sleep(due);
      const taskId = taskIds[Math.floor(Math.random() * taskIds.length)] as number;
      await client.query('UPDATE tasks SET name = $2 WHERE id = $1', [taskId, `latency write ${index}`]);
      say({ taskId, committedAt: performance.timeOrigin + performance.now() } satisfies Write);
    }
    say({ done: true, seconds: (performance.now() - startedAt) / 1000 });
  } finally {
    await client.end();
  }
}

await write(JSON.parse(process.env.LATENCY_WRITER as string) as WriterData);
