// One outbox read (lib/outbox.ts) against a real PostgreSQL: what it returns while other
// transactions are open and commit in any order, and what it does not visit to find out.
import t from 'tap';
import type pg from 'pg';
import { createTestDatabase } from '../harness/db.js';
import type { TaskEvent } from '../lib/buffer.js';
import { backlogQuery } from '../lib/backlog.js';
import { cursorAt } from '../lib/cursor.js';
import { currentSnapshot, newRows, readOutbox } from '../lib/outbox.js';
import { parseSnapshot, type Snapshot } from '../lib/snapshot.js';

const db = await createTestDatabase(t);
const { pool } = db;

/** `count` tasks of environment 1, committed; their ids. */
async function createTasks(count: number): Promise<number[]> {
  const { rows } = await pool.query<{ id: string }>(
    `INSERT INTO tasks (environment_id, object_class_id, name) SELECT 1, 1, 'task ' || n FROM generate_series(1, $1::int) n RETURNING id`,
    [count],
  );
  return rows.map((row) => Number(row.id));
}

/** A transaction left open on a connection of its own, having changed the status of `taskIds`. */
async function openTransaction(taskIds: number[]): Promise<{ commit: () => Promise<void>; rollback: () => Promise<void> }> {
  const client = await pool.connect();
  await client.query('BEGIN');
  await client.query(`UPDATE tasks SET status = 'done' WHERE id = ANY ($1::bigint[])`, [taskIds]);
  const end = async (how: string): Promise<void> => {
    await client.query(how);
    client.release();
  };
  return { commit: () => end('COMMIT'), rollback: () => end('ROLLBACK') };
}

/** One read from `since`: the task ids of its events in order, and the next `since`. */
async function read(since: string): Promise<{ taskIds: number[]; snapshot: string }> {
  const client = await pool.connect();
  try {
    const events: TaskEvent[] = [];
    const { snapshot } = await readOutbox(client, since, 1000, (batch) => events.push(...batch));
    return { taskIds: events.map((event) => JSON.parse(event.json).task_id as number), snapshot };
  } finally {
    client.release();
  }
}

t.test('transactions open across reads and committing out of order: each read has exactly those committed since the last', async (t) => {
  const [a, b, c, d, e] = await createTasks(5) as [number, number, number, number, number];
  let since = await currentSnapshot(pool);
  const first = await openTransaction([a]); // the oldest xid, committed last
  await (await openTransaction([b])).commit();
  const third = await openTransaction([c]);
  await (await openTransaction([d])).commit();
  const fifth = await openTransaction([e]); // rolled back: never read

  let result = await read(since);
  t.same(result.taskIds, [b, d], 'the committed ones, around the open ones');
  since = result.snapshot;
  await third.commit();
  result = await read(since);
  t.same(result.taskIds, [c], 'then the one committed since, below an id already read');
  since = result.snapshot;
  await fifth.rollback();
  await first.commit();
  result = await read(since);
  t.same(result.taskIds, [a], 'then the oldest, committed last');
  result = await read(result.snapshot);
  t.same(result.taskIds, [], 'then nothing');
});

/**
 * Pages (shared buffers hit or read) that the query `sql` makes of the snapshot visits, run in a
 * REPEATABLE READ transaction (the read's, whose snapshot it is given).
 */
async function pagesVisited(client: pg.PoolClient, sql: (upto: Snapshot) => string, values: unknown[] = []): Promise<number> {
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    const { rows: [current] } = await client.query<{ snapshot: string }>('SELECT pg_current_snapshot()::text AS snapshot');
    const upto = parseSnapshot((current as { snapshot: string }).snapshot) as Snapshot;
    const { rows } = await client.query<{ 'QUERY PLAN': [{ Plan: Record<string, number> }] }>(`EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${sql(upto)}`, values);
    const plan = (rows[0] as { 'QUERY PLAN': [{ Plan: Record<string, number> }] })['QUERY PLAN'][0].Plan;
    return (plan['Shared Hit Blocks'] ?? 0) + (plan['Shared Read Blocks'] ?? 0);
  } finally {
    await client.query('COMMIT');
  }
}

t.test('a read or a resume while a transaction holds 20,000 uncommitted events visits none of their pages', async (t) => {
  const taskIds = await createTasks(20_000);
  const [later] = await createTasks(1) as [number];
  const since = await currentSnapshot(pool);
  const sizeBefore = await outboxPages();
  const open = await openTransaction(taskIds);
  t.teardown(() => open.rollback());
  const written = (await outboxPages()) - sizeBefore;
  t.ok(written >= 100, `the open transaction wrote ${written} outbox pages`);

  const client = await pool.connect();
  t.teardown(() => client.release());
  // a transaction begun after the open one commits: the read's snapshot sees the open one running
  // below its xmax, and must look on both sides of it
  await (await openTransaction([later])).commit();
  const ours = await pagesVisited(client, (upto) => newRows({ since: parseSnapshot(since) as Snapshot, upto }) as string);
  t.ok(ours < 20, `the read visited ${ours} pages`);
  // the look of earlier versions' reads, which walked every row of the open transaction
  const everyNewXid = `SELECT id FROM task_events.outbox WHERE xid >= pg_snapshot_xmax('${since}'::pg_snapshot) ORDER BY id`;
  const walked = await pagesVisited(client, () => everyNewXid);
  t.ok(walked >= written, `a read by xid >= since's xmax alone visits ${walked}`);
  // a v2 resume's backlog from a cursor at `since`, up to the handshake's snapshot
  const cursor = cursorAt(parseSnapshot(since) as Snapshot);
  const backlog = await pagesVisited(client, (upto) => backlogQuery(cursor, upto) as string, [since, null, 1, null, null]);
  t.ok(backlog < 20, `a resume's backlog read visited ${backlog} pages`);
  t.same((await read(since)).taskIds, [later], 'and the read finds the one committed');
});

async function outboxPages(): Promise<number> {
  const { rows } = await pool.query<{ pages: string }>(`SELECT pg_relation_size('task_events.outbox') / 8192 AS pages`);
  return Number(rows[0]?.pages);
}
