// task_events.attach / detach on a host schema whose names are not ours: "apply the migrations,
// call attach" has to work for a Catalyst-like app that calls its tasks something else.
import t from 'tap';
import type pg from 'pg';
import { createTestDatabase } from './helpers/db.js';
import { ev, eventsOf } from './helpers/outbox.js';

const db = await createTestDatabase(t, { schema: false });
const { pool } = db;

/** A host schema of its own per test: work items, their owners and assignees, named the host's way. */
async function createHostSchema(schema: string, { state = true } = {}): Promise<void> {
  await pool.query(`
    CREATE SCHEMA ${schema};
    CREATE TABLE ${schema}.work_items (
      item_id     bigint PRIMARY KEY,
      tenant_id   bigint NOT NULL,
      kind_id     bigint,
      title       text   NOT NULL,
      ${state ? `state text NOT NULL DEFAULT 'new',` : ''}
      modified_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE ${schema}.item_owners (
      item_id   bigint NOT NULL REFERENCES ${schema}.work_items ON DELETE CASCADE,
      person_id bigint NOT NULL,
      PRIMARY KEY (item_id, person_id)
    );
    CREATE TABLE ${schema}.item_assignees (
      item_id   bigint NOT NULL REFERENCES ${schema}.work_items ON DELETE CASCADE,
      person_id bigint NOT NULL,
      PRIMARY KEY (item_id, person_id)
    );`);
}

/** attach() with the host's names, every argument named; `overrides` are raw SQL values. */
function attachSql(schema: string, overrides: Record<string, string> = {}): string {
  const args: Record<string, string> = {
    tasks: `'${schema}.work_items'`,
    task_owners: `'${schema}.item_owners'`,
    task_assignees: `'${schema}.item_assignees'`,
    id_column: `'item_id'`,
    environment_column: `'tenant_id'`,
    object_class_column: `'kind_id'`,
    status_column: `'state'`,
    ignored_columns: `ARRAY['modified_at']`,
    task_id_column: `'item_id'`,
    ...overrides,
  };
  return `SELECT task_events.attach(${Object.entries(args).map(([name, value]) => `${name} => ${value}`).join(', ')})`;
}

/** Our triggers in `schema`, as "table.trigger". */
async function triggersIn(schema: string): Promise<string[]> {
  const { rows } = await pool.query(
    `SELECT c.relname || '.' || tg.tgname AS name
     FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = $1 AND NOT tg.tgisinternal ORDER BY 1`, [schema]);
  return rows.map((r) => r.name);
}

const ALL_TRIGGERS = [
  'item_assignees.task_events_delete', 'item_assignees.task_events_insert',
  'item_owners.task_events_delete', 'item_owners.task_events_insert',
  'work_items.task_events_delete', 'work_items.task_events_insert', 'work_items.task_events_truncate', 'work_items.task_events_update',
];

/** Every kind of write, on the host's names; returns nothing, the outbox tells. */
async function writeEverything(schema: string, client: pg.Pool | pg.PoolClient = pool): Promise<void> {
  await client.query(`INSERT INTO ${schema}.work_items (item_id, tenant_id, kind_id, title) VALUES (10, 7, 70, 'a'), (11, 8, 80, 'b')`);
  await client.query(`UPDATE ${schema}.work_items SET state = 'active', title = 'a!' WHERE item_id = 10`);
  await client.query(`UPDATE ${schema}.work_items SET modified_at = modified_at + interval '1 hour'`);
  await client.query(`INSERT INTO ${schema}.item_owners (item_id, person_id) VALUES (10, 1)`);
  await client.query(`INSERT INTO ${schema}.item_assignees (item_id, person_id) VALUES (11, 2)`);
  await client.query(`DELETE FROM ${schema}.item_owners WHERE item_id = 10`);
  await client.query(`DELETE FROM ${schema}.item_assignees WHERE item_id = 11`);
  await client.query(`INSERT INTO ${schema}.item_owners (item_id, person_id) VALUES (11, 1)`);
  await client.query(`DELETE FROM ${schema}.work_items WHERE item_id = 11`);
}

/** What writeEverything() emits when everything is attached. */
const EVERYTHING = [
  ev('task_created', 10, 7, 70), ev('task_created', 11, 8, 80),
  ev('task_status_changed', 10, 7, 70), ev('task_value_changed', 10, 7, 70),
  ev('task_owner_added', 10, 7, 70), ev('task_assignee_added', 11, 8, 80),
  ev('task_owner_removed', 10, 7, 70), ev('task_assignee_removed', 11, 8, 80),
  ev('task_owner_added', 11, 8, 80), ev('task_deleted', 11, 8, 80),
];

t.test('attach with named arguments captures events under the host\'s names', async (t) => {
  await createHostSchema('crm');
  await pool.query(attachSql('crm'));
  t.strictSame(await triggersIn('crm'), ALL_TRIGGERS);
  t.strictSame(await eventsOf(pool, () => writeEverything('crm')), EVERYTHING);
});

