// "Only the events of the token's environment. Never another tenant's." — including the events
// the plugin reads while a client's handshake is under way, which the hub replays to the client
// when it joins. A host app's own async hook (here a preHandler that waits for the plugin to read
// what was just written) holds the handshake open between the outbox position and the join.
import Fastify from 'fastify';
import t from 'tap';
import { TestClient } from '../harness/client.js';
import { createTestDatabase } from '../harness/db.js';
import { checkDelivery } from '../harness/delivery/check.js';
import { readOutbox } from '../harness/delivery/outbox.js';
import { settle, track } from '../harness/delivery/tracked.js';
import taskEvents from '../lib/index.js';
import { assertDelivered } from './helpers/delivery.js';
import { nextEvent } from './helpers/server.js';

t.test("events of other tenants read during a client's handshake never reach it", async (t) => {
  const db = await createTestDatabase(t);
  const app = Fastify({ logger: false });
  let holdHandshake = false;
  // A host hook after the plugin's handshake (preValidation) and before the upgrade: events are
  // written and read by the plugin meanwhile, above the client's position.
  app.addHook('preHandler', async (request) => {
    if (!request.ws || !holdHandshake) return;
    const read = nextEvent(app.taskEvents.events, 'caught-up', (detail: { events: number }) => detail.events > 0);
    await db.pool.query(
      `INSERT INTO tasks (environment_id, object_class_id, name) VALUES (2, 4, 'globex, during the handshake'), (1, 2, 'acme 2, during the handshake'), (1, 1, 'acme 1, during the handshake')`,
    );
    await read;
  });
  await app.register(taskEvents, { connectionString: db.url, messageTime: 100, rateLimit: false, pollInterval: 500 });
  await app.listen({ port: 0, host: '127.0.0.1' });
  t.teardown(() => app.close());
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  const clients = [];
  for (const [name, environmentId, objectClassIds] of [['acme', 1, null], ['acme 1', 1, [1]], ['globex', 2, null]] as const) {
    const query = new URLSearchParams({ uuid: await app.taskEvents.issueToken({ environmentId, userId: environmentId }) });
    if (objectClassIds) query.set('object_class_ids', objectClassIds.join(','));
    holdHandshake = true;
    clients.push(await track(db.pool, { name, environmentId, objectClassIds, connect: () => TestClient.connect(t, `ws://127.0.0.1:${port}/ws/events/tasks/?${query}`) }));
    holdHandshake = false;
  }
  const late = await settle(db.pool, clients);
  assertDelivered(t, checkDelivery(await readOutbox(db.pool), clients.map((client) => client.record())));
  t.same(late, [], 'every client got its sentinels');
});
