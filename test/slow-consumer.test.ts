import t from 'tap';
import type { Socket } from 'node:net';
import { TestClient } from '../harness/client.js';
import { createTestDatabase } from '../harness/db.js';
import { nextEvent, startServer } from './helpers/server.js';

t.test('a client that stops reading is closed with 1013; the others of its group are not delayed', async (t) => {
  const db = await createTestDatabase(t);
  const maxBufferedBytes = 256 * 1024;
  const server = await startServer(t, db, { maxBufferedBytes, messageLimit: 1000, messageTime: 100 });
  const reader = await TestClient.connect(t, await server.endpoint());
  const stalled = await TestClient.connect(t, await server.endpoint());
  const tcp = (stalled.socket as unknown as { _socket: Socket })._socket;
  tcp.pause(); // stops reading: what the server sends piles up in the kernel, then in the server

  const slow = nextEvent<{ bufferedAmount: number }>(server.app.taskEvents.events, 'slow-consumer', () => true, 30_000);
  // On loopback the kernel takes about 4 MB (the reader's receive buffer, our send buffer) before
  // anything waits in the server: 50,000 events (about 5.5 MB) are sure to go past both.
  const total = 50_000;
  const started = performance.now();
  for (let i = 0; i < total / 5000; i++) {
    await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) SELECT 1, 1, 'flood' FROM generate_series(1, 5000)`);
  }
  const detail = await slow;
  t.ok(detail.bufferedAmount > maxBufferedBytes, `closed with ${detail.bufferedAmount} bytes unsent`);
  t.equal(server.app.taskEvents.stats().slowConsumersClosed, 1);
  await reader.waitForEvents(total, 30_000);
  const elapsed = performance.now() - started;
  t.equal(new Set(reader.events.map((e) => e.task_id)).size, total, 'the reading client got every event once');
  t.ok(elapsed < 20_000, `the reading client was not held up (${elapsed.toFixed(0)} ms for ${total} events)`);
  t.equal(server.app.taskEvents.stats().connections, 1, 'only the reading client is left');

  tcp.resume(); // reads its backlog, then the close frame
  const closed = await stalled.waitForClose(10_000);
  t.equal(closed.code, 1013);
  t.match(closed.reason, /too slow/);
});
