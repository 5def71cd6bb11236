// ready() refuses a database the plugin cannot serve from, with the fix in the error; the
// plugin's log says what happens, once, and an error in it is its message, code and cause.
import Fastify, { type FastifyInstance } from 'fastify';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import pg from 'pg';
import t, { type Test } from 'tap';
import { createAppRole, terminateBackends } from '../harness/backends.js';
import { TestClient } from '../harness/client.js';
import { createTestDatabase } from '../harness/db.js';
import taskEvents from '../lib/index.js';
import { withApplicationName } from './helpers/backends.js';
import { nextEvent } from './helpers/server.js';

/** A Fastify app whose log lines (parsed) are kept. */
function appWithLog(): { app: FastifyInstance; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return { app: Fastify({ logger: { level: 'debug', stream } }), lines };
}

async function readyError(t: Test, url: string): Promise<Error & { code?: string }> {
  const app = Fastify({ logger: false });
  t.teardown(() => app.close());
  await app.register(taskEvents, { connectionString: url, rateLimit: false });
  return app.ready().then(() => { throw new Error('ready() succeeded'); }, (error: Error & { code?: string }) => error);
}

t.test('a database without our migrations fails ready() naming `migrate`', async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const error = await readyError(t, db.url);
  t.equal(error.code, 'FST_TASK_EVENTS_NOT_MIGRATED');
  t.match(error.message, /npx fastify-task-events migrate/);
});

t.test('a role without the runtime privileges fails ready() naming `grant --role`', async (t) => {
  const role = await createAppRole(t);
  const db = await createTestDatabase(t);
  const error = await readyError(t, role.url(db));
  t.equal(error.code, 'FST_TASK_EVENTS_PRIVILEGES');
  t.match(error.message, new RegExp(`role ${role.name} lacks USAGE on task_events.*npx fastify-task-events grant --role ${role.name}`));

  await role.grant(db); // and with exactly what grant gives, it starts
  const app = Fastify({ logger: false });
  t.teardown(() => app.close());
  await app.register(taskEvents, { connectionString: role.url(db), rateLimit: false });
  await app.ready();
  t.pass('ready with the granted privileges');
});

t.test('nothing attached: ready() works and logs one warning saying what to run', async (t) => {
  const db = await createTestDatabase(t, { schema: false });
  const { app, lines } = appWithLog();
  t.teardown(() => app.close());
  await app.register(taskEvents, { connectionString: db.appUrl as string, rateLimit: false });
  await app.ready();
  const warnings = lines.filter((line) => Number(line.level) >= 40);
  t.equal(warnings.length, 1);
  t.match(warnings[0]?.msg, /no table is attached.*fastify-task-events attach/);
});

t.test('the log: listening and caught up at info, sockets at debug, a lost database at warn without the client object', async (t) => {
  const db = await createTestDatabase(t);
  const applicationName = `te_log_${randomBytes(4).toString('hex')}`;
  const { app, lines } = appWithLog();
  t.teardown(() => app.close());
  await app.register(taskEvents, { connectionString: withApplicationName(db.appUrl as string, applicationName), rateLimit: false, messageTime: 50 });
  const caughtUp = nextEvent(app.taskEvents.events, 'caught-up');
  await app.listen({ port: 0, host: '127.0.0.1' });
  await caughtUp;
  const infos = lines.filter((line) => line.level === 30).map((line) => line.msg);
  t.ok(infos.includes('task events: listening for task changes'), 'listening, at info');
  t.ok(infos.includes('task events: caught up with the outbox'), 'caught up, at info');
  t.equal(lines.filter((line) => Number(line.level) >= 40).length, 0, 'no warning on a healthy start');

  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const token = await app.taskEvents.issueToken({ environmentId: 1, userId: 1 });
  const client = await TestClient.connect(t, `ws://127.0.0.1:${port}/ws/events/tasks/?uuid=${token}`);
  client.socket.close();
  await client.waitForClose();
  await t.resolves(waitForLine(lines, (line) => line.msg === 'task events: socket closed'));
  const opened = lines.find((line) => line.msg === 'task events: socket opened');
  t.equal(opened?.level, 20, 'socket opened, at debug');

  // Every backend of the plugin terminated: the idle pool clients fail and the LISTEN connection is lost.
  const restored = nextEvent(app.taskEvents.events, 'connected');
  await terminateBackends(db, { applicationName });
  await restored;
  await waitForLine(lines, (line) => line.msg === 'task events: LISTEN connection restored');
  t.ok(lines.some((line) => line.level === 40), 'the loss is a warning');
  const withErrors = lines.filter((line) => line.error !== undefined);
  for (const warning of withErrors) {
    const text = JSON.stringify(warning);
    t.ok(text.length < 1500, `a warning is short (${text.length} bytes)`);
    t.notMatch(text, /"client"|_connecting|connectionParameters/, 'no client object in it');
    t.match(warning.error, { message: String });
  }
  t.ok(withErrors.some((warning) => JSON.stringify(warning).includes('57P01')), 'the cause\'s code (57P01) is kept');
});

