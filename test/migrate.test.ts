import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { applyReferenceSchema, createTestDatabase } from './helpers/db.js';
import { ev, eventsOf } from './helpers/outbox.js';
import { migrate, migrationsDirectory } from '../lib/migrate.js';

t.test('migrations apply twice and from two processes at once', async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  await Promise.all([migrate(db.pool), migrate(db.pool), migrate(db.pool)]);
  await migrate(db.pool);
  const { rows } = await db.pool.query('SELECT version FROM task_events.schemaversion WHERE version > 0 ORDER BY version');
  t.same(rows.map((r) => Number(r.version)), [1, 2, 3, 4, 5]);
});

t.test('migration 005 re-attaches tables attached before it, with their names and ignored columns', async (t) => {
  // A host that applied 001–004 with its own tool and attached with its own choices, then applies 005.
  const db = await createTestDatabase(t, { migrate: false });
  const files = (await readdir(migrationsDirectory)).filter((file) => /^\d{3}\.do\..*\.sql$/.test(file)).sort();
  const sql = (file: string): Promise<string> => readFile(join(migrationsDirectory, file), 'utf8');
  for (const file of files.filter((name) => name < '005')) await db.pool.query(await sql(file));
  await applyReferenceSchema(db.pool);
  await db.pool.query('SELECT task_events.detach()');
  await db.pool.query(`SELECT task_events.attach(task_assignees => NULL, ignored_columns => ARRAY['updated_at', 'name'])`);
  await db.pool.query(await sql(files.find((name) => name.startsWith('005')) as string));

  const { rows: triggers } = await db.pool.query<{ tbl: string; fn: string }>(`
    SELECT tgrelid::regclass::text AS tbl, tgfoid::regproc::text AS fn FROM pg_trigger
    WHERE tgname LIKE 'task_events_%' ORDER BY 1, 2`);
  t.same(triggers.map((row) => row.tbl), ['task_owners', 'task_owners', 'tasks', 'tasks', 'tasks', 'tasks'], 'owners and tasks, not assignees');
  t.ok(triggers.every((row) => /^task_events\.capture_(insert|update|delete)_[0-9a-f]{12}$|^task_events\.capture_task_rows$/.test(row.fn)), 'generated functions');

  const [id] = (await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'kept') RETURNING id`)).rows.map((row) => Number(row.id));
  const events = await eventsOf(db.pool, async () => {
    await db.pool.query(`UPDATE tasks SET name = 'ignored' WHERE id = $1`, [id]);
    await db.pool.query(`UPDATE tasks SET "values" = '{"a":1}' WHERE id = $1`, [id]);
    await db.pool.query(`INSERT INTO task_owners VALUES ($1, 1)`, [id]);
    await db.pool.query(`INSERT INTO task_assignees VALUES ($1, 1)`, [id]);
  });
  t.strictSame(events, [ev('task_value_changed', id!, 1, 1), ev('task_owner_added', id!, 1, 1)]);
});
