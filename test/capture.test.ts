// SPEC "Where events come from": every write to the reference schema, as psql or an ORM would
// write it, leaves exactly the outbox rows of the event-mapping table, and rings the doorbell.
import t from 'tap';
import type pg from 'pg';
import { createTestDatabase } from '../harness/db.js';
import { ev, eventsOf, eventsSince, listen, outboxMark } from './helpers/outbox.js';

const db = await createTestDatabase(t);
const { pool } = db;

/** Inserts tasks (environment, object class) and returns their ids; their events are not looked at. */
async function createTasks(...tasks: Array<[environmentId: number, objectClassId: number]>): Promise<number[]> {
  const ids: number[] = [];
  for (const [environmentId, objectClassId] of tasks) {
    const { rows } = await pool.query(
      `INSERT INTO tasks (environment_id, object_class_id, name) VALUES ($1, $2, 'fixture') RETURNING id`,
      [environmentId, objectClassId],
    );
    ids.push(Number(rows[0].id));
  }
  return ids;
}

/** Runs `work` inside BEGIN ... COMMIT (or ROLLBACK) on one connection. */
async function inTransaction(work: (client: pg.PoolClient) => Promise<unknown>, end: 'COMMIT' | 'ROLLBACK' = 'COMMIT'): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await work(client);
    await client.query(end);
  } finally {
    client.release();
  }
}

t.test('INSERT of one task emits task_created', async (t) => {
  let id = 0;
  const events = await eventsOf(pool, async () => {
    const { rows } = await pool.query(
      `INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 2, 'Write docs') RETURNING id`);
    id = Number(rows[0].id);
  });
  t.strictSame(events, [ev('task_created', id, 1, 2)]);
});

t.test('multi-row INSERT emits one task_created per row, in id order', async (t) => {
  let ids: number[] = [];
  const events = await eventsOf(pool, async () => {
    const { rows } = await pool.query(
      `INSERT INTO tasks (environment_id, object_class_id, name)
       VALUES (1, 1, 'a'), (1, 3, 'b'), (2, 4, 'c') RETURNING id`);
    ids = rows.map((r) => Number(r.id));
  });
  t.strictSame(events, [ev('task_created', ids[0]!, 1, 1), ev('task_created', ids[1]!, 1, 3), ev('task_created', ids[2]!, 2, 4)]);
});

t.test('UPDATE changing only status emits task_status_changed', async (t) => {
  const [id] = await createTasks([1, 1]);
  const events = await eventsOf(pool, () => pool.query(`UPDATE tasks SET status = 'done' WHERE id = $1`, [id]));
  t.strictSame(events, [ev('task_status_changed', id!, 1, 1)]);
});

t.test('UPDATE changing another column (name, values jsonb) emits task_value_changed', async (t) => {
  const [id] = await createTasks([1, 2]);
  t.strictSame(await eventsOf(pool, () => pool.query(`UPDATE tasks SET name = 'renamed' WHERE id = $1`, [id])),
    [ev('task_value_changed', id!, 1, 2)], 'name');
  t.strictSame(await eventsOf(pool, () => pool.query(`UPDATE tasks SET "values" = '{"priority": 3}' WHERE id = $1`, [id])),
    [ev('task_value_changed', id!, 1, 2)], 'values');
  t.strictSame(await eventsOf(pool, () => pool.query(`UPDATE tasks SET "values" = "values" || '{"due": "2025-02-01"}' WHERE id = $1`, [id])),
    [ev('task_value_changed', id!, 1, 2)], 'values merged');
});

t.test('UPDATE changing both status and a value emits task_status_changed then task_value_changed', async (t) => {
  const [first, second] = await createTasks([1, 1], [1, 3]);
  const events = await eventsOf(pool, () =>
    pool.query(`UPDATE tasks SET status = 'doing', name = 'both' WHERE id IN ($1, $2)`, [first, second]));
  t.strictSame(events, [
    ev('task_status_changed', first!, 1, 1), ev('task_value_changed', first!, 1, 1),
    ev('task_status_changed', second!, 1, 3), ev('task_value_changed', second!, 1, 3),
  ]);
});

t.test('UPDATE changing only updated_at emits nothing', async (t) => {
  const [id] = await createTasks([1, 1]);
  const events = await eventsOf(pool, () =>
    pool.query(`UPDATE tasks SET updated_at = updated_at + interval '1 minute' WHERE id = $1`, [id]));
  t.strictSame(events, []);
});

t.test('UPDATE setting columns to the values they already hold emits nothing', async (t) => {
  const [id] = await createTasks([1, 1]);
  await pool.query(`UPDATE tasks SET "values" = '{"a": 1, "b": [2]}' WHERE id = $1`, [id]);
  const events = await eventsOf(pool, () => pool.query(
    `UPDATE tasks SET status = 'open', name = name, "values" = '{"b": [2], "a": 1}', updated_at = now() WHERE id = $1`, [id]));
  t.strictSame(events, []);
});