t.test('the LISTEN connection uses the pool\'s own settings: a pool of separate fields against a server that asks for a password', async (t) => {
  // The embedded PostgreSQL asks every TCP connection for a password (the suite's service may not).
  const { startEmbeddedPostgres } = await import('../example/embedded.js');
  const embedded = await startEmbeddedPostgres({ persistent: false });
  const server = new URL(embedded.url);
  const admin = new pg.Pool({ connectionString: embedded.url });
  const pool = new pg.Pool({ host: server.hostname, port: Number(server.port), user: 'crm_app', password: 'app-secret', database: 'postgres' });
  // as a host app would: an idle client's error is logged, not fatal
  for (const each of [admin, pool]) each.on('error', () => {});
  const app = Fastify({ logger: false });
  // one teardown, in order: the app, its pool, ours, then the server
  t.teardown(async () => {
    await app.close().catch((error) => t.comment(`app.close: ${error}`));
    await pool.end().catch(() => {});
    await admin.end().catch(() => {});
    await embedded.stop();
  });
  const { migrate } = await import('../lib/migrate.js');
  const { grant } = await import('../lib/privileges.js');
  const { applyReferenceSchema } = await import('../harness/db.js');
  await migrate(admin);
  await applyReferenceSchema(admin);
  await admin.query(`CREATE ROLE crm_app LOGIN PASSWORD 'app-secret'`);
  await grant(admin, 'crm_app');
  await t.rejects(new pg.Pool({ host: server.hostname, port: Number(server.port), user: 'crm_app', password: 'wrong', database: 'postgres' }).query('SELECT 1'),
    /password authentication failed/, 'the server asks for the password');

  await app.register(taskEvents, { pool, rateLimit: false, messageTime: 50 });
  const warnings: Error[] = [];
  app.taskEvents.events.on('warning', (error: Error) => warnings.push(error));
  const connected = nextEvent(app.taskEvents.events, 'connected');
  await app.listen({ port: 0, host: '127.0.0.1' });
  await connected;
  t.strictSame(warnings.map((error) => error.message), [], 'LISTEN connected at the first attempt');

  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const token = await app.taskEvents.issueToken({ environmentId: 1, userId: 1 });
  const client = await TestClient.connect(t, `ws://127.0.0.1:${port}/ws/events/tasks/?uuid=${token}`);
  await admin.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'through a password')`);
  const [event] = await client.waitForEvents(1);
  t.equal(event?.event, 'task_created');
});

function waitForLine(lines: Array<Record<string, unknown>>, accept: (line: Record<string, unknown>) => boolean, timeout = 10_000): Promise<void> {
  const deadline = Date.now() + timeout;
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (lines.some(accept)) return resolve();
      if (Date.now() > deadline) return reject(new Error('timed out waiting for a log line'));
      setTimeout(check, 20);
    };
    check();
  });
}
