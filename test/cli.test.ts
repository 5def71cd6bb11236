// The `fastify-task-events` CLI as an operator runs it: a real process, its output and exit code,
// against a fresh database taken from nothing to attached and back.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { createAppRole } from '../harness/backends.js';
import { createTestDatabase } from '../harness/db.js';
import { migrationState } from '../lib/migrate.js';
import { ev, eventsOf } from './helpers/outbox.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));

// The role first: it can only be dropped once the database holding its grants is gone.
const role = await createAppRole(t);
const db = await createTestDatabase(t, { migrate: false });
const { pool } = db;

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI with `args`; DATABASE_URL is the test database unless `env` says otherwise. */
function cli(args: string[], env: Record<string, string | undefined> = { DATABASE_URL: db.url }): Promise<Outcome> {
  const { DATABASE_URL: _inherited, ...inherited } = process.env;
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'bin/cli.ts', ...args],
      { cwd: REPO, env: { ...inherited, ...env }, timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
        resolve({ code, stdout, stderr });
      });
  });
}

/** Our triggers on crm.work_items. */
async function triggersOnWorkItems(): Promise<string[]> {
  const { rows } = await pool.query<{ tgname: string }>(
    `SELECT tgname FROM pg_trigger WHERE tgrelid = 'crm.work_items'::regclass AND NOT tgisinternal ORDER BY 1`);
  return rows.map((row) => row.tgname);
}

const ATTACH_CRM = ['attach', '--tasks', 'crm.work_items', '--task-owners', 'none', '--task-assignees', 'crm.item_assignees',
  '--id-column', 'item_id', '--environment-column', 'tenant_id', '--object-class-column', 'kind_id',
  '--status-column', 'state', '--ignored-columns', 'modified_at', '--task-id-column', 'item_id'];

t.test('--help, -h and help print the usage and exit 0', async (t) => {
  for (const args of [['--help'], ['-h'], ['help'], ['attach', '--help']]) {
    const { code, stdout } = await cli(args, {});
    t.equal(code, 0, args.join(' '));
    t.match(stdout, /^Usage: fastify-task-events <command> \[flags\]/);
    t.match(stdout, /--task-owners T\|none/);
  }
});

t.test('a usage mistake exits 2 with the fix', async (t) => {
  const unknown = await cli(['frobnicate']);
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /unknown command "frobnicate": use one of migrate, attach, detach, grant, status/);

  const flag = await cli(['status', '--colour']);
  t.equal(flag.code, 2);
  t.match(flag.stderr, /--colour/);

  const misplaced = await cli(['migrate', '--role', 'x']);
  t.equal(misplaced.code, 2);
  t.match(misplaced.stderr, /--role is not a flag of migrate/);

  const noRole = await cli(['grant', '--print']);
  t.equal(noRole.code, 2);
  t.match(noRole.stderr, /missing --role/);

  const noDatabase = await cli(['status'], {});
  t.equal(noDatabase.code, 2);
  t.match(noDatabase.stderr, 'no database: pass --database-url or set DATABASE_URL');
});

t.test('a database that cannot be reached exits 1 with its error and no stack trace', async (t) => {
  const { code, stderr } = await cli(['status', '--database-url', 'postgres://postgres@127.0.0.1:1/none'], {});
  t.equal(code, 1);
  t.match(stderr, /^error: .*ECONNREFUSED/);
  t.notMatch(stderr, /\n\s+at /, 'no stack trace without --verbose');
});

t.test('grant --print prints the GRANT statements without a database', async (t) => {
  const { code, stdout } = await cli(['grant', '--role', 'r', '--print'], {});
  t.equal(code, 0);
  t.match(stdout, /^GRANT USAGE ON SCHEMA task_events TO "r";$/m);
  t.match(stdout, /^GRANT SELECT, DELETE ON TABLE task_events\.outbox TO "r";$/m);
});

t.test('status on a database with nothing migrated exits 1 and says so', async (t) => {
  const { code, stdout } = await cli(['status']);
  t.equal(code, 1);
  t.match(stdout, /migrations: applied none; pending 1, /);
  t.match(stdout, /no migrations applied: run `fastify-task-events migrate`/);
});

t.test('migrate applies the migrations, and status then misses an attached table', async (t) => {
  const migrated = await cli(['migrate', '--database-url', db.url], {});
  t.equal(migrated.code, 0, migrated.stderr);
  t.match(migrated.stdout, /^applied migrations 1, 2, /);
  t.strictSame((await migrationState(pool)).pending, []);

  const again = await cli(['migrate']);
  t.equal(again.code, 0);
  t.match(again.stdout, /nothing to apply/);

  const { code, stdout } = await cli(['status']);
  t.equal(code, 1);
  t.match(stdout, /pending none/);
  t.match(stdout, /no table attached/);
});