t.test('an ORM writing every column, one of them changed, emits only that change', async (t) => {
  const [id] = await createTasks([2, 4]);
  const events = await eventsOf(pool, () => pool.query(
    `UPDATE tasks SET environment_id = $2, object_class_id = $3, name = $4, status = $5, "values" = $6, updated_at = now()
     WHERE id = $1`, [id, 2, 4, 'fixture', 'open', '{}']));
  t.strictSame(events, []);
  const changed = await eventsOf(pool, () => pool.query(
    `UPDATE tasks SET environment_id = $2, object_class_id = $3, name = $4, status = $5, "values" = $6, updated_at = now()
     WHERE id = $1`, [id, 2, 4, 'fixture', 'closed', '{}']));
  t.strictSame(changed, [ev('task_status_changed', id!, 2, 4)]);
});

t.test('DELETE emits task_deleted and no owner/assignee removed events for its cascaded rows', async (t) => {
  const [first, second] = await createTasks([1, 2], [2, 4]);
  await pool.query(`INSERT INTO task_owners (task_id, user_id) VALUES ($1, 1), ($2, 2)`, [first, second]);
  await pool.query(`INSERT INTO task_assignees (task_id, user_id) VALUES ($1, 1), ($1, 2), ($2, 2)`, [first, second]);
  const events = await eventsOf(pool, () => pool.query(`DELETE FROM tasks WHERE id IN ($1, $2)`, [first, second]));
  t.strictSame(events, [ev('task_deleted', first!, 1, 2), ev('task_deleted', second!, 2, 4)]);
  const { rows } = await pool.query('SELECT count(*)::int AS n FROM task_owners WHERE task_id IN ($1, $2)', [first, second]);
  t.equal(rows[0].n, 0, 'the link rows were cascaded');
});

t.test('INSERT / DELETE task_owners emit task_owner_added / task_owner_removed', async (t) => {
  const [first, second] = await createTasks([1, 3], [2, 4]);
  t.strictSame(await eventsOf(pool, () => pool.query(`INSERT INTO task_owners (task_id, user_id) VALUES ($1, 1), ($2, 2)`, [first, second])),
    [ev('task_owner_added', first!, 1, 3), ev('task_owner_added', second!, 2, 4)]);
  t.strictSame(await eventsOf(pool, () => pool.query(`DELETE FROM task_owners WHERE task_id = $1`, [first])),
    [ev('task_owner_removed', first!, 1, 3)]);
});

t.test('INSERT / DELETE task_assignees emit task_assignee_added / task_assignee_removed', async (t) => {
  const [id] = await createTasks([1, 1]);
  t.strictSame(await eventsOf(pool, () => pool.query(`INSERT INTO task_assignees (task_id, user_id) VALUES ($1, 1), ($1, 2)`, [id])),
    [ev('task_assignee_added', id!, 1, 1), ev('task_assignee_added', id!, 1, 1)]);
  t.strictSame(await eventsOf(pool, () => pool.query(`DELETE FROM task_assignees WHERE task_id = $1 AND user_id = 2`, [id])),
    [ev('task_assignee_removed', id!, 1, 1)]);
});

t.test('a bulk UPDATE of 20,000 rows in one statement emits exactly 20,000 events', async (t) => {
  await pool.query(`INSERT INTO tasks (environment_id, object_class_id, name)
                    SELECT 1, 2, 'bulk-' || g FROM generate_series(1, 20000) AS g`);
  const mark = await outboxMark(pool);
  const { rowCount } = await pool.query(`UPDATE tasks SET "values" = '{"migrated": true}' WHERE name LIKE 'bulk-%'`);
  t.equal(rowCount, 20000);
  const { rows } = await pool.query(
    `SELECT count(*)::int AS events, count(DISTINCT o.task_id)::int AS tasks, count(DISTINCT o.xid)::int AS transactions,
            array_agg(DISTINCT o.event) AS kinds, array_agg(DISTINCT t.name LIKE 'bulk-%') AS bulk,
            bool_and(o.environment_id = 1 AND o.object_class_id = 2) AS scoped
     FROM task_events.outbox o LEFT JOIN tasks t ON t.id = o.task_id WHERE o.id > $1`, [mark]);
  t.strictSame(rows[0], { events: 20000, tasks: 20000, transactions: 1, kinds: ['task_value_changed'], bulk: [true], scoped: true });
});

