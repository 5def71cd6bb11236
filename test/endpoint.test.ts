import t from 'tap';
import { TestClient } from '../harness/client.js';
import { createTestDatabase, type TestDatabase } from '../harness/db.js';
import { ERRORS } from '../lib/index.js';
import { nextEvent, startServer } from './helpers/server.js';

/** True while the token has not been spent (only its hash is stored). */
async function unspent(db: TestDatabase, token: string): Promise<boolean> {
  const { rows } = await db.pool.query(`SELECT used_at FROM task_events.tokens WHERE token_hash = sha256(convert_to($1, 'UTF8'))`, [token]);
  return rows.length === 1 && rows[0].used_at === null;
}

const errorOf = (code: keyof typeof ERRORS) => ({ type: 'error', error_code: code, detail: ERRORS[code] });

t.test('the endpoint', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db);

  t.test('answers 101 with and without the trailing slash', async (t) => {
    for (const path of ['/ws/events/tasks/', '/ws/events/tasks']) {
      const client = await TestClient.connect(t, server.wsUrl(`${path}?uuid=${await server.token()}`));
      t.equal(client.socket.readyState, client.socket.OPEN, path);
      client.socket.close();
    }
  });

  t.test('a client receives the events of its environment, never another tenant\'s', async (t) => {
    const acme = await TestClient.connect(t, await server.endpoint());
    const globex = await TestClient.connect(t, await server.endpoint({}, 2));
    await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'acme'), (2, 4, 'globex')`);
    await db.pool.query(`UPDATE tasks SET status = 'done' WHERE name = 'acme'`);
    const events = await acme.waitForEvents(2);
    t.same(events.map((e) => [e.event, e.object_class_id]), [['task_created', 1], ['task_status_changed', 1]]);
    t.match(events[0]?.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/);
    const other = await globex.waitForEvents(1);
    t.same(other.map((e) => [e.event, e.object_class_id]), [['task_created', 4]]);
    await db.pool.query(`DELETE FROM tasks WHERE name = 'globex'`);
    await globex.waitForEvents(2);
    t.equal(globex.events[1]?.event, 'task_deleted');
    t.same(acme.events.map((e) => e.object_class_id), [1, 1], 'Acme saw nothing of Globex');
  });

  t.test('events carry the fields of the contract, and nothing else', async (t) => {
    const client = await TestClient.connect(t, await server.endpoint());
    const { rows } = await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 2, 'x') RETURNING id`);
    const [event] = await client.waitForEvents(1);
    t.same(Object.keys(event ?? {}), ['task_id', 'object_class_id', 'event', 'timestamp']);
    t.equal(event?.task_id, Number(rows[0].id));
    t.equal(event?.object_class_id, 2);
    const { rows: outbox } = await db.pool.query(
      `SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"') AS ts FROM task_events.outbox WHERE task_id = $1`,
      [rows[0].id],
    );
    t.equal(event?.timestamp, outbox[0].ts, 'the timestamp keeps the database\'s microseconds');
  });

  t.test('a new connection receives nothing created before it opened', async (t) => {
    const caughtUp = nextEvent(server.app.taskEvents.events, 'caught-up', (d: { events: number }) => d.events > 0);
    await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'before')`);
    await caughtUp; // read and buffered by the server before the client connects
    const client = await TestClient.connect(t, await server.endpoint());
    await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 3, 'after')`);
    // Events arrive in creation order: had 'before' been sent, it would be the first one.
    await client.waitForEvents(1);
    t.same(client.events.map((e) => e.object_class_id), [3]);
  });

  t.test('object_class_ids filters by class', async (t) => {
    const filtered = await TestClient.connect(t, await server.endpoint({ object_class_ids: '1,3' }));
    const empty = await TestClient.connect(t, await server.endpoint({ object_class_ids: '' }));
    await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'a'), (1, 2, 'b'), (1, 3, 'c'), (2, 4, 'd')`);
    await filtered.waitForEvents(2);
    await empty.waitForEvents(3);
    t.same(filtered.events.map((e) => e.object_class_id), [1, 3]);
    t.same(empty.events.map((e) => e.object_class_id), [1, 2, 3], 'an empty list is no filter');
  });

  t.test('a malformed object_class_ids gets an error frame and close 1000, and spends no token', async (t) => {
    for (const bad of ['1,,2', 'a', '1;2', '1,2,', '-1']) {
      const token = await server.token();
      const client = await TestClient.connect(t, server.wsUrl(`/ws/events/tasks/?${new URLSearchParams({ uuid: token, object_class_ids: bad })}`));
      t.same((await client.waitForClose()).code, 1000, bad);
      t.same(client.frames, [errorOf('ERR_INVALID_OBJECT_CLASS_IDS')], bad);
      t.ok(await unspent(db, token), `the token is not spent by ${bad}`);
    }
  });

  t.test('bad, used, expired or missing tokens get ERR_INVALID_UUID and close 1000', async (t) => {
    const used = await server.token();
    (await TestClient.connect(t, server.wsUrl(`/ws/events/tasks/?uuid=${used}`))).socket.close();
    const expired = await server.token();
    await db.pool.query(`UPDATE task_events.tokens SET expires_at = now() - interval '1 second' WHERE used_at IS NULL`);
    const cases = {
      missing: '/ws/events/tasks/',
      empty: '/ws/events/tasks/?uuid=',
      malformed: '/ws/events/tasks/?uuid=not-a-uuid',
      unknown: `/ws/events/tasks/?uuid=${crypto.randomUUID()}`,
      used: `/ws/events/tasks/?uuid=${used}`,
      expired: `/ws/events/tasks/?uuid=${expired}`,
      repeated: `/ws/events/tasks/?uuid=${crypto.randomUUID()}&uuid=${crypto.randomUUID()}`,
    };
    for (const [name, path] of Object.entries(cases)) {
      const client = await TestClient.connect(t, server.wsUrl(path));
      const closed = await client.waitForClose();
      t.equal(closed.code, 1000, name);
      t.same(client.frames, [errorOf('ERR_INVALID_UUID')], name);
    }
  });

  t.test('other paths under /ws/ get ERR_INCORRECT_URL and close 1000', async (t) => {
    for (const path of ['/ws/events/', '/ws/events/taskz/', '/ws/events/tasks/x', '/ws/']) {
      const client = await TestClient.connect(t, server.wsUrl(path));
      t.equal((await client.waitForClose()).code, 1000, path);
      t.same(client.frames, [errorOf('ERR_INCORRECT_URL')], path);
    }
  });

  t.test('a client that sends a frame gets RECEIVE_NOT_SUPPORTED and close 1000', async (t) => {
    const client = await TestClient.connect(t, await server.endpoint());
    client.socket.send('hello');
    t.equal((await client.waitForClose()).code, 1000);
    t.same(client.frames, [errorOf('RECEIVE_NOT_SUPPORTED')]);
    await client.waitFor(() => server.app.taskEvents.stats().connections === 0, 'the hub to drop the socket').catch(() => {});
  });

  t.test('a plain HTTP request gets 426 and spends no token', async (t) => {
    const token = await server.token();
    const response = await server.app.inject({ method: 'GET', url: `/ws/events/tasks/?uuid=${token}` });
    t.equal(response.statusCode, 426);
    t.equal(response.headers.upgrade, 'websocket');
    t.ok(await unspent(db, token));
  });
});

t.test('too many connection attempts get ERR_RATE_LIMIT_EXCEEDED and close 1000', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { rateLimit: { max: 3, timeWindow: 60_000 } });
  const accepted = [];
  for (let i = 0; i < 3; i++) accepted.push(await TestClient.connect(t, await server.endpoint()));
  const refused = await TestClient.connect(t, await server.endpoint());
  t.equal((await refused.waitForClose()).code, 1000);
  t.same(refused.frames, [errorOf('ERR_RATE_LIMIT_EXCEEDED')]);
  await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'still served')`);
  for (const client of accepted) {
    await client.waitForEvents(1);
    t.equal(client.closed, null, 'earlier sockets are untouched');
  }
});

t.test('a custom authenticate replaces the token store', async (t) => {
  const db = await createTestDatabase(t);
  const known = crypto.randomUUID();
  const server = await startServer(t, db, {
    authenticate: (token) => (token === known ? { environmentId: 2, userId: 2 } : null),
  });
  const client = await TestClient.connect(t, server.wsUrl(`/ws/events/tasks/?uuid=${known}`));
  await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'a'), (2, 4, 'b')`);
  t.same((await client.waitForEvents(1)).map((e) => e.object_class_id), [4]);
  const stranger = await TestClient.connect(t, server.wsUrl(`/ws/events/tasks/?uuid=${crypto.randomUUID()}`));
  await stranger.waitForClose();
  t.same(stranger.frames, [errorOf('ERR_INVALID_UUID')]);
});
