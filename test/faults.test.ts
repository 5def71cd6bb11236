// Database faults while writes go on from other connections, each ending with the delivery
// checker at zero for every client that stayed connected: the app's backends terminated round
// after round, the app locked out of its database for 20 s, PostgreSQL itself restarted.
// (test/listener.test.ts covers one LISTEN termination and back-to-back terminations with one
// client; test/shutdown.test.ts the 500 of a single locked-out handshake.)
import t, { type Test } from 'tap';
import pg from 'pg';
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../example/embedded.js';
import { backends, createAppRole, terminateBackends, waitUntil } from '../harness/backends.js';
import { TestClient } from '../harness/client.js';
import { applyReferenceSchema, createTestDatabase, type TestDatabase } from '../harness/db.js';
import type { ClientSpec } from '../harness/delivery/tracked.js';
import { startWorkload } from '../harness/delivery/writers.js';
import { migrate } from '../lib/migrate.js';
import { outboxPosition } from '../lib/outbox.js';
import { waitForListenBackend, watchForCrash, withApplicationName } from './helpers/backends.js';
import { finishAndCheck, joinTracked } from './helpers/delivery.js';
import { nextEvent, startServer, type TestServer } from './helpers/server.js';

/** Who connects: both environments, with and without filters. */
const CLIENTS: readonly ClientSpec[] = [
  { name: 'acme', environmentId: 1, objectClassIds: null },
  { name: 'acme 1', environmentId: 1, objectClassIds: [1] },
  { name: 'acme 2,3', environmentId: 1, objectClassIds: [2, 3] },
  { name: 'globex', environmentId: 2, objectClassIds: null },
  { name: 'globex 4', environmentId: 2, objectClassIds: [4] },
];

/** A handshake with a token minted beforehand: the HTTP status it got (101 when it opened). */
async function handshakeStatus(t: Test, server: TestServer, token: string): Promise<number | string> {
  return TestClient.connect(t, server.wsUrl(`/ws/events/tasks/?uuid=${token}`)).then(
    () => 101,
    (error: Error & { statusCode?: number }) => error.statusCode ?? error.message,
  );
}

/** Resolves at `time` (Date.now() scale): for phases of a fault whose length is the point. */
function until(time: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, time - Date.now())));
}

t.test('every backend of the app terminated in 5 rounds while 3 writers go on: each client gets its events once, in order', async (t) => {
  const crash = watchForCrash(t);
  const db = await createTestDatabase(t);
  const applicationName = 'te_faults_terminate';
  // A long poll: only NOTIFYs and reconnects make reads, so a gap could not be papered over by a
  // timer. Small fetches: a termination often strikes a read half-way, after some were handed on.
  const server = await startServer(t, db, { connectionString: withApplicationName(db.url, applicationName), pollInterval: 60_000, readBatchSize: 10 });
  await waitForListenBackend(db, applicationName);
  const mark = await outboxPosition(db.pool);
  const clients = await Promise.all(CLIENTS.map((spec) => joinTracked(t, db.pool, server, spec)));
  const workload = startWorkload(t, db.pool, { pause: 5 });
  const events = server.app.taskEvents.events;

  await crash.run(async () => {
    await workload.waitForMore(30);
    const perRound: number[] = [];
    const joinedDuringFaults: string[] = [];
    let refused = 0;
    const rounds = 5;
    const newcomers = CLIENTS.slice(0, rounds).map((spec, index) => ({ ...spec, name: `${spec.name} (round ${index + 1})` }));
    const tokens = await Promise.all(newcomers.map((spec) => server.token(spec.environmentId)));
    for (let round = 1; round <= rounds; round++) {
      const reconnected = nextEvent(events, 'connected', () => true, 20_000);
      perRound.push((await terminateBackends(db, { applicationName })).length);
      // A newcomer while the app reconnects: it either opens (and is checked like the others) or gets 500.
      await joinTracked(t, db.pool, server, newcomers[round - 1] as ClientSpec, tokens[round - 1]).then(
        (client) => {
          clients.push(client);
          joinedDuringFaults.push(client.record().name);
        },
        (error: Error & { statusCode?: number }) => {
          if (error.statusCode !== 500) throw error;
          refused++;
        },
      );
      await reconnected;
      // Odd rounds strike again at once, during the reconnect's catch-up read; even ones after
      // some reads and writes have gone through.
      if (round % 2 === 0) {
        await nextEvent(events, 'caught-up', (detail: { events: number }) => detail.events > 0, 10_000);
        await workload.waitForMore(15);
      }
    }
    t.ok(perRound.every((count) => count >= 1), `backends terminated per round: ${perRound.join(', ')}`);
    t.comment(`${joinedDuringFaults.length} clients joined during the faults, ${refused} handshakes got 500; ${workload.transactions} transactions so far`);
    await waitForListenBackend(db, applicationName, 15_000);
    await workload.waitForMore(30);
    await finishAndCheck(t, db.pool, workload, mark, clients);
  });
  t.same(crash.errors, [], 'no error escaped to the process');
});

