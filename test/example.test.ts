// The example server (`npm start`): its config, its REST API, restarts, and events end to end.
import type { FastifyInstance } from 'fastify';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import t, { type Test } from 'tap';
import { buildApp } from '../example/app.js';
import { ConfigError, loadConfig, type TaskEventsSettings } from '../example/config.js';
import { createTestDatabase } from '../harness/db.js';
import { applyPrereleaseMigrations } from './helpers/prerelease.js';
import { nextEvent, TestClient } from './helpers/server.js';

const ACME = { authorization: 'Token demo-key-1' };
const GLOBEX = { authorization: 'Token demo-key-2' };
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const REPO = new URL('..', import.meta.url);

async function startExample(t: Test, databaseUrl: string, taskEvents: TaskEventsSettings = { messageTime: 100, rateLimit: false }): Promise<FastifyInstance> {
  const app = await buildApp({ databaseUrl, logLevel: 'silent', taskEvents });
  t.teardown(() => app.close());
  return app;
}

t.test('config', async (t) => {
  t.test('defaults: embedded PostgreSQL, 127.0.0.1:3000, the plugin\'s own defaults', async (t) => {
    t.same(loadConfig({}), { databaseUrl: undefined, embeddedPostgresPort: 5433, host: '127.0.0.1', port: 3000, logLevel: 'info', taskEvents: {} });
  });

  t.test('every variable is read; an empty one counts as unset', async (t) => {
    const config = loadConfig({
      DATABASE_URL: 'postgres://app:secret@db:5432/app', HOST: '0.0.0.0', PORT: '8080', LOG_LEVEL: 'warn', EMBEDDED_PG_PORT: '',
      TASK_EVENTS_MESSAGE_TIME_MS: '250', TASK_EVENTS_MESSAGE_LIMIT: '10', TASK_EVENTS_TOKEN_TTL_MS: '30000',
      TASK_EVENTS_RATE_LIMIT_MAX: '5', TASK_EVENTS_RATE_LIMIT_WINDOW_MS: '1000',
      TASK_EVENTS_HEARTBEAT_MS: '15000', TASK_EVENTS_MAX_BUFFERED_BYTES: '1048576', TASK_EVENTS_OUTBOX_RETENTION_MS: '3600000',
    });
    t.same(config, {
      databaseUrl: 'postgres://app:secret@db:5432/app', embeddedPostgresPort: 5433, host: '0.0.0.0', port: 8080, logLevel: 'warn',
      taskEvents: {
        messageTime: 250, messageLimit: 10, tokenTtl: 30000, rateLimit: { max: 5, timeWindow: 1000 },
        heartbeatInterval: 15000, maxBufferedBytes: 1048576, outboxRetention: 3600000,
      },
    });
  });

  t.test('the security variables: allowed origins, requireOrigin, connection caps (0: no cap)', async (t) => {
    t.same(loadConfig({
      TASK_EVENTS_ALLOWED_ORIGINS: 'https://app.example.com, http://localhost:8080', TASK_EVENTS_REQUIRE_ORIGIN: 'true',
      TASK_EVENTS_MAX_CONNECTIONS_PER_USER: '5', TASK_EVENTS_MAX_CONNECTIONS_PER_IP: '0', TASK_EVENTS_MAX_CONNECTIONS: '2000',
    }).taskEvents, {
      allowedOrigins: ['https://app.example.com', 'http://localhost:8080'], requireOrigin: true,
      maxConnectionsPerUser: 5, maxConnectionsPerIp: 0, maxConnections: 2000,
    });
    t.equal(loadConfig({ TASK_EVENTS_REQUIRE_ORIGIN: '0' }).taskEvents.requireOrigin, false);
  });

  t.test('TASK_EVENTS_RATE_LIMIT_MAX=0 turns the limit off; one rate variable alone keeps the other default', async (t) => {
    t.equal(loadConfig({ TASK_EVENTS_RATE_LIMIT_MAX: '0' }).taskEvents.rateLimit, false);
    t.same(loadConfig({ TASK_EVENTS_RATE_LIMIT_WINDOW_MS: '5000' }).taskEvents.rateLimit, { timeWindow: 5000 });
    t.same(loadConfig({ TASK_EVENTS_RATE_LIMIT_MAX: '5', TASK_EVENTS_RATE_LIMIT_WINDOW_MS: '' }).taskEvents.rateLimit, { max: 5 });
  });

  t.test('a malformed value names the variable and what it allows', async (t) => {
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ TASK_EVENTS_MESSAGE_LIMIT: 'abc' }, /^TASK_EVENTS_MESSAGE_LIMIT must be a positive integer up to 2147483647, got "abc"$/],
      [{ TASK_EVENTS_MESSAGE_LIMIT: '0' }, /^TASK_EVENTS_MESSAGE_LIMIT must be a positive integer up to 2147483647, got "0"$/],
      [{ TASK_EVENTS_MESSAGE_TIME_MS: '1.5' }, /^TASK_EVENTS_MESSAGE_TIME_MS must be a positive integer up to 2147483647, got "1.5"$/],
      [{ TASK_EVENTS_MESSAGE_TIME_MS: '3000000000' }, /^TASK_EVENTS_MESSAGE_TIME_MS must be a positive integer up to 2147483647, got "3000000000"$/],
      [{ TASK_EVENTS_TOKEN_TTL_MS: '-1' }, /^TASK_EVENTS_TOKEN_TTL_MS must be a positive integer/],
      [{ TASK_EVENTS_HEARTBEAT_MS: '0' }, /^TASK_EVENTS_HEARTBEAT_MS must be a positive integer/],
      [{ TASK_EVENTS_MAX_BUFFERED_BYTES: '4MB' }, /^TASK_EVENTS_MAX_BUFFERED_BYTES must be a positive integer up to 2147483647, got "4MB"$/],
      [{ TASK_EVENTS_OUTBOX_RETENTION_MS: '1d' }, /^TASK_EVENTS_OUTBOX_RETENTION_MS must be a positive integer/],
      [{ TASK_EVENTS_RATE_LIMIT_MAX: 'ten' }, /^TASK_EVENTS_RATE_LIMIT_MAX must be a positive integer up to 2147483647, got "ten"$/],
      [{ TASK_EVENTS_RATE_LIMIT_MAX: '0', TASK_EVENTS_RATE_LIMIT_WINDOW_MS: 'soon' }, /^TASK_EVENTS_RATE_LIMIT_WINDOW_MS must be a positive integer/],
      [{ TASK_EVENTS_RATE_LIMIT_WINDOW_MS: '1e3' }, /^TASK_EVENTS_RATE_LIMIT_WINDOW_MS must be a positive integer/],
      [{ TASK_EVENTS_ALLOWED_ORIGINS: 'https://app.example.com,app.example.com' }, /^TASK_EVENTS_ALLOWED_ORIGINS must be a comma-separated list of origins like https:\/\/app.example.com \(scheme:\/\/host\[:port\], no path\), got "https:\/\/app.example.com,app.example.com"$/],
      [{ TASK_EVENTS_ALLOWED_ORIGINS: 'https://app.example.com/' }, /^TASK_EVENTS_ALLOWED_ORIGINS must be a comma-separated list of origins/],
      [{ TASK_EVENTS_ALLOWED_ORIGINS: 'https://*.example.com' }, /^TASK_EVENTS_ALLOWED_ORIGINS must be a comma-separated list of origins/],
      [{ TASK_EVENTS_REQUIRE_ORIGIN: 'yes' }, /^TASK_EVENTS_REQUIRE_ORIGIN must be true, false, 1 or 0, got "yes"$/],
      [{ TASK_EVENTS_MAX_CONNECTIONS_PER_USER: '-1' }, /^TASK_EVENTS_MAX_CONNECTIONS_PER_USER must be an integer from 0 \(no cap\) to 2147483647, got "-1"$/],
      [{ TASK_EVENTS_MAX_CONNECTIONS_PER_IP: 'many' }, /^TASK_EVENTS_MAX_CONNECTIONS_PER_IP must be an integer from 0 \(no cap\)/],
      [{ TASK_EVENTS_MAX_CONNECTIONS: '1e4' }, /^TASK_EVENTS_MAX_CONNECTIONS must be an integer from 0 \(no cap\)/],
      [{ PORT: '70000' }, /^PORT must be a port number from 0 to 65535, got '70000'$/],
      [{ EMBEDDED_PG_PORT: 'x' }, /^EMBEDDED_PG_PORT must be a port number/],
      [{ LOG_LEVEL: 'loud' }, /^LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got 'loud'$/],
      [{ HOST: 'local host' }, /^HOST must be a host name or IP address/],
      [{ DATABASE_URL: 'mysql://root:hunter2@db/app' }, /^DATABASE_URL must be a postgres:\/\/user:password@host:port\/database URL/],
    ];
    for (const [env, message] of cases) {
      t.throws(() => loadConfig(env), { name: 'ConfigError', message }, JSON.stringify(env));
    }
    const error = (() => {
      try {
        loadConfig({ DATABASE_URL: 'postgres//app:hunter2@db/app' });
      } catch (error) {
        return error;
      }
    })();
    t.ok(error instanceof ConfigError && !error.message.includes('hunter2'), 'DATABASE_URL is not repeated: it may hold a password');
  });

  t.test('npm start stops at once on a malformed value, naming it', async (t) => {
    const server = spawn(process.execPath, ['--import', 'tsx', 'example/server.ts'], {
      cwd: REPO, env: { ...process.env, DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none', TASK_EVENTS_MESSAGE_LIMIT: 'abc' },
    });
    let stderr = '';
    server.stderr.on('data', (chunk) => (stderr += chunk));
    const [code] = await once(server, 'exit');
    t.equal(code, 1);
    t.match(stderr, 'configuration error: TASK_EVENTS_MESSAGE_LIMIT must be a positive integer up to 2147483647, got "abc"');
  });
});

