// Shutdown and the handshake's failure path: `app.close()` flushes and closes with 1001 and lets go
// of the database; a handshake whose authentication fails (database unreachable, or the host's
// `authenticate` throws) is refused with HTTP 500, leaves no socket, and the server carries on.
import { connect as connectTcp } from 'node:net';
import t from 'tap';
import { backends, createAppRole, terminateBackends, waitUntil } from '../harness/backends.js';
import { TestClient } from '../harness/client.js';
import { createTestDatabase, type TestDatabase } from '../harness/db.js';
import { waitForListenBackend, watchForCrash, withApplicationName } from './helpers/backends.js';
import { nextEvent, startServer, startServerProcess, type TestServer } from './helpers/server.js';

/** Waits until the plugin has read at least `count` events from the outbox. */
async function waitForEventsReceived(server: TestServer, count: number): Promise<void> {
  const enough = (): boolean => server.app.taskEvents.stats().eventsReceived >= count;
  if (!enough()) await nextEvent(server.app.taskEvents.events, 'caught-up', enough);
}

/** Inserts a task of environment 1 and returns its id. */
async function insertTask(db: TestDatabase, name: string): Promise<number> {
  const { rows } = await db.pool.query<{ id: string }>(
    `INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, $1) RETURNING id`,
    [name],
  );
  return Number(rows[0]?.id);
}

/**
 * A WebSocket handshake over a bare TCP socket: the status line of the answer, and whether the
 * server then closed the connection (no socket left behind on its side).
 */
function rawHandshake(server: TestServer, path: string, timeout = 5000): Promise<{ status: number; closedByServer: boolean }> {
  const { port } = new URL(server.wsUrl('/'));
  return new Promise((resolve, reject) => {
    const socket = connectTcp(Number(port), '127.0.0.1');
    let answer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the server kept the connection open ${timeout} ms after answering: ${JSON.stringify(answer.slice(0, 200))}`));
    }, timeout);
    socket.on('data', (chunk) => (answer += chunk.toString('latin1')));
    socket.on('error', () => {}); // a reset after the answer is the server closing, too
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0), closedByServer: true });
    });
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    );
  });
}

t.test('app.close() flushes every buffered event, closes every client with 1001 and releases the database', async (t) => {
  const db = await createTestDatabase(t);
  const applicationName = 'te_shutdown_flush';
  // A minute between messages: whatever a client gets before the close, the close sent it.
  const server = await startServer(t, db, { connectionString: withApplicationName(db.url, applicationName), messageTime: 60_000 });
  await waitForListenBackend(db, applicationName);
  const everything = await TestClient.connect(t, await server.endpoint());
  const classOne = await TestClient.connect(t, await server.endpoint({ object_class_ids: '1' }));
  const globex = await TestClient.connect(t, await server.endpoint({}, 2));

  await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'a'), (1, 2, 'b'), (2, 4, 'c'), (1, 1, 'd')`);
  await db.pool.query(`UPDATE tasks SET status = 'done' WHERE name IN ('a', 'c')`);
  await waitForEventsReceived(server, 6);
  t.equal(server.app.taskEvents.stats().messagesSent, 0, 'nothing sent yet: every event is buffered');

  const started = Date.now();
  const closing = server.app.close();
  const closes = await Promise.all([everything, classOne, globex].map((client) => client.waitForClose()));
  await closing;
  t.comment(`app.close() took ${Date.now() - started} ms`);
  t.same(closes.map((close) => close.code), [1001, 1001, 1001], 'every client is closed with 1001');
  const names = (client: TestClient): string[] => client.events.map((event) => `${event.event}:${event.object_class_id}`);
  t.same(names(everything), ['task_created:1', 'task_created:2', 'task_created:1', 'task_status_changed:1'], 'environment 1, every class');
  t.same(names(classOne), ['task_created:1', 'task_created:1', 'task_status_changed:1'], 'environment 1, class 1');
  t.same(names(globex), ['task_created:4', 'task_status_changed:4'], 'environment 2');
  t.ok([everything, classOne, globex].every((client) => client.messages.every((message) => message.length > 0)), 'no empty message');

  await waitUntil(async () => (await backends(db, { applicationName })).length === 0, 'the plugin to leave the database', 5000);
  t.pass('no backend of the plugin remains connected');
});

