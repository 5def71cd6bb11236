// The package as a new user gets it: `npm pack`, installed from the tarball into a fresh app next
// to fastify and pg from the registry, set up with its own CLI on a fresh database whose tables
// are the host's own (README, "Put it in your own app and database"), served by a plain
// JavaScript app as a least-privileged role, type-checked from TypeScript and required from
// CommonJS. Real parts only: npm, psql, PostgreSQL, node processes, a `ws` client.
//
// Not part of `npm test` (the name has no `.test.ts`): it needs the npm registry and takes
// about a minute. Run it from the repository's root:
//   TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npx tap --timeout 600 test/consumer/installed-package.ts
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import WebSocket from 'ws';
import { Conditions } from '../../harness/conditions.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

/** What `npm pack` must put in the tarball, and what it must leave out. */
const PACKED = ['dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/bin/cli.js', 'migrations/001.do.outbox.sql', 'LICENSE', 'CHANGELOG.md'];
const NOT_PACKED = /^package\/(test|example)\//;

/** The app's dependencies besides our tarball, from the registry, as a user would add them. */
const APP_DEPENDENCIES = ['fastify@5', 'pg@8', 'ws', 'close-with-grace', 'typescript@5', '@types/node@20', '@types/pg', '@types/ws'];

/** The app's `messageTime`: short, so that the test waits little. */
const MESSAGE_TIME = 100;

/** Past the last expected event, how long the client must stay quiet (several `messageTime`s). */
const QUIET_AFTER = 5 * MESSAGE_TIME;

/** A JSON line of pino at this level or above (warn) is a failure. */
const PINO_WARN = 40;

const ATTACH = ['attach', '--tasks', 'crm.work_items', '--task-owners', 'crm.item_owners',
  '--task-assignees', 'crm.item_assignees', '--id-column', 'item_id', '--environment-column', 'tenant_id',
  '--object-class-column', 'kind_id', '--status-column', 'state', '--ignored-columns', 'modified_at',
  '--task-id-column', 'item_id'];

/** The host's own tables: no environments or object classes, only what the triggers need. */
const HOST_SCHEMA = `
CREATE SCHEMA crm;
CREATE TABLE crm.work_items (
  item_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id bigint NOT NULL,
  kind_id bigint,
  name text,
  state text,
  modified_at timestamptz DEFAULT now()
);
CREATE TABLE crm.item_owners (
  item_id bigint REFERENCES crm.work_items ON DELETE CASCADE,
  user_id bigint,
  PRIMARY KEY (item_id, user_id)
);
CREATE TABLE crm.item_assignees (
  item_id bigint REFERENCES crm.work_items ON DELETE CASCADE,
  user_id bigint,
  PRIMARY KEY (item_id, user_id)
);`;

/** The README's step 3, with the pool from separate fields and a token route instead of real auth. */
const APP_JS = `// A host app as the README's step 3 has it.
import Fastify from 'fastify';
import closeWithGrace from 'close-with-grace';
import pg from 'pg';
import taskEvents from 'fastify-task-events';

const pool = new pg.Pool({
  host: process.env.CRM_DB_HOST,
  port: Number(process.env.CRM_DB_PORT),
  user: process.env.CRM_DB_USER,
  password: process.env.CRM_DB_PASSWORD,
  database: process.env.CRM_DB_NAME,
});
const app = Fastify({ logger: true });
await app.register(taskEvents, { pool, messageTime: ${MESSAGE_TIME} });

app.get('/token', async (request) => {
  const environmentId = Number(request.query.environment);
  return { uuid: await app.taskEvents.issueToken({ environmentId, userId: 1 }) };
});

closeWithGrace({ delay: 10_000 }, async ({ err }) => {
  if (err) app.log.error({ err }, 'closing on error');
  await app.close();
  await pool.end();
});
await app.listen({ host: '127.0.0.1', port: 0 });
console.log(JSON.stringify({ listening: app.server.address().port }));
`;

const TSCONFIG = {
  compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true },
  files: ['typed.ts'],
};

