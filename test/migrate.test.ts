import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import Postgrator from 'postgrator';
import t from 'tap';
import { applyReferenceSchema, createTestDatabase } from '../harness/db.js';
import { migrate, migrationsDirectory, migrationState } from '../lib/migrate.js';
import { ev, eventsOf } from './helpers/outbox.js';
import { applyPrereleaseMigrations } from './helpers/prerelease.js';

/**
 * The released migrations and their MD5 (postgrator's checksum): a database that ran one refuses
 * a changed file, so a released file never changes. A new migration is a new file, added here.
 */
const RELEASED: Record<string, string> = {
  '001.do.outbox.sql': '40a66f04168a490b79e9d6a90f48a1f0',
  '002.do.tokens.sql': '7c53da785519f46e4425634e15b11bdc',
  '003.do.prune-horizon.sql': 'bb05eeedd05ea05b8d0da26b5a6e216b',
  '004.do.capture.sql': '4e9644229720a37d22a2d153ad258b5e',
  '005.do.cursor-key.sql': 'e1d14899ec7a5689e5cd199d99c709da',
  '006.do.cheaper-capture.sql': 'df109b7c3f135c252a3790385fe1566b',
};

t.test('released migration files never change', async (t) => {
  const files = (await readdir(migrationsDirectory)).filter((file) => file.endsWith('.sql')).sort();
  t.strictSame(files, Object.keys(RELEASED).sort(), 'every migration file is listed as released, and every released one is there');
  for (const file of files) {
    const md5 = createHash('md5').update(await readFile(join(migrationsDirectory, file), 'utf8')).digest('hex');
    t.equal(md5, RELEASED[file], `${file} is unchanged`);
  }
});

t.test('migrations apply twice and from two processes at once', async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  await Promise.all([migrate(db.pool), migrate(db.pool), migrate(db.pool)]);
  await migrate(db.pool);
  const { rows } = await db.pool.query('SELECT version FROM task_events.schemaversion WHERE version > 0 ORDER BY version');
  t.same(rows.map((r) => Number(r.version)), [1, 2, 3, 4, 5, 6]);
  t.strictSame(await migrationState(db.pool), { applied: [1, 2, 3, 4, 5, 6], pending: [], foreign: [] });
});

t.test('a database with the 0.x pre-release migrations is refused with the fix, and the fix works', async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  await applyPrereleaseMigrations(db);
  await applyReferenceSchema(db.pool);
  t.strictSame((await migrationState(db.pool)).foreign, [1, 2, 3, 4, 5]);

  const refusal = await migrate(db.pool).then(() => null, (error: Error & { code?: string }) => error);
  t.equal(refusal?.code, 'FST_TASK_EVENTS_FOREIGN_SCHEMA');
  t.match(refusal?.message, /pre-release.*DROP SCHEMA task_events CASCADE/);
  const { rows } = await db.pool.query('SELECT max(version)::int AS version FROM task_events.schemaversion');
  t.equal(rows[0].version, 5, 'nothing was changed');

  // The README's way: drop the schema (our triggers on the host's tables go with it), migrate, attach.
  await db.pool.query('DROP SCHEMA task_events CASCADE');
  await migrate(db.pool);
  await db.pool.query('SELECT task_events.attach()');
  const [id] = (await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'kept') RETURNING id`)).rows.map((row) => Number(row.id));
  const events = await eventsOf(db.pool, async () => {
    await db.pool.query(`UPDATE tasks SET status = 'done' WHERE id = $1`, [id]);
    await db.pool.query(`INSERT INTO task_owners VALUES ($1, 1)`, [id]);
  });
  t.strictSame(events, [ev('task_status_changed', id!, 1, 1), ev('task_owner_added', id!, 1, 1)]);
});

t.test('a database attached under 005 is attached again by 006, with the same arguments, and captures as before', async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const client = await db.pool.connect();
  try {
    await new Postgrator({
      migrationPattern: `${migrationsDirectory}/*.sql`, driver: 'pg', database: client.database ?? '',
      schemaTable: 'task_events.schemaversion', execQuery: (query) => client.query(query),
    }).migrate('005');
  } finally {
    client.release();
  }
  await applyReferenceSchema(db.pool);
  const updateCapture = async (): Promise<string> => (await db.pool.query<{ source: string }>(
    `SELECT p.prosrc AS source FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
     WHERE tg.tgrelid = 'tasks'::regclass AND tg.tgname = 'task_events_update'`)).rows[0]?.source ?? '';
  t.match(await updateCapture(), /ROW\(OLD\.status\)::pg_catalog\.record/, 'under 005: the record comparison');
  const before = (await db.pool.query('SELECT * FROM task_events.attachments')).rows;

  await migrate(db.pool);
  t.strictSame((await migrationState(db.pool)).applied, [1, 2, 3, 4, 5, 6]);
  t.match(await updateCapture(), /OLD\.status COLLATE pg_catalog\."C" OPERATOR\(pg_catalog\.=\) NEW\.status/, 'under 006: text equality');
  const after = (await db.pool.query('SELECT * FROM task_events.attachments')).rows;
  t.strictSame(after.map(({ attached_at: _, ...row }) => row), before.map(({ attached_at: _, ...row }) => row), 'the same attachment');

  const { rows: [task] } = await db.pool.query<{ id: string }>(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'a') RETURNING id`);
  const id = Number(task?.id);
  t.strictSame(await eventsOf(db.pool, async () => {
    await db.pool.query(`UPDATE tasks SET status = 'done', updated_at = now() + interval '1 day' WHERE id = $1`, [id]);
    await db.pool.query(`UPDATE tasks SET name = 'b', status = 'open' WHERE id = $1`, [id]);
    await db.pool.query(`UPDATE tasks SET status = 'open', updated_at = now() WHERE id = $1`, [id]);
  }), [ev('task_status_changed', id, 1, 1), ev('task_status_changed', id, 1, 1), ev('task_value_changed', id, 1, 1)]);
});