t.test('attach called twice leaves exactly one set of triggers', async (t) => {
  await createHostSchema('crm_twice');
  await pool.query(attachSql('crm_twice'));
  await pool.query(attachSql('crm_twice'));
  t.strictSame(await triggersIn('crm_twice'), ALL_TRIGGERS);
  t.strictSame(await eventsOf(pool, () => writeEverything('crm_twice')), EVERYTHING, 'each event once');
});

t.test('attach with a missing column fails with a message naming the table and the column', async (t) => {
  await createHostSchema('crm_missing');
  await t.rejects(pool.query(attachSql('crm_missing', { status_column: `'stage'` })), {
    code: '42703',
    message: 'task_events.attach: table crm_missing.work_items has no column "stage"',
  });
  await t.rejects(pool.query(attachSql('crm_missing', { task_id_column: `'task_id'` })), {
    code: '42703',
    message: 'task_events.attach: table crm_missing.item_owners has no column "task_id"',
  });
  t.strictSame(await triggersIn('crm_missing'), [], 'a failed attach leaves no trigger behind');
});

t.test('NULL owners and assignees tables are skipped', async (t) => {
  await createHostSchema('crm_nolinks');
  await pool.query(attachSql('crm_nolinks', { task_owners: 'NULL', task_assignees: 'NULL' }));
  t.strictSame(await triggersIn('crm_nolinks'),
    ['work_items.task_events_delete', 'work_items.task_events_insert', 'work_items.task_events_truncate', 'work_items.task_events_update']);
  t.strictSame(await eventsOf(pool, () => writeEverything('crm_nolinks')), [
    ev('task_created', 10, 7, 70), ev('task_created', 11, 8, 80),
    ev('task_status_changed', 10, 7, 70), ev('task_value_changed', 10, 7, 70),
    ev('task_deleted', 11, 8, 80),
  ]);
});

t.test('a NULL status column emits no status events and still captures value changes', async (t) => {
  await createHostSchema('crm_nostatus', { state: false });
  await pool.query(attachSql('crm_nostatus', { status_column: 'NULL' }));
  const events = await eventsOf(pool, async () => {
    await pool.query(`INSERT INTO crm_nostatus.work_items (item_id, tenant_id, kind_id, title) VALUES (1, 7, 70, 'a')`);
    await pool.query(`UPDATE crm_nostatus.work_items SET title = 'b', modified_at = now() + interval '1 day'`);
    await pool.query(`UPDATE crm_nostatus.work_items SET modified_at = modified_at + interval '1 day'`);
    await pool.query(`UPDATE crm_nostatus.work_items SET kind_id = 71`);
  });
  t.strictSame(events, [ev('task_created', 1, 7, 70), ev('task_value_changed', 1, 7, 70), ev('task_value_changed', 1, 7, 71)]);

  await createHostSchema('crm_state_as_value');
  await pool.query(attachSql('crm_state_as_value', { status_column: 'NULL' }));
  await pool.query(`INSERT INTO crm_state_as_value.work_items (item_id, tenant_id, kind_id, title) VALUES (1, 7, 70, 'a')`);
  t.strictSame(await eventsOf(pool, () => pool.query(`UPDATE crm_state_as_value.work_items SET state = 'done'`)),
    [ev('task_value_changed', 1, 7, 70)], 'without a status column, a state column is just a value');
});

t.test('detach removes the triggers, and writes then emit nothing', async (t) => {
  await createHostSchema('crm_detach');
  await pool.query(attachSql('crm_detach'));
  await pool.query(`SELECT task_events.detach(tasks => 'crm_detach.work_items', task_owners => 'crm_detach.item_owners',
                                              task_assignees => 'crm_detach.item_assignees')`);
  t.strictSame(await triggersIn('crm_detach'), []);
  t.strictSame(await eventsOf(pool, () => writeEverything('crm_detach')), []);
  const { rows } = await pool.query('SELECT count(*)::int AS n FROM crm_detach.work_items');
  t.equal(rows[0].n, 1, 'the host\'s data is untouched');
});

t.test('link triggers work when the session\'s search_path does not include the tasks table\'s schema', async (t) => {
  await createHostSchema('crm_path');
  const client = await pool.connect();
  t.teardown(() => client.release(true));
  // The host attaches with unqualified names, under its own search_path...
  await client.query('SET search_path = crm_path, public');
  await client.query(`SELECT task_events.attach(tasks => 'work_items', task_owners => 'item_owners',
    task_assignees => 'item_assignees', id_column => 'item_id', environment_column => 'tenant_id',
    object_class_column => 'kind_id', status_column => 'state', ignored_columns => ARRAY['modified_at'],
    task_id_column => 'item_id')`);
  // ...and another application writes with a search_path that has neither schema on it.
  await client.query('SET search_path = pg_catalog');
  t.strictSame(await eventsOf(pool, () => writeEverything('crm_path', client)), EVERYTHING);
});