/** Uses the public surface the way a TypeScript host would; must compile without a cast. */
const TYPED_TS = `import Fastify from 'fastify';
import pg from 'pg';
import taskEvents, { attach, HostErrors, migrate, type AttachOptions, type TaskEventsOptions } from 'fastify-task-events';
import { createTaskEventsClient, type TaskEvent } from 'fastify-task-events/client';
import WebSocket from 'ws';

const pool = new pg.Pool({ host: '127.0.0.1', port: 5432, user: 'crm_app', password: 'secret', database: 'crm' });
const app = Fastify({ logger: true });
await app.register(taskEvents, { pool, messageTime: 100 });

const uuid: string = await app.taskEvents.issueToken({ environmentId: 1, userId: 1 });
const stats: number = app.taskEvents.stats().connections;

const options: TaskEventsOptions = { pool, messageTime: 100, rateLimit: false };
const crm: AttachOptions = { tasks: 'crm.work_items', taskOwners: null, ignoredColumns: ['modified_at'] };
const applyMigrations: (pool: pg.Pool) => Promise<void> = migrate;
const attachTables: (pool: pg.Pool, options?: AttachOptions) => Promise<void> = attach;
try {
  await app.ready();
} catch (error) {
  if (error instanceof HostErrors.NOT_MIGRATED) app.log.error({ code: error.code }, 'run the migrations');
}
const code: string = new HostErrors.PRIVILEGES('crm_app', 'USAGE', 'crm_app').code;
const client = createTaskEventsClient({ url: 'ws://127.0.0.1:3000/ws/events/tasks/', getToken: async () => uuid, WebSocket, eventTypes: ['task_created'] });
client.on('events', (events: TaskEvent[], { cursor }) => console.log(events[0]?.task_id, cursor.length));
client.close();
console.log(uuid, stats, options, crm, applyMigrations, attachTables, code);
`;

/** The one mistake tsc must catch; \`messageTime\` on a line of its own, to locate the error. */
const BAD_TS = `import Fastify from 'fastify';
import pg from 'pg';
import taskEvents from 'fastify-task-events';

const app = Fastify();
await app.register(taskEvents, {
  pool: new pg.Pool(),
  messageTime: 'fast',
});
`;
const BAD_LINE = BAD_TS.split('\n').findIndex((line) => line.includes("messageTime: 'fast'")) + 1;

const CHECK_CJS = `const taskEvents = require('fastify-task-events');
const client = require('fastify-task-events/client');
if (typeof client.createTaskEventsClient !== 'function') throw new Error('createTaskEventsClient is ' + typeof client.createTaskEventsClient);
if (typeof taskEvents.default !== 'function') throw new Error('default is ' + typeof taskEvents.default);
if (typeof taskEvents.migrate !== 'function') throw new Error('migrate is ' + typeof taskEvents.migrate);
console.log('ok');
`;

/** The events one client of tenant 1 must get from the writes of the events test, in order. */
const EXPECTED = ['task_created', 'task_status_changed', 'task_value_changed', 'task_owner_added',
  'task_assignee_added', 'task_assignee_removed', 'task_deleted'];

/** ISO 8601 in UTC, as the contract writes it: `2025-01-16T11:07:57.954470+00:00`. */
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?\+00:00$/;

interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Children still running, killed (with their process groups) when the test ends. */
const running = new Set<ChildProcess>();

/**
 * The environment of a user's shell: none of tap's loaders (NODE_OPTIONS), none of the
 * `npm_*` settings of the `npx tap` that runs us, no database settings of ours (the app reads
 * only what it is given, and pg must not find a password in PGPASSWORD).
 */
function userEnvironment(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^(npm_|NODE_OPTIONS$|NODE_ENV$|TAP|_TAP|PG|DATABASE_URL$|TEST_DATABASE_URL$)/i.test(key)) continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

