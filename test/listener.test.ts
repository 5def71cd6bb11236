// The listener under faults: its connections terminated while writes go on, transactions that
// commit out of id order, a NOTIFY that never comes, one statement that writes 20,000 events.
// Always against the real plugin, a real PostgreSQL and real `ws` clients.
import t from 'tap';
import type pg from 'pg';
import { createAppRole, terminateBackends } from '../harness/backends.js';
import { TestClient, type ReceivedEvent } from '../harness/client.js';
import { createTestDatabase, type TestDatabase } from '../harness/db.js';
import { startWriter, waitForListenBackend, withApplicationName } from './helpers/backends.js';
import { eventsSince, outboxMark } from './helpers/outbox.js';
import { nextEvent, startServer, startServerProcess } from './helpers/server.js';

/** What a client's events and the outbox rows are compared on. */
const key = (event: { task_id: number; event: string }): string => `${event.task_id}:${event.event}`;

/** The outbox rows of environment 1 written after `mark`, as the comparison keys, in id order. */
async function outboxKeys(db: TestDatabase, mark: number): Promise<string[]> {
  return (await eventsSince(db.pool, mark)).filter((row) => row.environment_id === 1).map(key);
}

/**
 * Writes one more event and waits for it: everything the client was going to receive before it has
 * arrived by then (same environment, later commit), so an extra or duplicate would show.
 */
async function sentinel(db: TestDatabase, client: TestClient): Promise<ReceivedEvent> {
  const { rows } = await db.pool.query<{ id: string }>(
    `INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'sentinel') RETURNING id`,
  );
  const id = Number(rows[0]?.id);
  await client.waitFor(() => client.events.some((event) => event.task_id === id), `the sentinel task ${id}`);
  return client.events.at(-1) as ReceivedEvent;
}

/** Records the listener's lifecycle events from now on. */
function recordLifecycle(emitter: NodeJS.EventEmitter): string[] {
  const seen: string[] = [];
  for (const name of ['connected', 'reconnecting', 'warning']) emitter.on(name, () => seen.push(name));
  return seen;
}

t.test('catches up after its LISTEN connection is terminated, while another connection keeps writing', async (t) => {
  const db = await createTestDatabase(t);
  const applicationName = 'te_listener_catch_up';
  // A long poll: only the reconnect and NOTIFYs wake the listener, not a timer that would hide a gap.
  const server = await startServer(t, db, { connectionString: withApplicationName(db.url, applicationName), pollInterval: 60_000 });
  const before = await waitForListenBackend(db, applicationName);
  const mark = await outboxMark(db.pool);
  const client = await TestClient.connect(t, await server.endpoint());

  const writer = startWriter(t, db.pool);
  await writer.waitForWrites(30);
  const lifecycle = recordLifecycle(server.app.taskEvents.events);
  const reconnected = nextEvent(server.app.taskEvents.events, 'connected');
  const [killed] = await db.pool.query('SELECT pg_terminate_backend($1) AS killed', [before.pid]).then((r) => r.rows);
  t.equal(killed?.killed, true, 'the LISTEN backend is terminated');
  const writesAtTermination = writer.count;
  await reconnected;
  const writesDuringReconnect = writer.count - writesAtTermination;
  await writer.waitForWrites(writer.count + 30);
  await writer.stop();

  const after = await waitForListenBackend(db, applicationName);
  t.not(after.pid, before.pid, 'a new LISTEN connection');
  t.same(lifecycle.filter((name) => name !== 'warning').slice(0, 2), ['reconnecting', 'connected'], 'reconnecting, then connected');
  t.comment(`${writesAtTermination} statements before the termination, ${writesDuringReconnect} while reconnecting, ${writer.count} in all`);

  const expected = await outboxKeys(db, mark);
  await client.waitForEvents(expected.length);
  await sentinel(db, client);
  const received = client.events.slice(0, -1).map(key);
  t.equal(received.length, expected.length, `exactly ${expected.length} events, none twice`);
  t.same(received, expected, 'every event, once, in outbox order');
});