t.test('catch-up never skips: transactions held open commit below ids already delivered, across LISTEN reconnects', async (t) => {
  const crash = watchForCrash(t);
  const db = await createTestDatabase(t);
  const applicationName = 'te_faults_out_of_order';
  const server = await startServer(t, db, { connectionString: withApplicationName(db.url, applicationName), pollInterval: 60_000, readBatchSize: 10 });
  const events = server.app.taskEvents.events;
  await waitForListenBackend(db, applicationName);
  const mark = await outboxPosition(db.pool);
  const clients = await Promise.all(CLIENTS.map((spec) => joinTracked(t, db.pool, server, spec)));
  const workload = startWorkload(t, db.pool, { pause: 5 });
  // A writer of its own whose transactions stay open while the others commit higher ids.
  const slow = await db.pool.connect();
  t.teardown(() => slow.release());

  await crash.run(async () => {
    const rounds = 6;
    const overtaken: number[] = [];
    const terminated: number[] = [];
    for (let round = 1; round <= rounds; round++) {
      await slow.query('BEGIN');
      const { rows } = await slow.query<{ id: string }>(
        `INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'slow'), (1, 2, 'slow'), (2, 4, 'slow') RETURNING id`,
      );
      for (const row of rows) workload.writers.set(Number(row.id), 'slow');
      const slowIds = await db.pool.query<{ id: string }>('SELECT max(id) AS id FROM task_events.outbox');
      await workload.waitForMore(10);
      const reconnecting = round % 2 ? null : nextEvent(events, 'reconnecting');
      const reconnected = nextEvent(events, 'connected', () => true, 20_000);
      terminated.push((await terminateBackends(db, { applicationName })).length);
      if (round % 2) {
        // Committed after the reconnect's catch-up read, which saw it still running.
        await reconnected;
        await nextEvent(events, 'caught-up');
        await workload.waitForMore(5);
      } else {
        // Committed while the listener is down.
        await reconnecting;
      }
      overtaken.push((await outboxPosition(db.pool)) - Number(slowIds.rows[0]?.id ?? 0));
      await slow.query('COMMIT');
      await reconnected;
    }
    t.ok(terminated.every((count) => count >= 1), `backends terminated per round: ${terminated.join(', ')}`);
    t.ok(overtaken.every((count) => count > 0), `ids allocated above each slow transaction's before it committed: ${overtaken.join(', ')}`);
    await workload.waitForMore(20);
    await finishAndCheck(t, db.pool, workload, mark, clients);
  });
  t.same(crash.errors, [], 'no error escaped to the process');
});

t.test('the app cut off from its database for 20 s while another role writes: 500s, no crash, then every event', async (t) => {
  const crash = watchForCrash(t);
  const role = await createAppRole(t);
  const db = await createTestDatabase(t);
  await role.grant(db);
  const applicationName = 'te_faults_cut_off';
  const server = await startServer(t, db, { connectionString: role.url(db, applicationName) });
  await waitForListenBackend(db, applicationName);
  const mark = await outboxPosition(db.pool);
  const clients = await Promise.all(CLIENTS.map((spec) => joinTracked(t, db.pool, server, spec)));
  // The test's own connections are another role: they write on through the cut-off.
  const workload = startWorkload(t, db.pool, { pause: 40 });

  await crash.run(async () => {
    await workload.waitForMore(20);
    const tokens = await Promise.all([1, 2, 3].map(() => server.token()));
    await role.setLogin(false);
    await terminateBackends(db, { user: role.name });
    await waitUntil(async () => (await backends(db, { user: role.name })).length === 0, 'the app to be cut off');
    const cutOff = Date.now();
    const before = workload.transactions;

    // Handshakes spread over the window: each refused with 500, and the app never gets back in.
    const statuses: (number | string)[] = [];
    for (const [index, offset] of [1_000, 9_000, 17_000].entries()) {
      await until(cutOff + offset);
      statuses.push(await handshakeStatus(t, server, tokens[index] as string));
      t.same(await backends(db, { user: role.name }), [], `${offset / 1000} s into the cut-off: no backend of the app`);
    }
    t.same(statuses, [500, 500, 500], 'handshakes during the cut-off get HTTP 500');
    await until(cutOff + 20_000);
    const plain = await fetch(server.wsUrl('/ws/events/tasks/').replace('ws:', 'http:'));
    t.equal(plain.status, 426, 'after 20 s the server still answers');
    t.same(clients.filter(({ client }) => client.closed !== null).map(({ client }) => client.closed), [], 'every client is still connected');
    t.comment(`${workload.transactions - before} transactions committed during the cut-off`);

    const reconnected = nextEvent(server.app.taskEvents.events, 'connected', () => true, 20_000);
    await role.setLogin(true);
    await reconnected;
    clients.push(await joinTracked(t, db.pool, server, { ...(CLIENTS[0] as ClientSpec), name: 'acme (after the cut-off)' }));
    await workload.waitForMore(20);
    await finishAndCheck(t, db.pool, workload, mark, clients);
  });
  t.same(crash.errors, [], 'no error escaped to the process');
});