/** Runs a command to its end (or kills its process group at `timeout`); never rejects. */
function run(command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeout: number }): Promise<Outcome> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? userEnvironment(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk; });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk; });
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${options.timeout} ms]`;
      killGroup(child);
    }, options.timeout);
    child.on('error', (error) => { stderr += `\n[${error.message}]`; });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      running.delete(child);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

function killGroup(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    child.kill('SIGKILL'); // not a group leader
  }
}

/** The last lines of a process's output, for a failure's diagnostics. */
function tail(outcome: Pick<Outcome, 'stdout' | 'stderr'>, lines = 15): string {
  const last = (text: string): string => text.trimEnd().split('\n').slice(-lines).join('\n');
  return `stdout:\n${last(outcome.stdout)}\nstderr:\n${last(outcome.stderr)}`;
}

/** Asserts exit code `expected`; on a mismatch, the output's tail goes with the failure. */
function exited(t: Test, outcome: Outcome, expected: number, what: string): boolean {
  const ok = outcome.code === expected;
  t.equal(outcome.code, expected, `${what} exits ${expected} (${outcome.ms} ms)`, ok ? {} : { diagnostic: true, output: tail(outcome) });
  return ok;
}

// ---------------------------------------------------------------------------------------------
// Shared state: each step leaves what the next needs; a step whose prerequisite failed is skipped.

// mkdtemp makes them 0700
const packDir = await mkdtemp(join(tmpdir(), 'task-events-pack-'));
const appDir = await mkdtemp(join(tmpdir(), 'crm-app-'));
const serverUrl = process.env.TEST_DATABASE_URL;
const noDatabase = serverUrl ? false : 'TEST_DATABASE_URL is not set (CI sets it to postgres://postgres@127.0.0.1:5432/postgres)';
const suffix = randomBytes(5).toString('hex');
const database = `consumer_${suffix}`;
const role = `crm_app_${suffix}`;
const rolePassword = randomBytes(12).toString('hex');
let tarball: string | undefined;
let installed = false;
let databaseCreated = false;
let roleCreated = false;
let cliDone = false;
const timings: string[] = [];

/** `serverUrl` with `database` as its path: the owner's (postgres) connection to it. */
function ownerUrl(name = database): string {
  const url = new URL(serverUrl ?? 'postgres://unset');
  url.pathname = `/${name}`;
  return url.toString();
}

/** psql, stopping at the first error; resolves to its output, rejects with its stderr. */
async function psql(url: string, ...commands: string[]): Promise<string> {
  const args = [url, '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1'];
  for (const command of commands) args.push('-c', command);
  const outcome = await run('psql', args, { cwd: packDir, timeout: 30_000 });
  if (outcome.code !== 0) throw new Error(`psql failed (${outcome.code}): ${outcome.stderr.trim()}`);
  return outcome.stdout.trim();
}

t.teardown(async () => {
  for (const child of running) killGroup(child);
  if (databaseCreated) await psql(ownerUrl('postgres'), `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
  // only once the database holding its grants is gone
  if (roleCreated) await psql(ownerUrl('postgres'), `DROP ROLE IF EXISTS ${role}`);
  for (const dir of [packDir, appDir]) await rm(dir, { recursive: true, force: true });
  t.comment(`timings: ${timings.join(', ')}`);
});