t.test('the REST API', async (t) => {
  const db = await createTestDatabase(t, { schema: false });
  const app = await startExample(t, db.url);
  const call = async (method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE', url: string, options: { headers?: Record<string, string>; body?: object } = {}) => {
    const response = await app.inject({ method, url, headers: options.headers ?? ACME, ...(options.body && { payload: options.body }) });
    return { status: response.statusCode, body: response.body ? response.json() : undefined, headers: response.headers };
  };
  const created = await call('POST', '/api/tasks/', { body: { object_class_id: 1, name: 'acme task', values: { priority: 1 } } });
  const acmeTask = created.body.id as number;
  const globexTask = (await call('POST', '/api/tasks/', { headers: GLOBEX, body: { object_class_id: 4, name: 'globex task' } })).body.id as number;

  t.test('without a valid key every route answers 401', async (t) => {
    const routes: Array<['GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE', string]> = [
      ['GET', '/api/users/ws-auth/'], ['POST', '/api/tasks/'], ['GET', '/api/tasks/'], ['GET', `/api/tasks/${acmeTask}/`],
      ['PATCH', `/api/tasks/${acmeTask}/`], ['DELETE', `/api/tasks/${acmeTask}/`],
      ['PUT', `/api/tasks/${acmeTask}/owners/1/`], ['DELETE', `/api/tasks/${acmeTask}/assignees/1/`],
      ['GET', '/api/object-classes/'], ['GET', '/api/users/'],
    ];
    for (const headers of [{} as Record<string, string>, { authorization: 'Token wrong-key' }, { authorization: 'Bearer demo-key-1' }, { authorization: 'Token' }]) {
      for (const [method, url] of routes) {
        const response = await call(method, url, { headers, body: method === 'POST' || method === 'PATCH' ? { name: 'x' } : undefined });
        t.equal(response.status, 401, `${method} ${url} with ${JSON.stringify(headers)}`);
        t.match(response.body, { statusCode: 401, error: 'Unauthorized', message: /Authorization: Token <api key>/ });
        t.equal(response.headers['www-authenticate'], 'Token');
      }
    }
    t.equal((await call('GET', `/api/tasks/${acmeTask}/`)).status, 200, 'and nothing was changed');
  });

  t.test('GET /api/users/ws-auth/ returns a one-time uuid for the key\'s user', async (t) => {
    const response = await call('GET', '/api/users/ws-auth/', { headers: GLOBEX });
    t.equal(response.status, 200);
    t.same(Object.keys(response.body), ['uuid']);
    t.match(response.body.uuid, UUID_V4);
    const { rows } = await db.pool.query('SELECT environment_id, user_id FROM task_events.tokens ORDER BY created_at DESC LIMIT 1');
    t.same(rows.map((row) => [Number(row.environment_id), Number(row.user_id)]), [[2, 2]]);
  });

  t.test('POST /api/tasks/ creates a task in the key\'s environment', async (t) => {
    t.equal(created.status, 201);
    t.match(created.body, { object_class_id: 1, name: 'acme task', status: 'open', values: { priority: 1 }, owners: [], assignees: [] });
    const { rows } = await db.pool.query('SELECT environment_id FROM tasks WHERE id = $1', [acmeTask]);
    t.equal(Number(rows[0].environment_id), 1);
    const bad: Array<[object, string]> = [
      [{ name: 'x' }, 'body/object_class_id is required'],
      [{ object_class_id: 1 }, 'body/name is required'],
      [{ object_class_id: 'one', name: 'x' }, 'body/object_class_id must be integer'],
      [{ object_class_id: 1, name: '' }, 'body/name must NOT have fewer than 1 characters'],
      [{ object_class_id: 1, name: 'x', values: [1] }, 'body/values must be object'],
      [{ object_class_id: 1, name: 'x', environment_id: 2 }, 'body/environment_id is not allowed'],
    ];
    for (const [body, message] of bad) {
      t.same((await call('POST', '/api/tasks/', { body })).body, { statusCode: 400, error: 'Bad Request', message }, message);
    }
    const foreign = await call('POST', '/api/tasks/', { body: { object_class_id: 4, name: 'x' } });
    t.same([foreign.status, foreign.body.message], [404, 'Object class 4 not found'], 'another tenant\'s object class');
  });

  t.test('GET /api/tasks/ lists the environment\'s tasks only', async (t) => {
    const all = await call('GET', '/api/tasks/');
    t.equal(all.status, 200);
    t.ok(all.body.tasks.some((task: { id: number }) => task.id === acmeTask));
    t.notOk(all.body.tasks.some((task: { id: number }) => task.id === globexTask), 'nothing of Globex');
    t.same((await call('GET', '/api/tasks/?object_class_id=2')).body, { tasks: [] });
    t.same((await call('GET', '/api/tasks/?limit=0')).body.message, 'querystring/limit must be >= 1');
    t.same((await call('GET', '/api/tasks/?environment_id=2')).body.message, 'querystring/environment_id is not allowed');
  });

  t.test('GET /api/tasks/:id/ reads one task; another tenant\'s is not found', async (t) => {
    const response = await call('GET', `/api/tasks/${acmeTask}/`);
    t.equal(response.status, 200);
    t.same(response.body, created.body);
    const foreign = await call('GET', `/api/tasks/${globexTask}/`);
    t.same([foreign.status, foreign.body.message], [404, `Task ${globexTask} not found`]);
    t.same((await call('GET', '/api/tasks/abc/')).body, { statusCode: 400, error: 'Bad Request', message: 'params/id must be integer' });
  });

  t.test('PATCH /api/tasks/:id/ updates the given fields and updated_at', async (t) => {
    const response = await call('PATCH', `/api/tasks/${acmeTask}/`, { body: { status: 'done', values: { priority: 2 }, object_class_id: 2 } });
    t.equal(response.status, 200);
    t.match(response.body, { id: acmeTask, name: 'acme task', status: 'done', values: { priority: 2 }, object_class_id: 2 });
    t.ok(Date.parse(response.body.updated_at) > Date.parse(response.body.created_at), 'updated_at = now()');
    t.equal((await call('PATCH', `/api/tasks/${acmeTask}/`, { body: {} })).body.message, 'body must set at least one of: object_class_id, name, status, values');
    t.equal((await call('PATCH', `/api/tasks/${acmeTask}/`, { body: { status: 7, owner: 1 } })).body.message, 'body/owner is not allowed');
    const foreignClass = await call('PATCH', `/api/tasks/${acmeTask}/`, { body: { object_class_id: 4 } });
    t.same([foreignClass.status, foreignClass.body.message], [404, 'Object class 4 not found']);
    const foreignTask = await call('PATCH', `/api/tasks/${globexTask}/`, { body: { name: 'hijacked' } });
    t.same([foreignTask.status, foreignTask.body.message], [404, `Task ${globexTask} not found`]);
    const { rows } = await db.pool.query('SELECT name, object_class_id FROM tasks WHERE id IN ($1, $2) ORDER BY id', [acmeTask, globexTask]);
    t.same(rows.map((row) => [row.name, Number(row.object_class_id)]), [['acme task', 2], ['globex task', 4]], 'nothing changed by the 404s');
  });

  for (const relation of ['owners', 'assignees'] as const) {
    t.test(`PUT and DELETE /api/tasks/:id/${relation}/:userId/ add and remove, idempotently`, async (t) => {
      const url = `/api/tasks/${acmeTask}/${relation}/1/`;
      t.equal((await call('PUT', url)).status, 204);
      t.equal((await call('PUT', url)).status, 204, 'adding twice');
      t.same((await call('GET', `/api/tasks/${acmeTask}/`)).body[relation], [1]);
      t.equal((await call('DELETE', url)).status, 204);
      t.equal((await call('DELETE', url)).status, 204, 'removing twice');
      t.same((await call('GET', `/api/tasks/${acmeTask}/`)).body[relation], []);
      const foreignUser = await call('PUT', `/api/tasks/${acmeTask}/${relation}/2/`);
      t.same([foreignUser.status, foreignUser.body.message], [404, 'User 2 not found'], 'another tenant\'s user');
      for (const method of ['PUT', 'DELETE'] as const) {
        const foreignTask = await call(method, `/api/tasks/${globexTask}/${relation}/1/`);
        t.same([foreignTask.status, foreignTask.body.message], [404, `Task ${globexTask} not found`], `${method} on another tenant's task`);
      }
      t.equal((await call('PUT', `/api/tasks/${acmeTask}/${relation}/me/`)).body.message, 'params/userId must be integer');
    });
  }

  t.test('DELETE /api/tasks/:id/ deletes; another tenant\'s task is not found and stays', async (t) => {
    const foreign = await call('DELETE', `/api/tasks/${globexTask}/`);
    t.same([foreign.status, foreign.body.message], [404, `Task ${globexTask} not found`]);
    t.equal((await db.pool.query('SELECT 1 FROM tasks WHERE id = $1', [globexTask])).rowCount, 1);
    t.equal((await call('DELETE', `/api/tasks/${acmeTask}/`)).status, 204);
    t.equal((await call('DELETE', `/api/tasks/${acmeTask}/`)).status, 404, 'gone');
    t.equal((await call('DELETE', '/api/tasks/0/')).body.message, 'params/id must be >= 1');
  });
});