t.test('PostgreSQL itself restarted: every event committed before and after reaches the clients once', async (t) => {
  const crash = watchForCrash(t);
  let cluster: EmbeddedDatabase;
  try {
    cluster = await startEmbeddedPostgres({ persistent: false });
  } catch (error) {
    // `1..0 # reason`: the test is reported as skipped, with the reason.
    t.plan(0, `skipped: an embedded PostgreSQL of this test's own could not start, and no other server may be restarted: ${(error as Error).message}`);
    return;
  }
  t.teardown(() => cluster.stop());
  const db = await createDatabaseOn(t, cluster.url, 'task_events_restart');
  const applicationName = 'te_faults_restart';
  // A long poll: rows committed while no NOTIFY comes are read only by the reconnect's catch-up.
  const server = await startServer(t, db, { connectionString: withApplicationName(db.url, applicationName), pollInterval: 60_000 });
  const events = server.app.taskEvents.events;
  await waitForListenBackend(db, applicationName);
  const mark = await outboxPosition(db.pool);
  const clients = await Promise.all(CLIENTS.map((spec) => joinTracked(t, db.pool, server, spec)));
  const tokens = await Promise.all([1, 2].map(() => server.token()));

  await crash.run(async () => {
    const beforeRestart = startWorkload(t, db.pool, { pause: 5 });
    await beforeRestart.waitForMore(60);
    await beforeRestart.stop();
    const committed = Number((await db.pool.query('SELECT count(*) AS n FROM task_events.outbox')).rows[0].n);
    // Every row read, and the listener quiet (no read folded in behind the last one).
    let lastRead = Date.now();
    events.on('caught-up', () => (lastRead = Date.now()));
    const quiet = (): boolean => server.app.taskEvents.stats().eventsReceived >= committed && Date.now() - lastRead > 200;
    await waitUntil(quiet, 'the plugin to read every row');
    // Rows no NOTIFY announces (straight into the outbox): still unread when the server goes down.
    await db.pool.query(`INSERT INTO task_events.outbox (environment_id, task_id, object_class_id, event)
                         VALUES (1, 900001, 1, 'task_created'), (1, 900002, 2, 'task_created'), (2, 900003, 4, 'task_created')`);
    t.equal(server.app.taskEvents.stats().eventsReceived, committed, 'three rows committed but not read when PostgreSQL goes down');
    // Nothing is written while the server is down.
    const written = await outboxPosition(db.pool);
    const statuses: (number | string)[] = [];
    const reconnected = nextEvent(events, 'connected', () => true, 30_000);
    const restartedIn = Date.now();
    await cluster.restart(async () => {
      const down = Date.now();
      statuses.push(await handshakeStatus(t, server, tokens[0] as string));
      await until(down + 2_000); // let the listener fail a few reconnects
      statuses.push(await handshakeStatus(t, server, tokens[1] as string));
    });
    t.comment(`PostgreSQL down and up again in ${Date.now() - restartedIn} ms; outbox position ${written} before it`);
    t.same(statuses, [500, 500], 'handshakes while PostgreSQL is down get HTTP 500');
    await reconnected;
    t.same(clients.filter(({ client }) => client.closed !== null).map(({ client }) => client.closed), [], 'every client is still connected');

    clients.push(await joinTracked(t, db.pool, server, { ...(CLIENTS[3] as ClientSpec), name: 'globex (after the restart)' }));
    const afterRestart = startWorkload(t, db.pool, { pause: 5, writers: beforeRestart.writers });
    await afterRestart.waitForMore(60);
    await finishAndCheck(t, db.pool, afterRestart, mark, clients);
  });
  t.same(crash.errors, [], 'no error escaped to the process');
});

/** A fresh database with our schema on a server of the test's own (not TEST_DATABASE_URL's). */
async function createDatabaseOn(t: Test, serverUrl: string, name: string): Promise<TestDatabase> {
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const pool = new pg.Pool({ connectionString: url.toString(), max: 8 });
  pool.on('error', () => {}); // idle clients die with the server
  t.teardown(() => pool.end());
  await migrate(pool);
  await applyReferenceSchema(pool);
  return { name, url: url.toString(), pool };
}