/** Times a step for the closing comment. */
async function timed<T>(name: string, body: () => Promise<T>): Promise<T> {
  const started = Date.now();
  try {
    return await body();
  } finally {
    timings.push(`${name} ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
}

// ---------------------------------------------------------------------------------------------

await t.test('npm pack builds a tarball with dist, the migrations, LICENSE and CHANGELOG, and no tests or example', (t) =>
  timed('pack', async () => {
    const outcome = await run('npm', ['pack', '--pack-destination', packDir], { cwd: REPO, timeout: 180_000 });
    if (!exited(t, outcome, 0, 'npm pack')) return;
    const tarballs = (await readdir(packDir)).filter((name) => name.endsWith('.tgz'));
    t.equal(tarballs.length, 1, 'one tarball');
    const name = tarballs[0];
    if (name === undefined) return;

    const listing = await run('tar', ['tzf', join(packDir, name)], { cwd: packDir, timeout: 30_000 });
    if (!exited(t, listing, 0, 'tar tzf')) return;
    const files = listing.stdout.trim().split('\n');
    for (const file of PACKED) t.ok(files.includes(`package/${file}`), `holds ${file}`);
    t.same(files.filter((file) => NOT_PACKED.test(file)), [], 'holds nothing of test/ or example/');
    // tsc never deletes: a module removed from lib/ would still ship from an old dist/
    const sources = new Set((await readdir(join(REPO, 'lib'))).filter((file) => file.endsWith('.ts')).map((file) => file.slice(0, -3)));
    const stale = files.filter((file) => /^package\/dist\/lib\/[^/]+\.js$/.test(file))
      .filter((file) => !sources.has(file.slice('package/dist/lib/'.length, -'.js'.length)));
    t.same(stale, [], 'every dist/lib module has its source in lib/');
    tarball = join(packDir, name);
  }));

await t.test('a fresh app installs the tarball with fastify, pg and the rest from the registry',
  { skip: tarball ? false : 'no tarball: npm pack failed' }, (t) =>
    timed('install', async () => {
      await writeFile(join(appDir, 'package.json'), `${JSON.stringify({ name: 'crm-app', version: '1.0.0', private: true, type: 'module' }, null, 2)}\n`);
      const outcome = await run('npm', ['install', tarball ?? '', ...APP_DEPENDENCIES, '--no-audit', '--no-fund'],
        { cwd: appDir, timeout: 180_000 });
      if (!exited(t, outcome, 0, 'npm install')) return;
      // what a user sees (npm 11 lists a "prepare" script of a dependency as an install script)
      const warnings = outcome.stderr.split('\n').filter((line) => line.startsWith('npm warn'));
      if (warnings.length > 0) t.comment(`npm install warned:\n${warnings.join('\n')}`);
      const list = await run('npm', ['ls', 'fastify-task-events', 'fastify', 'pg', '--depth', '0', '--json'], { cwd: appDir, timeout: 60_000 });
      exited(t, list, 0, 'npm ls');
      const dependencies = (JSON.parse(list.stdout) as { dependencies?: Record<string, { version: string }> }).dependencies ?? {};
      t.match(dependencies['fastify']?.version, /^5\./, 'fastify 5');
      t.match(dependencies['pg']?.version, /^8\./, 'pg 8');
      t.ok(dependencies['fastify-task-events'], 'fastify-task-events');
      installed = true;
    }));

await t.test('a fresh database holds the host\'s tables, and a role with rights on them and none on task_events',
  { skip: noDatabase }, (t) =>
    timed('database', async () => {
      await psql(ownerUrl('postgres'), `CREATE DATABASE ${database}`);
      databaseCreated = true;
      await psql(ownerUrl('postgres'), `CREATE ROLE ${role} LOGIN NOSUPERUSER PASSWORD '${rolePassword}'`);
      roleCreated = true;
      await psql(ownerUrl(), HOST_SCHEMA,
        `GRANT USAGE ON SCHEMA crm TO ${role}`,
        `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA crm TO ${role}`,
        `GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA crm TO ${role}`);
      const tables = await psql(ownerUrl(), `SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = 'crm'`);
      t.equal(tables, 'item_assignees,item_owners,work_items', 'the host\'s three tables in schema crm');
      t.equal(await psql(ownerUrl(), `SELECT rolsuper FROM pg_roles WHERE rolname = '${role}'`), 'f', 'the app role is no superuser');
    }));

/** Runs the installed CLI the README's way, in the app, as the owner of the fresh database. */
function cli(args: string[], env: Record<string, string> = { DATABASE_URL: ownerUrl() }): Promise<Outcome> {
  return run('npx', ['fastify-task-events', ...args], { cwd: appDir, env: userEnvironment(env), timeout: 60_000 });
}

await t.test('the installed CLI migrates, attaches to the host\'s tables, grants the role and reports the status',
  { skip: noDatabase || (installed ? false : 'not installed') }, (t) =>
    timed('cli', async () => {
      const help = await cli(['--help'], {});
      exited(t, help, 0, '--help');
      t.match(help.stdout, /^Usage: fastify-task-events <command>/, 'it prints the usage');

      if (!exited(t, await cli(['migrate']), 0, 'migrate')) return;
      const usage = `SELECT has_schema_privilege('${role}', 'task_events', 'USAGE')`;
      t.equal(await psql(ownerUrl(), usage), 'f', 'before grant, the role has nothing on task_events');
      if (!exited(t, await cli(ATTACH), 0, 'attach')) return;

      const missing = await cli(['attach', '--tasks', 'crm.nope']);
      exited(t, missing, 1, 'attach --tasks crm.nope');
      t.match(missing.stderr, /crm\.nope/, 'its error names the table');
      t.notMatch(missing.stderr, /^\s+at /m, 'no stack trace');

      if (!exited(t, await cli(['grant', '--role', role]), 0, 'grant')) return;
      t.equal(await psql(ownerUrl(), usage), 't', 'after grant, it has USAGE on task_events');

      const status = await cli(['status']);
      if (!exited(t, status, 0, 'status')) return;
      t.match(status.stdout, /crm\.work_items/, 'status lists crm.work_items');
      cliDone = true;
    }));

interface TaskEvent {
  task_id: number;
  object_class_id: number;
  event: string;
  timestamp: string;
}

await t.test('the app, as the role, streams exactly tenant 1\'s events of psql\'s writes, and closes with 1001 on SIGTERM',
  { skip: noDatabase || (cliDone ? false : 'the CLI step failed') }, (t) =>
    timed('app', async () => {
      await writeFile(join(appDir, 'app.js'), APP_JS);
      const server = new URL(serverUrl ?? '');
      const app = spawn(process.execPath, ['app.js'], {
        cwd: appDir,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: userEnvironment({
          CRM_DB_HOST: server.hostname,
          CRM_DB_PORT: server.port || '5432',
          CRM_DB_USER: role,
          CRM_DB_PASSWORD: rolePassword,
          CRM_DB_NAME: database,
        }),
      });
      running.add(app);
      const output = { stdout: '', stderr: '' };
      const state = new Conditions();
      let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
      app.stdout.setEncoding('utf8').on('data', (chunk: string) => { output.stdout += chunk; state.check(); });
      app.stderr.setEncoding('utf8').on('data', (chunk: string) => { output.stderr += chunk; state.check(); });
      app.on('exit', (code, signal) => { exit = { code, signal }; running.delete(app); state.check(); });
      t.teardown(() => killGroup(app));
      const diagnostics = (): string => tail(output, 25);

      let port: number | undefined;
      const listening = (): boolean => {
        for (const line of output.stdout.split('\n')) {
          const parsed = parseJson(line);
          if (typeof parsed?.['listening'] === 'number') port = parsed['listening'];
        }
        return port !== undefined || exit !== undefined;
      };
      await state.waitFor(listening, 'the app to listen', 20_000, diagnostics);
      if (port === undefined) {
        t.fail('the app exited before listening', { output: diagnostics(), exit });
        return;
      }

      const response = await fetch(`http://127.0.0.1:${port}/token?environment=1`);
      t.equal(response.status, 200, 'GET /token');
      const { uuid } = await response.json() as { uuid: string };
      t.match(uuid, /^[0-9a-f-]{36}$/, 'a UUID');

      const client = new WebSocket(`ws://127.0.0.1:${port}/ws/events/tasks/?uuid=${uuid}`);
      const received: TaskEvent[] = [];
      const frames: string[] = [];
      let closeCode: number | undefined;
      client.on('message', (data) => {
        const text = String(data);
        frames.push(text);
        const parsed: unknown = JSON.parse(text);
        if (Array.isArray(parsed)) received.push(...(parsed as TaskEvent[]));
        state.check();
      });
      client.on('close', (code) => { closeCode = code; state.check(); });
      t.teardown(() => client.terminate());
      client.on('error', (error) => t.comment(`client error: ${error.message}`));
      await new Promise<void>((resolve, reject) => {
        client.once('open', () => resolve());
        client.once('error', reject);
      });

      const taskId = Number(await psql(ownerUrl(), `INSERT INTO crm.work_items (tenant_id, kind_id, name, state) VALUES (1, 7, 'first', 'open') RETURNING item_id`));
      await psql(ownerUrl(),
        `UPDATE crm.work_items SET state = 'done' WHERE item_id = ${taskId}`,
        `UPDATE crm.work_items SET modified_at = now() + interval '1 minute' WHERE item_id = ${taskId}`,
        `UPDATE crm.work_items SET name = 'renamed' WHERE item_id = ${taskId}`,
        `INSERT INTO crm.item_owners (item_id, user_id) VALUES (${taskId}, 1)`,
        `INSERT INTO crm.item_assignees (item_id, user_id) VALUES (${taskId}, 2)`,
        `DELETE FROM crm.item_assignees WHERE item_id = ${taskId}`,
        `INSERT INTO crm.work_items (tenant_id, kind_id, name, state) VALUES (2, 7, 'other tenant', 'open')`,
        `DELETE FROM crm.work_items WHERE item_id = ${taskId}`);

      const seen = (): string => `received ${JSON.stringify(received)}; app:\n${diagnostics()}`;
      await state.waitFor(() => received.length >= EXPECTED.length, `${EXPECTED.length} events`, 10_000, seen)
        .catch((error: Error) => t.fail(error.message));
      // then nothing more: not the ignored column's update, not tenant 2's task
      await new Promise((resolve) => setTimeout(resolve, QUIET_AFTER));
      t.same(received.map((event) => event.event), EXPECTED, 'exactly the expected events, in order');
      t.same(received.filter((event) => event.task_id !== taskId || event.object_class_id !== 7), [],
        `every event is of task ${taskId}, object class 7`);
      t.same(received.filter((event) => !TIMESTAMP.test(event.timestamp)), [], 'every timestamp is ISO 8601 with +00:00');
      const times = received.map((event) => Date.parse(event.timestamp));
      t.ok(times.every((time, index) => index === 0 || time >= (times[index - 1] ?? time)), 'timestamps ascend');
      t.same(frames.filter((frame) => frame === '[]' || !frame.startsWith('[')), [], 'every frame is a non-empty array');

      app.kill('SIGTERM');
      await state.waitFor(() => exit !== undefined && closeCode !== undefined, 'the app to exit and the client to close', 15_000,
        () => `exit ${JSON.stringify(exit)}, close ${closeCode}; app:\n${diagnostics()}`)
        .catch((error: Error) => t.fail(error.message));
      t.same(exit, { code: 0, signal: null }, 'the app exits 0 on SIGTERM');
      t.equal(closeCode, 1001, 'the client gets 1001');

      const warnings = `${output.stdout}\n${output.stderr}`.split('\n')
        .filter((line) => { const level = parseJson(line)?.['level']; return typeof level === 'number' && level >= PINO_WARN; });
      t.same(warnings, [], 'no log line at warn or above');
      if (output.stderr.trim()) t.comment(`app stderr:\n${output.stderr.trim()}`);
    }));

