// Several instances on one database, as users scale out: PostgreSQL is the bus. Two plugin
// instances (two Fastify apps, two ports) share one database: clients of either get every event
// of their tenant, a one-time token opens one connection whichever instance it is spent on, and
// closing or pruning on one instance never disturbs the other's clients.
import t, { type Test } from 'tap';
import { backends, createAppRole, terminateBackends, waitUntil } from '../harness/backends.js';
import { TestClient } from '../harness/client.js';
import { createTestDatabase, type TestDatabase } from '../harness/db.js';
import { committedIds, keepOutboxCopy, OUTBOX_COPY } from '../harness/delivery/outbox.js';
import type { ClientSpec, TrackedClient } from '../harness/delivery/tracked.js';
import { startWorkload } from '../harness/delivery/writers.js';
import { outboxPosition } from '../lib/outbox.js';
import { waitForListenBackend } from './helpers/backends.js';
import { finishAndCheck, joinTracked } from './helpers/delivery.js';
import { nextEvent, startServer, type TestServer } from './helpers/server.js';

/** Clients of both environments, with and without filters, spread over the two instances. */
const ON_A: readonly ClientSpec[] = [
  { name: 'A acme', environmentId: 1, objectClassIds: null },
  { name: 'A acme 1', environmentId: 1, objectClassIds: [1] },
  { name: 'A globex', environmentId: 2, objectClassIds: null },
];
const ON_B: readonly ClientSpec[] = [
  { name: 'B acme', environmentId: 1, objectClassIds: null },
  { name: 'B acme 2,3', environmentId: 1, objectClassIds: [2, 3] },
  { name: 'B globex 4', environmentId: 2, objectClassIds: [4] },
];

async function twoInstances(t: Test, db: TestDatabase): Promise<[TestServer, TestServer]> {
  return Promise.all([startServer(t, db), startServer(t, db)]);
}

const connectAll = (t: Test, db: TestDatabase, server: TestServer, specs: readonly ClientSpec[]): Promise<TrackedClient[]> =>
  Promise.all(specs.map((spec) => joinTracked(t, db.pool, server, spec)));

/** The error frame a refused client got, once it is closed. */
async function refusal(client: TestClient): Promise<{ code: number; frames: unknown[] }> {
  const { code } = await client.waitForClose(5000);
  return { code, frames: client.frames };
}

const INVALID_UUID = [{ type: 'error', error_code: 'ERR_INVALID_UUID', detail: 'A valid UUID is required.' }];

t.test('two instances on one database: clients on both receive every event of their tenant, once, in order', async (t) => {
  const db = await createTestDatabase(t);
  const [a, b] = await twoInstances(t, db);
  const mark = await outboxPosition(db.pool);
  const clients = [...(await connectAll(t, db, a, ON_A)), ...(await connectAll(t, db, b, ON_B))];
  const workload = startWorkload(t, db.pool, { pause: 5 });
  await workload.waitForMore(90);
  const report = await finishAndCheck(t, db.pool, workload, mark, clients);
  t.ok(report.clients.every((client) => client.owed > 0), 'every client was owed events');
  t.ok(a.app.taskEvents.stats().eventsReceived > 0 && b.app.taskEvents.stats().eventsReceived > 0, 'both instances read the outbox');
});

t.test('a token issued by one instance works once on the other, and is then refused on both', async (t) => {
  const db = await createTestDatabase(t);
  const [a, b] = await twoInstances(t, db);
  const mark = await outboxPosition(db.pool);
  const workload = startWorkload(t, db.pool, { pause: 10 });

  const connected: TrackedClient[] = [];
  for (const [issuer, spender, other, name] of [[a, b, a, 'issued by A, spent on B'], [b, a, b, 'issued by B, spent on A']] as const) {
    const token = await issuer.token(1);
    const client = await joinTracked(t, db.pool, spender, { name, environmentId: 1, objectClassIds: null }, token);
    connected.push(client);
    for (const [where, server] of [['on the issuer', other], ['on the same instance again', spender]] as const) {
      const again = await TestClient.connect(t, server.wsUrl(`/ws/events/tasks/?uuid=${token}`));
      t.same(await refusal(again), { code: 1000, frames: INVALID_UUID }, `${name}: spent again ${where}: ERR_INVALID_UUID, close 1000`);
    }
  }

  // Spent on both at the same moment: exactly one of the two opens a stream.
  const races = 5;
  for (let race = 1; race <= races; race++) {
    const token = await (race % 2 ? a : b).token(2);
    const before = await outboxPosition(db.pool);
    const pair = await Promise.all([a, b].map((server) => TestClient.connect(t, server.wsUrl(`/ws/events/tasks/?uuid=${token}`))));
    const after = await outboxPosition(db.pool);
    await Promise.any(pair.map((client) => client.waitForClose(5000)));
    const refused = pair.filter((client) => client.closed !== null);
    t.equal(refused.length, 1, `race ${race}: one of the two is refused`);
    t.same(refused[0]?.frames, INVALID_UUID, `race ${race}: with ERR_INVALID_UUID`);
    const winner = pair.find((client) => client.closed === null) as TestClient;
    connected.push({
      client: winner,
      record: () => ({ name: `race ${race} winner`, environmentId: 2, objectClassIds: null, frames: winner.frames, start: { before, after } }),
    });
  }
  await workload.waitForMore(30);
  await finishAndCheck(t, db.pool, workload, mark, connected);
});

