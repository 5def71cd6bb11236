import t from 'tap';
import { createTestDatabase } from './helpers/db.js';
import { migrate } from '../lib/migrate.js';

t.test('migrations apply twice and from two processes at once', async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  await Promise.all([migrate(db.pool), migrate(db.pool), migrate(db.pool)]);
  await migrate(db.pool);
  const { rows } = await db.pool.query('SELECT version FROM task_events.schemaversion WHERE version > 0 ORDER BY version');
  t.same(rows.map((r) => Number(r.version)), [1, 2, 3, 4, 5]);
});