t.test('a multi-statement transaction emits each statement\'s events in order, with one xid', async (t) => {
  let id = 0;
  const mark = await outboxMark(pool);
  await inTransaction(async (client) => {
    const { rows } = await client.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 3, 'tx') RETURNING id`);
    id = Number(rows[0].id);
    await client.query(`INSERT INTO task_owners (task_id, user_id) VALUES ($1, 1)`, [id]);
    await client.query(`UPDATE tasks SET status = 'doing' WHERE id = $1`, [id]);
    await client.query(`INSERT INTO task_assignees (task_id, user_id) VALUES ($1, 1)`, [id]);
    await client.query(`UPDATE tasks SET name = 'tx, renamed' WHERE id = $1`, [id]);
  });
  t.strictSame(await eventsSince(pool, mark), [
    ev('task_created', id, 1, 3), ev('task_owner_added', id, 1, 3), ev('task_status_changed', id, 1, 3),
    ev('task_assignee_added', id, 1, 3), ev('task_value_changed', id, 1, 3),
  ]);
  const { rows } = await pool.query('SELECT count(DISTINCT xid)::int AS n FROM task_events.outbox WHERE id > $1', [mark]);
  t.equal(rows[0].n, 1);
});

t.test('a rolled-back transaction emits nothing', async (t) => {
  const [id] = await createTasks([1, 1]);
  const mark = await outboxMark(pool);
  await inTransaction(async (client) => {
    await client.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'never')`);
    await client.query(`UPDATE tasks SET status = 'done' WHERE id = $1`, [id]);
    await client.query(`DELETE FROM tasks WHERE id = $1`, [id]);
  }, 'ROLLBACK');
  t.strictSame(await eventsSince(pool, mark), []);
});

t.test('INSERT ... ON CONFLICT DO UPDATE emits task_value_changed for the updated row, task_created for the new one', async (t) => {
  const [existing] = await createTasks([1, 1]);
  let fresh = 0;
  const events = await eventsOf(pool, async () => {
    const { rows } = await pool.query(
      `INSERT INTO tasks (id, environment_id, object_class_id, name) VALUES ($1, 1, 1, 'upserted'), (DEFAULT, 1, 2, 'fresh')
       ON CONFLICT (id) DO UPDATE SET name = excluded.name RETURNING id, (xmax = 0) AS inserted`, [existing]);
    fresh = Number(rows.find((r) => r.inserted).id);
  });
  // PostgreSQL fires the AFTER UPDATE statement trigger of an upsert before its AFTER INSERT one.
  t.strictSame(events, [ev('task_value_changed', existing!, 1, 1), ev('task_created', fresh, 1, 2)]);
  const unchanged = await eventsOf(pool, () => pool.query(
    `INSERT INTO tasks (id, environment_id, object_class_id, name) VALUES ($1, 1, 1, 'upserted')
     ON CONFLICT (id) DO UPDATE SET name = excluded.name`, [existing]));
  t.strictSame(unchanged, [], 'an upsert that changes nothing emits nothing');
});

t.test('events of two environments carry their own environment_id and object_class_id', async (t) => {
  let ids: number[] = [];
  const events = await eventsOf(pool, async () => {
    const { rows } = await pool.query(
      `INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 2, 'acme'), (2, 4, 'globex') RETURNING id`);
    ids = rows.map((r) => Number(r.id));
    await pool.query(`UPDATE tasks SET status = 'done' WHERE id = ANY($1)`, [ids]);
    await pool.query(`INSERT INTO task_owners (task_id, user_id) VALUES ($1, 1), ($2, 2)`, ids);
    await pool.query(`DELETE FROM tasks WHERE id = ANY($1)`, [ids]);
  });
  const [acme, globex] = ids as [number, number];
  t.strictSame(events, [
    ev('task_created', acme, 1, 2), ev('task_created', globex, 2, 4),
    ev('task_status_changed', acme, 1, 2), ev('task_status_changed', globex, 2, 4),
    ev('task_owner_added', acme, 1, 2), ev('task_owner_added', globex, 2, 4),
    ev('task_deleted', acme, 1, 2), ev('task_deleted', globex, 2, 4),
  ]);
});

t.test('created_at has microsecond precision and is distinct per row of one transaction', async (t) => {
  const mark = await outboxMark(pool);
  await inTransaction(async (client) => {
    for (const name of ['one', 'two', 'three']) {
      await client.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, $1)`, [name]);
    }
    await client.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'four'), (1, 1, 'five')`);
  });
  const { rows } = await pool.query(
    `SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"') AS timestamp
     FROM task_events.outbox WHERE id > $1 ORDER BY id`, [mark]);
  const stamps = rows.map((r) => r.timestamp as string);
  t.equal(stamps.length, 5);
  for (const stamp of stamps) t.match(stamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/);
  t.equal(new Set(stamps.slice(0, 3)).size, 3, 'rows of separate statements in one transaction keep their own time');
  t.strictSame(stamps, [...stamps].sort(), 'created_at follows outbox order');
});