t.test('restarts keep the data; two instances may start at once on an empty database', async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const [first, second] = await Promise.all([buildApp({ databaseUrl: db.url, logLevel: 'silent', taskEvents: {} }), buildApp({ databaseUrl: db.url, logLevel: 'silent', taskEvents: {} })]);
  const created = await first.inject({ method: 'POST', url: '/api/tasks/', headers: ACME, payload: { object_class_id: 1, name: 'kept' } });
  await Promise.all([first.close(), second.close()]);

  const restarted = await startExample(t, db.url);
  const response = await restarted.inject({ method: 'GET', url: `/api/tasks/${created.json().id}/`, headers: ACME });
  t.equal(response.json().name, 'kept');
  const { rows } = await db.pool.query(`SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM object_classes) AS classes`);
  t.same(rows[0], { users: '2', classes: '4' }, 'the seed is not duplicated');
  const before = await db.pool.query('SELECT count(*) FROM task_events.outbox');
  await restarted.inject({ method: 'PATCH', url: `/api/tasks/${created.json().id}/`, headers: ACME, payload: { name: 'renamed' } });
  const after = await db.pool.query('SELECT count(*) FROM task_events.outbox');
  t.equal(Number(after.rows[0].count) - Number(before.rows[0].count), 1, 'attach() again did not double the triggers');
});

