import t from 'tap';
import { TestClient } from '../harness/client.js';
import { createTestDatabase } from '../harness/db.js';
import { nextEvent, startServer } from './helpers/server.js';

t.test('a peer that does not answer pings is dropped; a live client never is', async (t) => {
  const db = await createTestDatabase(t);
  const heartbeatInterval = 150;
  const server = await startServer(t, db, { heartbeatInterval });
  const live = await TestClient.connect(t, await server.endpoint());
  let pings = 0;
  const sixPings = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${pings} pings in 10 s`)), 10_000);
    live.socket.on('ping', () => {
      if (++pings === 6) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  // `autoPong: false`: a peer that is gone but whose socket still looks open.
  const silent = await TestClient.connect(t, await server.endpoint(), { autoPong: false });
  const dropped = nextEvent(server.app.taskEvents.events, 'heartbeat-timeout');
  const started = performance.now();
  await dropped;
  const closed = await silent.waitForClose();
  const after = performance.now() - started;
  t.equal(closed.code, 1006, 'terminated, without a close frame');
  // Dropped at the second beat after it joined, so within two intervals by design; the bound
  // allows four, for the timers of a machine busy with the other test files.
  t.ok(after < heartbeatInterval * 4, `dropped within four intervals (${after.toFixed(0)} ms)`);
  await sixPings;
  t.equal(live.closed, null, 'the live client is still connected');
  t.equal(server.app.taskEvents.stats().connections, 1);
  await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'still here')`);
  await live.waitForEvents(1);
});