t.test('attach with the host\'s names captures its writes', async (t) => {
  await pool.query(`
    CREATE SCHEMA crm;
    CREATE TABLE crm.work_items (
      item_id     bigint PRIMARY KEY,
      tenant_id   bigint NOT NULL,
      kind_id     bigint,
      title       text   NOT NULL,
      state       text   NOT NULL DEFAULT 'new',
      modified_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE crm.item_assignees (
      item_id   bigint NOT NULL REFERENCES crm.work_items ON DELETE CASCADE,
      person_id bigint NOT NULL,
      PRIMARY KEY (item_id, person_id)
    );`);
  const { code, stdout, stderr } = await cli(ATTACH_CRM);
  t.equal(code, 0, stderr);
  t.match(stdout, /crm\.work_items/);
  t.match(stdout, /owners: none; assignees: crm\.item_assignees/);
  t.match(stdout, /ignored: modified_at/);

  const events = await eventsOf(pool, async () => {
    await pool.query(`INSERT INTO crm.work_items (item_id, tenant_id, kind_id, title) VALUES (1, 7, 70, 'a')`);
    await pool.query(`UPDATE crm.work_items SET state = 'active'`);
    await pool.query(`UPDATE crm.work_items SET modified_at = now() + interval '1 day'`);
    await pool.query(`UPDATE crm.work_items SET title = 'b'`);
    await pool.query(`INSERT INTO crm.item_assignees (item_id, person_id) VALUES (1, 5)`);
    await pool.query(`DELETE FROM crm.item_assignees`);
  });
  t.strictSame(events, [
    ev('task_created', 1, 7, 70), ev('task_status_changed', 1, 7, 70), ev('task_value_changed', 1, 7, 70),
    ev('task_assignee_added', 1, 7, 70), ev('task_assignee_removed', 1, 7, 70),
  ]);
});

t.test('attach without an owners table the app lacks exits 1 naming --task-owners none', async (t) => {
  const withoutOwners = ATTACH_CRM.filter((arg, index) => arg !== '--task-owners' && ATTACH_CRM[index - 1] !== '--task-owners');
  const { code, stderr } = await cli(withoutOwners);
  t.equal(code, 1);
  t.match(stderr, /^error: .*task_owners => 'public\.task_owners': no such table/);
  t.match(stderr, /task_owners => NULL/);
  t.match(stderr, /--task-owners none/);
  t.notMatch(stderr, /\n\s+at /, 'no stack trace');

  const verbose = await cli([...withoutOwners, '--verbose']);
  t.equal(verbose.code, 1);
  t.match(verbose.stderr, /\n\s+at /, '--verbose prints the stack');
});

t.test('attach with an unknown ignored column exits 1 naming it', async (t) => {
  const args = ATTACH_CRM.map((arg) => (arg === 'modified_at' ? 'modified_at,edited_by' : arg));
  const { code, stderr } = await cli(args);
  t.equal(code, 1);
  t.match(stderr, /ignored_columns: table crm\.work_items has no column "edited_by"/);
  t.strictSame(await triggersOnWorkItems(),
    ['task_events_delete', 'task_events_insert', 'task_events_truncate', 'task_events_update'],
    'the earlier attach stands');
});

t.test('status lists the attached table and its columns, and exits 0', async (t) => {
  const { code, stdout } = await cli(['status']);
  t.equal(code, 0, stdout);
  t.match(stdout, /^ {2}crm\.work_items, attached /m);
  t.match(stdout, /id: item_id; environment: tenant_id; object class: kind_id; status: state; ignored: modified_at/);
  t.match(stdout, /task id column: item_id/);
  t.match(stdout, /outbox: 5 rows, the oldest \d+[smhd]( \d+[smh])? old \(/);
  t.notMatch(stdout, /problems/);
});

t.test('status exits 1 when an attached table was dropped', async (t) => {
  await pool.query(`CREATE TABLE crm.gone (id bigint PRIMARY KEY, environment_id bigint NOT NULL, object_class_id bigint)`);
  const attached = await cli(['attach', '--tasks', 'crm.gone', '--task-owners', 'none', '--task-assignees', 'none',
    '--status-column', 'none']);
  t.equal(attached.code, 0, attached.stderr);
  await pool.query('DROP TABLE crm.gone');
  const { code, stdout } = await cli(['status']);
  t.equal(code, 1);
  t.match(stdout, /attached table oid \d+ no longer exists: run `fastify-task-events detach`/);
});

t.test('grant gives a role what the plugin needs', async (t) => {
  const { code, stdout, stderr } = await cli(['grant', '--role', role.name]);
  t.equal(code, 0, stderr);
  t.match(stdout, /^GRANT /m);
  const { rows: [row] } = await pool.query(
    `SELECT has_table_privilege($1, 'task_events.outbox', 'SELECT') AS outbox,
            has_table_privilege($1, 'task_events.tokens', 'INSERT') AS tokens`, [role.name]);
  t.strictSame(row, { outbox: true, tokens: true });

  const unknown = await cli(['grant', '--role', 'no_such_role_here']);
  t.equal(unknown.code, 1);
  t.match(unknown.stderr, /^error: role "no_such_role_here" does not exist/);
});

t.test('detach without flags detaches everything, and status then exits 1', async (t) => {
  const { code, stdout, stderr } = await cli(['detach']);
  t.equal(code, 0, stderr);
  t.match(stdout, 'detached 2 tables');
  t.strictSame(await triggersOnWorkItems(), []);
  t.strictSame(await eventsOf(pool, () => pool.query(`UPDATE crm.work_items SET state = 'done'`)), []);

  const again = await cli(['detach']);
  t.equal(again.code, 0);
  t.match(again.stdout, 'nothing was attached');

  const status = await cli(['status']);
  t.equal(status.code, 1);
  t.match(status.stdout, /no table attached/);
});
