// Attaching must never make a host's write fail: the host's own role, with rights on its own
// tables only, writes tasks and its writes are captured. And the rest of what counts as a write.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { createTestDatabase } from '../harness/db.js';
import { ev, eventsOf } from './helpers/outbox.js';

const db = await createTestDatabase(t);
const { pool } = db;
const role = `task_events_host_${randomBytes(4).toString('hex')}`;

await pool.query(`CREATE ROLE ${role} NOLOGIN`);
await pool.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON tasks, task_owners, task_assignees TO ${role}`);
await pool.query(`GRANT CREATE ON SCHEMA public TO ${role}`);
t.teardown(async () => {
  await pool.query(`DROP OWNED BY ${role}`);
  await pool.query(`DROP ROLE ${role}`);
});

/** Runs `sql` as the host role on one connection of the test's pool. */
async function asHost(sql: string): Promise<{ rows: Record<string, unknown>[] }> {
  const client = await pool.connect();
  try {
    await client.query(`SET ROLE ${role}`);
    return await client.query(sql);
  } finally {
    await client.query('RESET ROLE');
    client.release();
  }
}

t.test('a host role without rights on schema task_events writes tasks, and they are captured', async (t) => {
  let id = 0;
  const events = await eventsOf(pool, async () => {
    const { rows } = await asHost(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'host') RETURNING id`);
    id = Number(rows[0]?.id);
    await asHost(`UPDATE tasks SET status = 'done' WHERE id = ${id}`);
    await asHost(`INSERT INTO task_owners VALUES (${id}, 1)`);
    await asHost(`DELETE FROM tasks WHERE id = ${id}`);
  });
  t.strictSame(events, [
    ev('task_created', id, 1, 1), ev('task_status_changed', id, 1, 1), ev('task_owner_added', id, 1, 1), ev('task_deleted', id, 1, 1),
  ]);
  await t.rejects(asHost(`SELECT count(*) FROM task_events.outbox`), /permission denied/, 'the outbox stays closed to it');
});

t.test('no one but the owner can attach the capture functions to a table', async (t) => {
  await pool.query(`GRANT USAGE ON SCHEMA task_events TO ${role}`); // so the function's own right is what is checked
  await asHost(`CREATE TABLE public.${role}_own (id bigint, environment_id bigint, object_class_id bigint)`);
  await t.rejects(
    asHost(`CREATE TRIGGER forged AFTER INSERT ON public.${role}_own REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION task_events.capture_truncate('id', 'environment_id', 'object_class_id', '')`),
    /permission denied for function (task_events\.)?capture_truncate/,
  );
});

t.test('TRUNCATE tasks emits task_deleted for every task', async (t) => {
  const { rows } = await pool.query(
    `INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 2, 'a'), (2, 4, 'b') RETURNING id`);
  const before = await pool.query(`SELECT id, environment_id, object_class_id FROM tasks ORDER BY id`);
  const events = await eventsOf(pool, () => pool.query('TRUNCATE tasks CASCADE'));
  t.strictSame(events, before.rows.map((r) => ev('task_deleted', Number(r.id), Number(r.environment_id), Number(r.object_class_id))));
  t.ok(rows.length === 2 && events.length >= 2);
});

t.test('a host session whose search_path puts its own operators and functions first cannot hijack the capture', async (t) => {
  // The UPDATE capture runs as the owner without a SET search_path (for speed): every name in it
  // carries its schema. Here the host role shadows what it could otherwise look up — the
  // operators =, *= and <>, nextval and pg_notify — with functions that fail loudly when called.
  const evil = `${role}_evil`;
  await pool.query(`GRANT CREATE ON DATABASE ${db.name} TO ${role}`);
  await asHost(`
    CREATE SCHEMA ${evil};
    ${[['text', 'text'], ['bigint', 'bigint'], ['bigint', 'integer'], ['record', 'record']].map(([left, right], n) => `
      CREATE FUNCTION ${evil}.trap${n}(a ${left}, b ${right}) RETURNS boolean LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'hijacked: ran as %', current_user; END $$;
      CREATE OPERATOR ${evil}.${left === 'record' ? '*=' : '='} (LEFTARG = ${left}, RIGHTARG = ${right}, FUNCTION = ${evil}.trap${n});`).join('')}
    CREATE FUNCTION ${evil}.nextval(regclass) RETURNS bigint LANGUAGE plpgsql AS
      $$ BEGIN RAISE EXCEPTION 'hijacked: ran as %', current_user; END $$;
    CREATE FUNCTION ${evil}.pg_notify(text, text) RETURNS void LANGUAGE plpgsql AS
      $$ BEGIN RAISE EXCEPTION 'hijacked: ran as %', current_user; END $$;`);
  const [id] = (await asHost(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'shadowed') RETURNING id`)).rows.map((row) => Number(row.id));
  await pool.query('SELECT task_events.arm_doorbell()'); // so the capture's ring runs too
  const client = await pool.connect();
  let events;
  try {
    await client.query(`SET ROLE ${role}`);
    await client.query(`SET search_path = ${evil}, pg_catalog, public`);
    events = await eventsOf(pool, async () => {
      // the host's own statement names its operator, so only the capture could meet the traps
      await client.query(`UPDATE tasks SET status = 'done', name = 'still shadowed' WHERE id OPERATOR(pg_catalog.=) ${id}`);
      await client.query(`INSERT INTO task_owners VALUES (${id}, 1)`);
    });
  } finally {
    await client.query('RESET search_path; RESET ROLE');
    client.release();
  }
  t.strictSame(events, [ev('task_status_changed', id!, 1, 1), ev('task_value_changed', id!, 1, 1), ev('task_owner_added', id!, 1, 1)]);
});