t.test('every backend of the app terminated again and again while writes go on: still exactly once, in order', async (t) => {
  const role = await createAppRole(t);
  const db = await createTestDatabase(t);
  await role.grant(db);
  const applicationName = 'te_listener_chaos';
  // In a process of its own: a crash must show as the crash of a server, not take the test runner along.
  const plugin = await startServerProcess(t, role.url(db, applicationName), { pollInterval: 100 });
  await waitForListenBackend(db, applicationName);
  const mark = await outboxMark(db.pool);
  const client = await TestClient.connect(t, await plugin.endpoint());

  const writer = startWriter(t, db.pool);
  await writer.waitForWrites(10);
  // Back to back for two seconds: every backend of the app's user goes the moment it appears,
  // whatever it is doing (connecting, LISTEN, between two statements of a read). The test's own
  // connections belong to another user.
  const until = Date.now() + 2000;
  let terminated = 0;
  let rounds = 0;
  while (Date.now() < until && plugin.exit === null) {
    terminated += (await terminateBackends(db, { user: role.name })).length;
    rounds++;
  }
  if (plugin.exit !== null) {
    await writer.stop();
    t.fail(`the server process died after ${terminated} terminated backends`, { exit: plugin.exit, stderr: plugin.stderr.slice(-3000) });
    return;
  }
  const writtenDuringFaults = writer.count;
  await waitForListenBackend(db, applicationName, 15_000);
  await writer.waitForWrites(writer.count + 30);
  await writer.stop();
  t.ok(terminated >= 5, `${terminated} backends terminated in ${rounds} rounds`);
  t.ok(plugin.count('reconnecting') > 0, 'the listener reconnected');
  t.comment(`${writtenDuringFaults} statements written during the faults, ${writer.count} in all`);

  const expected = await outboxKeys(db, mark);
  await client.waitForEvents(expected.length, 20_000);
  await sentinel(db, client);
  const received = client.events.slice(0, -1).map(key);
  t.equal(received.length, expected.length, `exactly ${expected.length} events, none twice`);
  t.same(received, expected, 'the same (task_id, event) sequence as the outbox, by id');
  t.equal(plugin.exit, null, 'the server process is still up');
});

t.test('transactions committing out of id order across a listener reconnect: the earlier id is not skipped', async (t) => {
  const db = await createTestDatabase(t);
  const applicationName = 'te_listener_out_of_order';
  const server = await startServer(t, db, { connectionString: withApplicationName(db.url, applicationName), pollInterval: 60_000 });
  const listening = await waitForListenBackend(db, applicationName);
  const client = await TestClient.connect(t, await server.endpoint());

  const a = await db.pool.connect();
  const b = await db.pool.connect();
  t.teardown(() => {
    a.release();
    b.release();
  });
  await a.query('BEGIN');
  const taskA = Number((await a.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'A') RETURNING id`)).rows[0].id);
  await b.query('BEGIN');
  const taskB = Number((await b.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'B') RETURNING id`)).rows[0].id);
  await b.query('COMMIT');
  const { rows: ids } = await db.pool.query<{ task_id: string; id: string }>('SELECT task_id, id FROM task_events.outbox ORDER BY id');
  t.same(ids.map((row) => Number(row.task_id)), [taskB], 'only B is visible so far');
  await client.waitFor(() => client.events.some((event) => event.task_id === taskB), "B's event");
  t.same(client.events.map((event) => event.task_id), [taskB], 'B arrives while A is still open');

  const reconnecting = nextEvent(server.app.taskEvents.events, 'reconnecting');
  const connected = nextEvent(server.app.taskEvents.events, 'connected');
  const [killed] = (await db.pool.query('SELECT pg_terminate_backend($1) AS killed', [listening.pid])).rows;
  t.equal(killed?.killed, true, 'the LISTEN backend is terminated');
  await reconnecting;
  await a.query('COMMIT');
  await connected;
  const { rows: outbox } = await db.pool.query<{ task_id: string; id: string }>('SELECT task_id, id FROM task_events.outbox ORDER BY id');
  t.same(outbox.map((row) => Number(row.task_id)), [taskA, taskB], "A's outbox row has the lower id");

  await client.waitFor(() => client.events.some((event) => event.task_id === taskA), "A's event after the reconnect");
  await sentinel(db, client);
  t.same(client.events.slice(0, -1).map((event) => event.task_id), [taskB, taskA], 'A and B, each exactly once');
});

