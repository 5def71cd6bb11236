import t from 'tap';
import { createTestDatabase } from './helpers/db.js';
import { startServer } from './helpers/server.js';

const oldRows = (count: number, age: string): string =>
  `INSERT INTO task_events.outbox (environment_id, task_id, object_class_id, event, created_at)
   SELECT 1, n, 1, 'task_created', now() - interval '${age}' FROM generate_series(1, ${count}) AS n`;

t.test('old outbox rows and expired tokens are pruned in batches, recent ones kept', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { outboxRetention: 60 * 60 * 1000 });
  await db.pool.query(oldRows(2500, '2 hours'));
  await db.pool.query(oldRows(10, '10 minutes'));
  const fresh = await server.token();
  await server.token();
  await db.pool.query(`UPDATE task_events.tokens SET expires_at = now() - interval '2 minutes' WHERE token_hash <> sha256(convert_to($1, 'UTF8'))`, [fresh]);
  const result = await server.app.taskEvents.prune();
  t.same(result, { outbox: 2500, tokens: 1 });
  const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM task_events.outbox`);
  t.equal(rows[0].n, 10, 'rows younger than the retention stay');
  const tokens = await db.pool.query(`SELECT count(*)::int AS n FROM task_events.tokens`);
  t.equal(tokens.rows[0].n, 1, 'the unexpired token stays');
});

t.test('one instance prunes at a time; writers are never held up', async (t) => {
  const db = await createTestDatabase(t);
  const first = await startServer(t, db, { outboxRetention: 1000 });
  const second = await startServer(t, db, { outboxRetention: 1000 });
  await db.pool.query(oldRows(30_000, '1 day'));
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
  t.equal(ran[0]?.outbox, 30_000);
});