t.test('end to end: a token from the REST API, then the events of REST writes over WebSocket', async (t) => {
  const db = await createTestDatabase(t, { schema: false });
  const app = await startExample(t, db.url);
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  const rest = async (method: string, path: string, body?: object, headers = ACME): Promise<Response> => {
    const response = await fetch(`${base}${path}`, { method, headers: { ...headers, ...(body && { 'content-type': 'application/json' }) }, body: body && JSON.stringify(body) });
    t.ok(response.ok, `${method} ${path}: ${response.status}`);
    return response;
  };
  const { uuid } = (await (await rest('GET', '/api/users/ws-auth/')).json()) as { uuid: string };
  const client = await TestClient.connect(t, `${base.replace(/^http/, 'ws')}/ws/events/tasks/?uuid=${uuid}`);

  const task = (await (await rest('POST', '/api/tasks/', { object_class_id: 3, name: 'live' })).json()) as { id: number };
  await rest('POST', '/api/tasks/', { object_class_id: 4, name: 'not for Acme' }, GLOBEX);
  await rest('PATCH', `/api/tasks/${task.id}/`, { status: 'doing', name: 'live!' });
  await rest('PATCH', `/api/tasks/${task.id}/`, { values: {} }); // the same values: no event
  await rest('PUT', `/api/tasks/${task.id}/owners/1/`);
  await rest('PUT', `/api/tasks/${task.id}/assignees/1/`);
  await rest('DELETE', `/api/tasks/${task.id}/owners/1/`);
  await rest('DELETE', `/api/tasks/${task.id}/assignees/1/`);
  await rest('DELETE', `/api/tasks/${task.id}/`);

  await client.waitFor(() => client.events.some((event) => event.event === 'task_deleted'), 'task_deleted');
  t.same(client.events.map((event) => [event.task_id, event.object_class_id, event.event]), [
    [task.id, 3, 'task_created'],
    [task.id, 3, 'task_status_changed'],
    [task.id, 3, 'task_value_changed'],
    [task.id, 3, 'task_owner_added'],
    [task.id, 3, 'task_assignee_added'],
    [task.id, 3, 'task_owner_removed'],
    [task.id, 3, 'task_assignee_removed'],
    [task.id, 3, 'task_deleted'],
  ]);
  t.equal(client.closed, null, 'the connection stays open');
});