t.test('the outbox xid is the writing transaction\'s pg_current_xact_id()', async (t) => {
  const mark = await outboxMark(pool);
  let xid = '';
  await inTransaction(async (client) => {
    await client.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'x'), (2, 4, 'y')`);
    xid = (await client.query('SELECT pg_current_xact_id()::text AS xid')).rows[0].xid;
  });
  const { rows } = await pool.query('SELECT xid::text FROM task_events.outbox WHERE id > $1 ORDER BY id', [mark]);
  t.strictSame(rows.map((r) => r.xid), [xid, xid]);
});

t.test('a write to tasks sends a NOTIFY on channel task_events', async (t) => {
  const listener = await listen(t, db.url);
  await pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'ring')`);
  await listener.waitFor((received) => received.some((n) => n.channel === 'task_events' && n.payload === ''));
  t.pass('notified');
});

t.test('a transaction writing many rows sends one notification', async (t) => {
  const listener = await listen(t, db.url);
  await inTransaction(async (client) => {
    const { rows } = await client.query(`INSERT INTO tasks (environment_id, object_class_id, name)
                                         SELECT 1, 2, 'many-' || g FROM generate_series(1, 500) AS g RETURNING id`);
    const ids = rows.map((r) => Number(r.id));
    await client.query(`UPDATE tasks SET status = 'done' WHERE id = ANY($1)`, [ids]);
    await client.query(`INSERT INTO task_owners (task_id, user_id) SELECT unnest($1::bigint[]), 1`, [ids]);
  });
  t.equal((await listener.drain()).length, 1);
});

t.test('the doorbell: only the first writer after the listener armed it notifies', async (t) => {
  const listener = await listen(t, db.url);
  await createTasks([1, 1], [1, 2], [2, 4]);
  t.equal((await listener.drain()).length, 1, 'three writes, one notification');
  await createTasks([1, 3]);
  t.equal((await listener.drain()).length, 1, 'armed again by the drain: the next write rings');
});

t.test('before_read(): true while another transaction holds outbox rows (the doorbell left alone), else it arms the doorbell', async (t) => {
  const beforeRead = async (): Promise<boolean> => Boolean((await pool.query('SELECT task_events.before_read() AS writing')).rows[0]?.writing);
  const taken = async (): Promise<boolean> => Boolean((await pool.query('SELECT task_events.doorbell_taken() AS taken')).rows[0]?.taken);
  await createTasks([1, 1]);
  t.ok(await taken(), 'a write took the doorbell');
  const writer = await pool.connect();
  try {
    await writer.query('BEGIN');
    await writer.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'open')`);
    t.equal(await beforeRead(), true, 'a writer holds the outbox');
    t.ok(await taken(), 'and the doorbell stays as it was');
    await writer.query('COMMIT');
  } finally {
    writer.release();
  }
  t.equal(await beforeRead(), false, 'nobody holds it');
  t.notOk(await taken(), 'armed');
  const reader = await pool.connect();
  try {
    // a transaction that only reads the outbox is no writer
    await reader.query('BEGIN');
    await reader.query('SELECT count(*) FROM task_events.outbox');
    t.equal(await beforeRead(), false, 'a reader is no writer');
    await reader.query('COMMIT');
  } finally {
    reader.release();
  }
  await createTasks([1, 1]);
  t.ok(await taken(), 'the next write rings');
});

t.test('a rolled-back transaction and a write that changes nothing send no notification', async (t) => {
  const [id] = await createTasks([1, 1]);
  const listener = await listen(t, db.url);
  await inTransaction((client) => client.query(`UPDATE tasks SET status = 'gone' WHERE id = $1`, [id]), 'ROLLBACK');
  await pool.query(`UPDATE tasks SET updated_at = now() WHERE id = $1`, [id]);
  await pool.query(`DELETE FROM task_owners WHERE task_id = $1`, [id]);
  t.strictSame(await listener.drain(), []);
});

t.test('task_events.emit writes a row and notifies, and rejects an unknown event name', async (t) => {
  const listener = await listen(t, db.url);
  const events = await eventsOf(pool, () => pool.query(`SELECT task_events.emit(1, 424242, 3, 'task_created')`));
  t.strictSame(events, [ev('task_created', 424242, 1, 3)]);
  t.equal((await listener.drain()).length, 1, 'one notification');

  const mark = await outboxMark(pool);
  await t.rejects(pool.query(`SELECT task_events.emit(1, 424242, 3, 'task_exploded')`), { code: '23514' });
  t.strictSame(await eventsSince(pool, mark), []);
  t.strictSame(await listener.drain(), [], 'no notification for the rejected event');
});