t.test('closing one instance never disturbs the clients of the other: they keep receiving, nothing lost', async (t) => {
  const db = await createTestDatabase(t);
  const [a, b] = await twoInstances(t, db);
  const mark = await outboxPosition(db.pool);
  const onA = await connectAll(t, db, a, ON_A);
  const onB = await connectAll(t, db, b, ON_B);
  const workload = startWorkload(t, db.pool, { pause: 5 });
  await workload.waitForMore(40);

  // What A owes its clients: every row committed before A has read twice more (the second read
  // began after this snapshot), which its close then flushes.
  const owedByA = await committedIds(db.pool);
  const reads = a.app.taskEvents.events;
  await nextEvent(reads, 'caught-up');
  await nextEvent(reads, 'caught-up');
  const bReceivedBefore = onB.map(({ client }) => client.events.length);
  await a.app.close();
  const closes = await Promise.all(onA.map(({ client }) => client.waitForClose(5000)));
  t.same(closes.map((close) => close.code), [1001, 1001, 1001], "A's clients are closed with 1001");

  // B carries on: its clients receive what is written after A closed, and every earlier event.
  const afterClose = workload.transactions;
  await workload.waitForMore(40);
  t.comment(`${workload.transactions - afterClose} transactions after A closed`);
  await waitUntil(() => onB.every(({ client }, index) => client.events.length > (bReceivedBefore[index] as number)), "B's clients to receive more");
  t.same(onB.filter(({ client }) => client.closed !== null).map(({ record }) => record().name), [], "none of B's clients was closed");
  const report = await finishAndCheck(t, db.pool, workload, mark, onB, onA.map(({ record }) => ({ ...record(), owedOnly: owedByA })));
  t.ok(report.clients.slice(0, onB.length).every((client) => client.owed > 0), "B's clients were owed events");
  t.equal(a.app.taskEvents.stats().connections, 0, 'A has no connection left');
  t.equal(b.app.taskEvents.stats().connections, onB.length, 'B has all of its own');
});

t.test('one instance pruning every second never takes an event the other has yet to send', async (t) => {
  const db = await createTestDatabase(t);
  // The checker reads the copy: the outbox itself loses rows to the pruner.
  await keepOutboxCopy(db.pool);
  const pruner = await startServer(t, db, { outboxRetention: 1000, pruneInterval: 100 });
  const other = await startServer(t, db);
  const mark = await outboxPosition(db.pool);
  const clients = [...(await connectAll(t, db, pruner, ON_A)), ...(await connectAll(t, db, other, ON_B))];
  const workload = startWorkload(t, db.pool, { pause: 5 });
  const pruned = async (): Promise<{ pruned: number; all: number }> => {
    const { rows } = await db.pool.query(`SELECT (SELECT count(*) FROM ${OUTBOX_COPY}) AS all, (SELECT count(*) FROM task_events.outbox) AS kept`);
    return { pruned: Number(rows[0].all) - Number(rows[0].kept), all: Number(rows[0].all) };
  };
  await waitUntil(async () => (await pruned()).pruned > 0, 'the pruner to delete rows', 10_000, 100);
  await workload.waitForMore(60);
  const { pruned: deleted, all } = await pruned();
  t.ok(deleted > 0, `${deleted} of ${all} rows pruned while the clients received`);
  await finishAndCheck(t, db.pool, workload, mark, clients, [], OUTBOX_COPY);
});

t.test('rows of a transaction open longer than the retention are not pruned before the other instance has read them', async (t) => {
  const role = await createAppRole(t);
  const db = await createTestDatabase(t);
  await role.grant(db);
  await keepOutboxCopy(db.pool);
  const retention = 1000;
  // It prunes when told to, here; its timer would do the same a moment later.
  const pruner = await startServer(t, db, { outboxRetention: retention, pruneInterval: 600_000 });
  const applicationName = 'te_instances_reader';
  const reader = await startServer(t, db, { connectionString: role.url(db, applicationName) });
  await waitForListenBackend(db, applicationName);
  const mark = await outboxPosition(db.pool);
  const clients = await connectAll(t, db, reader, [ON_B[0] as ClientSpec, { name: 'B globex', environmentId: 2, objectClassIds: null }]);
  const workload = startWorkload(t, db.pool, { pause: 20 });

  // A long transaction (a migration, a bulk UPDATE): its rows are created when it begins.
  const slow = await db.pool.connect();
  t.teardown(() => slow.release());
  await slow.query('BEGIN');
  const { rows } = await slow.query<{ id: string }>(
    `INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'long'), (1, 2, 'long'), (2, 4, 'long') RETURNING id`,
  );
  for (const row of rows) workload.writers.set(Number(row.id), 'long');
  const opened = Date.now();
  await workload.waitForMore(10);
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, opened + retention + 200 - Date.now()))); // open longer than the retention: the point

  // The reader loses its connections for a moment — far less than the retention — as it commits.
  await role.setLogin(false);
  await terminateBackends(db, { user: role.name });
  await waitUntil(async () => (await backends(db, { user: role.name })).length === 0, 'the reader to be cut off');
  const cutOff = Date.now();
  await slow.query('COMMIT');
  const pruned = await pruner.app.taskEvents.prune();
  await role.setLogin(true);
  const outage = Date.now() - cutOff;
  t.ok(outage < retention, `the reader was cut off for ${outage} ms, less than the retention (${retention} ms); the pruner deleted ${pruned?.outbox} rows meanwhile`);
  await waitForListenBackend(db, applicationName, 15_000);
  await workload.waitForMore(10);
  await finishAndCheck(t, db.pool, workload, mark, clients, [], OUTBOX_COPY);
});