t.test('after its connections were terminated again and again, close() leaves no backend and the process exits', async (t) => {
  const role = await createAppRole(t);
  const db = await createTestDatabase(t);
  await role.grant(db);
  const applicationName = 'te_shutdown_after_faults';
  const child = await startServerProcess(t, role.url(db, applicationName));
  await waitForListenBackend(db, applicationName);

  // Back to back for two seconds: every backend of the app's user goes the moment it appears, so
  // close() finds the listener in the middle of reconnecting.
  const until = Date.now() + 2000;
  let terminated = 0;
  while (Date.now() < until && child.exit === null) terminated += (await terminateBackends(db, { user: role.name })).length;
  if (child.exit !== null) {
    t.fail(`the server process died after ${terminated} terminated backends`, { exit: child.exit, stderr: child.stderr.slice(-3000) });
    return;
  }
  t.pass(`the process survived ${terminated} terminated backends`);

  const closed = await child.close();
  t.match(closed, { closed: true }, `app.close() resolved (${String(closed.ms)} ms)`);
  await waitUntil(async () => (await backends(db, { user: role.name })).length === 0, 'the plugin to leave the database', 5000)
    .then(() => t.pass('no backend of the plugin remains connected'))
    .catch(async (error: Error) => t.fail(error.message, { backends: await backends(db, { user: role.name }) }));
  // pg-listen checks its connection every 10 s: a timer of a reconnect that outlived close() would
  // fire by then and keep the process alive.
  const exit = await child.waitForExit(12_000);
  t.same(exit, { code: 0, signal: null }, 'the process exits by itself after close(): nothing outlived it');
  t.same(await backends(db, { user: role.name }), [], 'and no backend came back');
});

t.test('database unreachable during the handshake: HTTP 500, no socket; the server carries on and catches up', async (t) => {
  const crash = watchForCrash(t);
  const role = await createAppRole(t);
  const db = await createTestDatabase(t);
  await role.grant(db);
  const applicationName = 'te_shutdown_500';
  const server = await startServer(t, db, { connectionString: role.url(db, applicationName), pollInterval: 300 });
  await waitForListenBackend(db, applicationName);
  const survivor = await TestClient.connect(t, await server.endpoint());
  await crash.run(async () => {
    const first = await insertTask(db, 'before the lock-out');
    await survivor.waitFor(() => survivor.events.some((event) => event.task_id === first), 'the first event');

    // Minted while the database still answers; spent while it does not.
    const tokens = [await server.token(), await server.token()];
    await role.setLogin(false);
    await terminateBackends(db, { user: role.name });
    await waitUntil(async () => (await backends(db, { user: role.name })).length === 0, 'the app to be locked out');
    const whileLockedOut = await insertTask(db, 'written while the app is locked out');

    const refused = await TestClient.connect(t, server.wsUrl(`/ws/events/tasks/?uuid=${tokens[0]}`)).then(
      () => null,
      (error: Error & { statusCode?: number }) => error,
    );
    t.equal(refused?.statusCode, 500, 'the handshake is refused with HTTP 500');
    const raw = await rawHandshake(server, `/ws/events/tasks/?uuid=${tokens[1]}`);
    t.same(raw, { status: 500, closedByServer: true }, 'a bare handshake gets 500 and the server closes the connection');
    t.equal(server.app.taskEvents.stats().connections, 1, 'no new connection: only the survivor');
    t.equal(server.app.websocketServer.clients.size, 1, 'no WebSocket left behind on the server');
    t.equal(survivor.closed, null, 'the survivor is still connected');
    const plain = await fetch(server.wsUrl('/ws/events/tasks/').replace('ws:', 'http:'));
    t.equal(plain.status, 426, 'the server still answers');

    await role.setLogin(true);
    await survivor.waitFor(() => survivor.events.some((event) => event.task_id === whileLockedOut), 'the event written during the lock-out', 15_000);
    const newcomer = await TestClient.connect(t, await server.endpoint());
    t.equal(newcomer.closed, null, 'a new handshake succeeds once the database answers again');
    await waitForListenBackend(db, applicationName, 15_000);
    const after = await insertTask(db, 'after the lock-out');
    await newcomer.waitFor(() => newcomer.events.some((event) => event.task_id === after), 'the newcomer to receive the next event');
    await survivor.waitFor(() => survivor.events.some((event) => event.task_id === after), 'the survivor to receive the next event');
    t.same(survivor.events.map((event) => event.task_id), [first, whileLockedOut, after], 'the survivor got every event once, in order');
    t.same(newcomer.events.map((event) => event.task_id), [after], 'the newcomer only what came after it');
  });
});

t.test('an authenticate function that throws or rejects: HTTP 500, no upgrade', async (t) => {
  const db = await createTestDatabase(t);
  for (const [how, authenticate] of [
    ['throws', () => { throw new Error('the identity service is down'); }],
    ['rejects', async () => { throw new Error('the identity service is down'); }],
  ] as const) {
    const server = await startServer(t, db, { authenticate });
    const uuid = '6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f';
    const refused = await TestClient.connect(t, server.wsUrl(`/ws/events/tasks/?uuid=${uuid}`)).then(
      () => null,
      (error: Error & { statusCode?: number }) => error,
    );
    t.equal(refused?.statusCode, 500, `authenticate ${how}: HTTP 500`);
    t.same(await rawHandshake(server, `/ws/events/tasks/?uuid=${uuid}`), { status: 500, closedByServer: true }, `authenticate ${how}: connection closed by the server`);
    t.equal(server.app.taskEvents.stats().connections, 0, `authenticate ${how}: no connection`);
    t.equal(server.app.websocketServer.clients.size, 0, `authenticate ${how}: no WebSocket on the server`);
  }
});