/** A line's JSON object, or undefined. */
function parseJson(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

await t.test('TypeScript: the plugin, its decorator and exports type-check, and a bad option fails to',
  { skip: installed ? false : 'not installed' }, (t) =>
    timed('tsc', async () => {
      await writeFile(join(appDir, 'tsconfig.json'), `${JSON.stringify(TSCONFIG, null, 2)}\n`);
      await writeFile(join(appDir, 'typed.ts'), TYPED_TS);
      exited(t, await run('npx', ['tsc', '-p', '.'], { cwd: appDir, timeout: 120_000 }), 0, 'tsc -p . (typed.ts)');

      await writeFile(join(appDir, 'tsconfig.bad.json'), `${JSON.stringify({ ...TSCONFIG, files: ['bad.ts'] }, null, 2)}\n`);
      await writeFile(join(appDir, 'bad.ts'), BAD_TS);
      const bad = await run('npx', ['tsc', '-p', 'tsconfig.bad.json'], { cwd: appDir, timeout: 120_000 });
      t.not(bad.code, 0, `tsc of bad.ts fails (exit ${bad.code})`);
      // tsc's overload message does not repeat the property's name; its position names it
      t.match(bad.stdout, new RegExp(`^bad\\.ts\\(${BAD_LINE},\\d+\\): error TS\\d+`, 'm'), `the error is on the messageTime line (${BAD_LINE})`);
      t.match(bad.stdout, /Type 'string' is not assignable to type 'number'/, 'a string where messageTime takes a number');
      t.notMatch(bad.stdout, /^(?!bad\.ts)\S+\.ts\(\d+,\d+\): error/m, 'no error outside bad.ts');
    }));

await t.test('CommonJS: require(\'fastify-task-events\') gives the plugin and migrate',
  { skip: installed ? false : 'not installed' }, (t) =>
    timed('cjs', async () => {
      await writeFile(join(appDir, 'check.cjs'), CHECK_CJS);
      const outcome = await run(process.execPath, ['check.cjs'], { cwd: appDir, timeout: 30_000 });
      exited(t, outcome, 0, 'node check.cjs');
      t.equal(outcome.stdout.trim(), 'ok', 'default and migrate are functions');
      if (outcome.stderr.trim()) t.comment(`stderr: ${outcome.stderr.trim()}`);
    }));