t.test('closing the app flushes buffered events, then closes every socket with 1001', async (t) => {
  const db = await createTestDatabase(t, { schema: false });
  const app = await startExample(t, db.url, { messageTime: 60_000, rateLimit: false });
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  const { uuid } = (await app.inject({ url: '/api/users/ws-auth/', headers: ACME })).json();
  const client = await TestClient.connect(t, `${base.replace(/^http/, 'ws')}/ws/events/tasks/?uuid=${uuid}`);
  const buffered = nextEvent(app.taskEvents.events, 'caught-up', (detail: { events: number }) => detail.events > 0);
  await app.inject({ method: 'POST', url: '/api/tasks/', headers: ACME, payload: { object_class_id: 1, name: 'buffered' } });
  await buffered;
  t.same(client.frames, [], 'nothing sent before messageTime');
  await app.close();
  t.same((await client.waitForClose()).code, 1001);
  t.same(client.events.map((event) => event.event), ['task_created'], 'the buffered event came first');
});

t.test('npm start\'s server: SIGTERM closes sockets with 1001 and exits 0', async (t) => {
  const db = await createTestDatabase(t, { schema: false });
  const server = spawn(process.execPath, ['--import', 'tsx', 'example/server.ts'], {
    cwd: REPO, env: { ...process.env, DATABASE_URL: db.url, PORT: '0', LOG_LEVEL: 'info', TASK_EVENTS_MESSAGE_TIME_MS: '100' },
  });
  const exited = once(server, 'exit');
  t.teardown(() => void server.kill('SIGKILL'));
  let stderr = '';
  server.stderr.on('data', (chunk) => (stderr += chunk));
  const lines = createInterface({ input: server.stdout });
  const ready = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start in 30 s; stderr: ${stderr}`)), 30_000);
    lines.on('line', (line) => {
      const entry = JSON.parse(line) as { url?: string; msg: string };
      if (entry.url && entry.msg.includes('try: curl')) {
        clearTimeout(timer);
        resolve(entry.url);
      }
    });
  });
  const base = await ready;
  const headers = { ...ACME, 'content-type': 'application/json' };
  const { uuid } = (await (await fetch(`${base}/api/users/ws-auth/`, { headers: ACME })).json()) as { uuid: string };
  const client = await TestClient.connect(t, `${base.replace(/^http/, 'ws')}/ws/events/tasks/?uuid=${uuid}`);
  await fetch(`${base}/api/tasks/`, { method: 'POST', headers, body: JSON.stringify({ object_class_id: 1, name: 'x' }) });
  await client.waitForEvents(1);

  server.kill('SIGTERM');
  t.same((await client.waitForClose()).code, 1001);
  const [code, signal] = await exited;
  t.same({ code, signal }, { code: 0, signal: null });
  t.equal(stderr, '', 'nothing on stderr');
});

t.test('a demo database with the 0.1 pre-release schema is re-created at start, and events flow', async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  await applyPrereleaseMigrations(db);
  const app = await startExample(t, db.url);
  const { rows } = await db.pool.query('SELECT max(version)::int AS version, count(*)::int AS files FROM task_events.schemaversion WHERE version > 0');
  t.strictSame(rows[0], { version: 6, files: 6 }, 'this version\'s migrations');
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const token = await app.taskEvents.issueToken({ environmentId: 1, userId: 1 });
  const ws = await TestClient.connect(t, `ws://127.0.0.1:${port}/ws/events/tasks/?uuid=${token}`);
  await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'after the re-creation')`);
  const [event] = await ws.waitForEvents(1);
  t.equal(event?.event, 'task_created');
});
