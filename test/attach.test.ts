// task_events.attach / detach on a host schema whose names are not ours: "apply the migrations,
// call attach" has to work for a Catalyst-like app that calls its tasks something else.
import t from 'tap';
import type pg from 'pg';
import { createTestDatabase } from '../harness/db.js';
import { attach, detach, type AttachOptions } from '../lib/attach.js';
import { ev, eventsOf } from './helpers/outbox.js';

const db = await createTestDatabase(t, { schema: false });
const { pool } = db;

/** A host schema of its own per test: work items, their owners and assignees, named the host's way. */
async function createHostSchema(schema: string, { state = true, updatedAt = false } = {}): Promise<void> {
  await pool.query(`
    CREATE SCHEMA ${schema};
    CREATE TABLE ${schema}.work_items (
      item_id     bigint PRIMARY KEY,
      tenant_id   bigint NOT NULL,
      kind_id     bigint,
      title       text   NOT NULL,
      ${state ? `state text NOT NULL DEFAULT 'new',` : ''}
      ${updatedAt ? 'updated_at timestamptz NOT NULL DEFAULT now(),' : ''}
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
    message: 'task_events.attach: status_column: table crm_missing.work_items has no column "stage"' +
      ' (pass status_column => NULL if it has no status)',
  });
  await t.rejects(pool.query(attachSql('crm_missing', { task_id_column: `'task_id'` })), {
    code: '42703',
    message: 'task_events.attach: task_id_column: table crm_missing.item_owners has no column "task_id"',
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

t.test('a status column of any type: each change is one status event, NULLs included; equal bytes are no change', async (t) => {
  await pool.query(`
    CREATE SCHEMA crm_status_types;
    CREATE TYPE crm_status_types.phase AS ENUM ('new', 'active', 'done');
    CREATE COLLATION crm_status_types.nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false)`);
  // text under a collation where 'Done' = 'done', varchar, an enum, integers, and numeric (no byte
  // equality: the record comparison), each nullable, and a NOT NULL one
  const types = ['text COLLATE crm_status_types.nocase', 'varchar(20)', 'crm_status_types.phase', 'integer', 'numeric', 'text NOT NULL DEFAULT \'new\''];
  const values: string[][] = [
    [`'done'`, `'Done'`, 'NULL', 'NULL', `'new'`],
    [`'done'`, `'Done'`, 'NULL', 'NULL', `'new'`],
    [`'done'`, `'active'`, 'NULL', 'NULL', `'new'`],
    ['1', '2', 'NULL', 'NULL', '3'],
    ['1.0', '1.00', 'NULL', 'NULL', '2'],
    [`'done'`, `'Done'`, `'Done'`, `'x'`, `'new'`],
  ];
  for (const [index, type] of types.entries()) {
    const table = `crm_status_types.items_${index}`;
    await pool.query(`CREATE TABLE ${table} (item_id bigint PRIMARY KEY, tenant_id bigint NOT NULL, kind_id bigint, title text, state ${type})`);
    await pool.query(`SELECT task_events.attach(tasks => '${table}', task_owners => NULL, task_assignees => NULL, id_column => 'item_id',
                      environment_column => 'tenant_id', object_class_column => 'kind_id', status_column => 'state')`);
    await pool.query(`INSERT INTO ${table} (item_id, tenant_id, kind_id, title) VALUES (1, 7, 70, 'a')`);
    const changes = values[index] as string[];
    const events = await eventsOf(pool, async () => {
      for (const value of changes) await pool.query(`UPDATE ${table} SET state = ${value}`);
      await pool.query(`UPDATE ${table} SET state = state`);
    });
    // an event for each UPDATE that sets other bytes than the row held (NULL after NULL is none)
    const expected = changes.filter((value, at) => value !== changes[at - 1]);
    t.strictSame(events, expected.map(() => ev('task_status_changed', 1, 7, 70)), `state ${type}: ${changes.join(' → ')}`);
  }
});

t.test('detach removes the triggers, and writes then emit nothing', async (t) => {
  await createHostSchema('crm_detach');
  await pool.query(attachSql('crm_detach'));
  const { rows: [detached] } = await pool.query(`SELECT task_events.detach(tasks => 'crm_detach.work_items') AS n`);
  t.equal(detached.n, 1, 'one tasks table detached');
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

// attach() and detach() of lib/attach.ts: the same SQL functions, called with bind parameters.

/** attach()'s options with the host's names in `schema`. */
function hostOptions(schema: string): AttachOptions {
  return {
    tasks: `${schema}.work_items`, taskOwners: `${schema}.item_owners`, taskAssignees: `${schema}.item_assignees`,
    idColumn: 'item_id', environmentColumn: 'tenant_id', objectClassColumn: 'kind_id', statusColumn: 'state',
    ignoredColumns: ['modified_at'], taskIdColumn: 'item_id',
  };
}

t.test('attach() from JavaScript captures events under the host\'s names', async (t) => {
  await createHostSchema('js_crm');
  await attach(pool, hostOptions('js_crm'));
  t.strictSame(await triggersIn('js_crm'), ALL_TRIGGERS);
  t.strictSame(await eventsOf(pool, () => writeEverything('js_crm')), EVERYTHING);
});

t.test('attach() passes null as NULL: no owners table, no status', async (t) => {
  await createHostSchema('js_nulls');
  await attach(pool, { ...hostOptions('js_nulls'), taskOwners: null, statusColumn: null });
  t.strictSame(await triggersIn('js_nulls'), ALL_TRIGGERS.filter((name) => !name.startsWith('item_owners.')));
  const { rows: [row] } = await pool.query(
    `SELECT task_owners, status_column FROM task_events.attachments WHERE tasks = 'js_nulls.work_items'::regclass`);
  t.strictSame(row, { task_owners: null, status_column: null });
});

t.test('an omitted owners table that does not exist fails naming task_owners => NULL', async (t) => {
  await createHostSchema('js_no_owners');
  const { taskOwners: _omitted, ...options } = hostOptions('js_no_owners');
  const error = await attach(pool, options).then(() => undefined, (caught: Error) => caught);
  t.match(error, {
    code: 'FST_TASK_EVENTS_ATTACH',
    message: /task_owners => 'public\.task_owners': no such table \(pass task_owners => NULL if your app has none\)/,
    cause: { code: '42P01' },
  });
  t.strictSame(await triggersIn('js_no_owners'), [], 'nothing attached');
});

t.test('an unknown ignored column fails naming it', async (t) => {
  await createHostSchema('js_ignored');
  await t.rejects(attach(pool, { ...hostOptions('js_ignored'), ignoredColumns: ['modified_at', 'edited_by'] }), {
    message: /ignored_columns: table js_ignored\.work_items has no column "edited_by"/,
    cause: { code: '42703' },
  });
  t.strictSame(await triggersIn('js_ignored'), []);
});

t.test('a table name is a value, never SQL', async (t) => {
  await t.rejects(attach(pool, { tasks: `x'); DROP SCHEMA task_events CASCADE; --` }), { code: 'FST_TASK_EVENTS_ATTACH' });
  const { rows: [row] } = await pool.query(`SELECT to_regnamespace('task_events') IS NOT NULL AS present`);
  t.equal(row.present, true);
});

