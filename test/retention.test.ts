import t from 'tap';
import { createTestDatabase } from '../harness/db.js';
import { startServer } from './helpers/server.js';

const rows = (count: number): string =>
  `INSERT INTO task_events.outbox (environment_id, task_id, object_class_id, event)
   SELECT 1, n, 1, 'task_created' FROM generate_series(1, ${count}) AS n`;

/**
 * A pruner's mark as if taken `age` ago, above every transaction committed so far. (The pruner's
 * own marks use the snapshot's xmin, which other databases' transactions on a shared server can
 * hold back; the next xid to be assigned makes these tests independent of them.)
 */
const markTaken = (age: string, oldestRunning = 'pg_snapshot_xmax(pg_current_snapshot())'): string =>
  `INSERT INTO task_events.prune_horizon (taken_at, oldest_running) VALUES (now() - interval '${age}', ${oldestRunning})`;

t.test('outbox rows committed longer ago than the retention, and expired tokens, are pruned in batches', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { outboxRetention: 60 * 60 * 1000 });
  await db.pool.query(rows(2500));
  await db.pool.query(markTaken('2 hours'));
  await db.pool.query(rows(10));
  await db.pool.query(markTaken('10 minutes'));
  const fresh = await server.token();
  await server.token();
  await db.pool.query(`UPDATE task_events.tokens SET expires_at = now() - interval '2 minutes' WHERE token_hash <> sha256(convert_to($1, 'UTF8'))`, [fresh]);
  const result = await server.app.taskEvents.prune();
  t.same(result, { outbox: 2500, tokens: 1 });
  const left = await db.pool.query(`SELECT count(*)::int AS n FROM task_events.outbox`);
  t.equal(left.rows[0].n, 10, 'rows committed after the mark older than the retention stay');
  const marks = await db.pool.query(`SELECT count(*)::int AS n FROM task_events.prune_horizon`);
  t.equal(marks.rows[0].n, 3, 'marks older than the one in use are gone (2 hours ago kept, 10 minutes ago, now)');
  const tokens = await db.pool.query(`SELECT count(*)::int AS n FROM task_events.tokens`);
  t.equal(tokens.rows[0].n, 1, 'the unexpired token stays');
});

t.test('one instance prunes at a time; writers are never held up', async (t) => {
  const db = await createTestDatabase(t);
  const first = await startServer(t, db, { outboxRetention: 60 * 60 * 1000 });
  const second = await startServer(t, db, { outboxRetention: 60 * 60 * 1000 });
  await db.pool.query(rows(30_000));
  await db.pool.query(markTaken('1 day'));
  const writer = await db.pool.connect();
  t.teardown(() => writer.release());
  await writer.query(`SET lock_timeout = '500ms'`);
  const writes = (async () => {
    for (let i = 0; i < 20; i++) await writer.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'during prune')`);
  })();
  const results = await Promise.all([first.app.taskEvents.prune(), second.app.taskEvents.prune()]);
  await writes;
  const ran = results.filter((result) => result !== null);
  t.equal(ran.length, 1, 'exactly one instance pruned; the other skipped the round');
  t.equal(ran[0]?.outbox, 30_000, JSON.stringify(results));
});

t.test('a transaction open longer than the retention is kept until it has been committed that long', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { outboxRetention: 60 * 60 * 1000 });
  const slow = await db.pool.connect();
  t.teardown(() => slow.release());
  await slow.query('BEGIN');
  await slow.query(rows(5)); // inserted now, committed much later
  const { rows: [running] } = await slow.query('SELECT pg_current_xact_id()::text AS xid');
  // A mark taken while the transaction runs: the oldest running transaction is at most this one.
  await db.pool.query(markTaken('3 hours', `'${running.xid}'::xid8`));
  await slow.query('COMMIT');
  t.same(await server.app.taskEvents.prune(), { outbox: 0, tokens: 0 });
  await db.pool.query(markTaken('2 hours')); // as if its commit were two hours old
  t.same(await server.app.taskEvents.prune(), { outbox: 5, tokens: 0 });
});