t.test('the doorbell: writers that do not ring are read soon after they commit, not at the next poll', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { pollInterval: 60_000, messageTime: 50 });
  const client = await TestClient.connect(t, await server.endpoint());
  const connections = await Promise.all([db.pool.connect(), db.pool.connect()]);
  t.teardown(() => connections.forEach((connection) => connection.release()));
  const [ringer, quiet] = connections as [pg.PoolClient, pg.PoolClient];
  const insert = async (connection: pg.PoolClient, name: string): Promise<number> =>
    Number((await connection.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, $1) RETURNING id`, [name])).rows[0].id);
  const arrives = async (taskId: number, what: string): Promise<void> => {
    const started = Date.now();
    await client.waitFor(() => client.events.some((event) => event.task_id === taskId), what, 5000);
    t.ok(Date.now() - started < 2000, `${what} arrived after ${Date.now() - started} ms (the poll is 60 s away)`);
  };

  // The first writer takes the doorbell (it will ring at its commit); the second commits first, unrung.
  await ringer.query('BEGIN');
  const first = await insert(ringer, 'rings');
  await quiet.query('BEGIN');
  const second = await insert(quiet, 'does not ring');
  await quiet.query('COMMIT');
  await arrives(second, "the unrung writer's event, while the ringer is still open");
  await ringer.query('COMMIT');
  await arrives(first, "the ringer's event");

  // A writer that wrote before a read and commits after it, with no writer after it to ring.
  await ringer.query('BEGIN');
  const third = await insert(ringer, 'rings again');
  await quiet.query('BEGIN');
  const fourth = await insert(quiet, 'holds the outbox during the read');
  await ringer.query('COMMIT');
  await arrives(third, "the ringer's event");
  await quiet.query('COMMIT');
  await arrives(fourth, 'the event of the writer that held the outbox during the read');
  t.same(client.events.map((event) => event.task_id), [second, first, third, fourth], 'each once, in commit order');
});

t.test('an event whose NOTIFY never came arrives by the poll', async (t) => {
  const db = await createTestDatabase(t);
  const applicationName = 'te_listener_poll';
  const pollInterval = 300;
  const messageTime = 100;
  const server = await startServer(t, db, { connectionString: withApplicationName(db.url, applicationName), pollInterval, messageTime });
  await waitForListenBackend(db, applicationName);
  const client = await TestClient.connect(t, await server.endpoint());

  // Straight into the outbox: no trigger, no pg_notify. Only the poll can find it.
  for (const taskId of [900001, 900002]) {
    const started = Date.now();
    await db.pool.query(`INSERT INTO task_events.outbox (environment_id, task_id, object_class_id, event) VALUES (1, $1, 1, 'task_created')`, [taskId]);
    const bound = pollInterval + messageTime + 1000;
    await client.waitFor(() => client.events.some((event) => event.task_id === taskId), `task ${taskId} by the poll`, bound);
    const waited = Date.now() - started;
    t.ok(waited <= bound, `task ${taskId} arrived after ${waited} ms (bound ${bound} ms)`);
  }
  t.same(client.events.map((event) => [event.task_id, event.event]), [[900001, 'task_created'], [900002, 'task_created']]);
});

t.test('an event written before a client connected, read late by the poll, is not sent to that client', async (t) => {
  const db = await createTestDatabase(t);
  const applicationName = 'te_listener_poll_before';
  const server = await startServer(t, db, { connectionString: withApplicationName(db.url, applicationName), pollInterval: 1000 });
  await waitForListenBackend(db, applicationName);
  // Synchronise with the poll: right after a read, the next one is about a pollInterval away.
  await nextEvent(server.app.taskEvents.events, 'caught-up');
  await db.pool.query(`INSERT INTO task_events.outbox (environment_id, task_id, object_class_id, event) VALUES (1, 800001, 1, 'task_created')`);
  const client = await TestClient.connect(t, await server.endpoint());
  t.equal(server.app.taskEvents.stats().eventsReceived, 0, 'the listener has not read the early event yet');
  await nextEvent(server.app.taskEvents.events, 'caught-up', (detail: { events: number }) => detail.events > 0);
  await sentinel(db, client);
  t.same(client.events.map((event) => event.task_id).slice(0, -1), [], 'nothing created before the connection opened');
});

t.test('a 20,000-row UPDATE in one statement reaches a client as 20,000 events in full messages', async (t) => {
  const db = await createTestDatabase(t);
  const rows = 20_000;
  const messageLimit = 1000;
  // Written before the server starts: the listener starts after them, so only the UPDATE counts.
  await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) SELECT 1, 1 + i % 3, 'bulk ' || i FROM generate_series(1, $1) AS i`, [rows]);
  const server = await startServer(t, db, { messageLimit, messageTime: 100 });
  const client = await TestClient.connect(t, await server.endpoint());
  const mark = await outboxMark(db.pool);

  const started = Date.now();
  await db.pool.query(`UPDATE tasks SET "values" = jsonb_build_object('n', id)`);
  await client.waitForEvents(rows, 30_000);
  t.comment(`${rows} events received ${Date.now() - started} ms after the UPDATE began`);
  await sentinel(db, client);

  const messages = client.messages;
  const bulk = client.events.slice(0, -1);
  t.equal(bulk.length, rows, `exactly ${rows} events`);
  t.ok(bulk.every((event) => event.event === 'task_value_changed'), 'all task_value_changed');
  t.same(bulk.map(key), await outboxKeys(db, mark).then((keys) => keys.slice(0, rows)), 'in outbox order, none twice');
  t.ok(messages.every((message) => message.length >= 1 && message.length <= messageLimit), `every message holds 1..${messageLimit} events`);
  t.ok(messages.length >= rows / messageLimit, `${messages.length} messages`);
  const sizes = new Set(messages.slice(0, rows / messageLimit).map((message) => message.length));
  t.same([...sizes], [messageLimit], 'the bulk went out in full messages');
});