t.test('ignored_columns defaults to updated_at, only when the table has it', async (t) => {
  const { ignoredColumns: _omitted, ...options } = hostOptions('js_updated');
  await createHostSchema('js_updated', { updatedAt: true });
  await attach(pool, options);
  await createHostSchema('js_not_updated');
  await attach(pool, { ...options, tasks: 'js_not_updated.work_items', taskOwners: 'js_not_updated.item_owners',
    taskAssignees: 'js_not_updated.item_assignees' });
  const { rows } = await pool.query(`SELECT tasks::text, ignored_columns FROM task_events.attachments
    WHERE tasks IN ('js_updated.work_items'::regclass, 'js_not_updated.work_items'::regclass) ORDER BY 1`);
  t.strictSame(rows, [
    { tasks: 'js_not_updated.work_items', ignored_columns: [] },
    { tasks: 'js_updated.work_items', ignored_columns: ['updated_at'] },
  ]);
  for (const schema of ['js_updated', 'js_not_updated']) {
    await pool.query(`INSERT INTO ${schema}.work_items (item_id, tenant_id, kind_id, title) VALUES (1, 7, 70, 'a')`);
  }
  t.strictSame(await eventsOf(pool, () => pool.query(`UPDATE js_updated.work_items SET updated_at = now() + interval '1 day'`)),
    [], 'a change of updated_at alone is no event');
  t.strictSame(await eventsOf(pool, () => pool.query(`UPDATE js_not_updated.work_items SET modified_at = now() + interval '1 day'`)),
    [ev('task_value_changed', 1, 7, 70)], 'modified_at is not ignored unless named');
});

t.test('detach() of one table returns 1, and 0 for a table not attached', async (t) => {
  await createHostSchema('js_detach_one');
  await attach(pool, hostOptions('js_detach_one'));
  t.equal(await detach(pool, 'js_detach_one.work_items'), 1);
  t.strictSame(await triggersIn('js_detach_one'), []);
  t.equal(await detach(pool, 'js_detach_one.work_items'), 0);
  await t.rejects(detach(pool, 'js_detach_one.nothing'), { message: /tasks => 'js_detach_one\.nothing': no such table/ });
});

// Last: it detaches every table this file attached.
t.test('detach() without arguments detaches every attached table, whatever its names', async (t) => {
  await createHostSchema('js_detach_all');
  await attach(pool, hostOptions('js_detach_all'));
  const { rows: [before] } = await pool.query('SELECT count(*)::int AS n FROM task_events.attachments');
  t.ok(before.n >= 2, 'more than one table attached');
  t.equal(await detach(pool), before.n);
  const { rows: [after] } = await pool.query(`SELECT
      (SELECT count(*)::int FROM task_events.attachments) AS attachments,
      (SELECT count(*)::int FROM pg_trigger WHERE tgname LIKE 'task\\_events\\_%') AS triggers,
      (SELECT count(*)::int FROM pg_proc WHERE pronamespace = 'task_events'::regnamespace AND proname LIKE 'capture\\_%\\_%'
         AND proname <> 'capture_truncate') AS functions`);
  t.strictSame(after, { attachments: 0, triggers: 0, functions: 0 }, 'no trigger nor generated function left');
  t.strictSame(await eventsOf(pool, () => writeEverything('js_detach_all')), []);
  t.equal(await detach(pool), 0, 'nothing left to detach');
});
