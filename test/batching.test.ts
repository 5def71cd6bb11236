import t from 'tap';
import { TestClient, type ReceivedEvent } from '../harness/client.js';
import { createTestDatabase } from '../harness/db.js';
import { nextEvent, startServer } from './helpers/server.js';

const insertTasks = (count: number, environmentId = 1, objectClassId = 1): string =>
  `INSERT INTO tasks (environment_id, object_class_id, name)
   SELECT ${environmentId}, ${objectClassId}, 'task ' || n FROM generate_series(1, ${count}) AS n`;

function ascending(message: ReceivedEvent[]): boolean {
  return message.every((event, i) => i === 0 || (message[i - 1] as ReceivedEvent).timestamp <= event.timestamp);
}

t.test('messageLimit events waiting are sent at once, without waiting for the timer', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { messageTime: 60_000, messageLimit: 1000 });
  const client = await TestClient.connect(t, await server.endpoint());
  await db.pool.query(insertTasks(2500));
  await client.waitFor(() => client.messages.length >= 2, 'two full messages', 10_000);
  t.same(client.messages.map((m) => m.length), [1000, 1000], 'the remaining 500 wait for messageTime');
  await server.app.close(); // shutdown flushes what waits
  await client.waitForClose();
  t.same(client.messages.map((m) => m.length), [1000, 1000, 500]);
  t.equal(client.closed?.code, 1001);
  t.same(client.events.map((e) => e.task_id), [...client.events.map((e) => e.task_id)].sort((a, b) => a - b), 'creation order');
});

t.test('a message is sent when messageTime has passed since the last send, and never empty', async (t) => {
  const db = await createTestDatabase(t);
  const messageTime = 400;
  const server = await startServer(t, db, { messageTime });
  const client = await TestClient.connect(t, await server.endpoint());
  const arrivals: number[] = [];
  client.socket.on('message', () => arrivals.push(performance.now()));
  const writes = 24;
  for (let i = 0; i < writes; i++) {
    await db.pool.query(insertTasks(1));
    await new Promise((resolve) => setTimeout(resolve, 50)); // pacing the writer, not waiting for a result
  }
  await client.waitForEvents(writes);
  t.ok(client.messages.length >= 2 && client.messages.length < writes, `events were batched (${client.messages.length} messages for ${writes} writes)`);
  for (let i = 1; i < arrivals.length; i++) {
    const gap = (arrivals[i] as number) - (arrivals[i - 1] as number);
    t.ok(gap >= messageTime - 50, `message ${i} came ${gap.toFixed(0)} ms after the one before`);
  }
  t.ok(client.messages.every((m) => m.length > 0), 'no empty message');
  t.equal(client.frames.length, client.messages.length, 'only arrays were sent');
});

t.test('within each message events are in ascending timestamp, and each is sent once', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { messageTime: 200, messageLimit: 50 });
  const client = await TestClient.connect(t, await server.endpoint());
  // Four writers at once: their transactions interleave and commit in any order.
  await Promise.all([1, 2, 3, 4].map(async () => {
    for (let i = 0; i < 25; i++) await db.pool.query(insertTasks(2));
  }));
  await client.waitForEvents(200);
  t.ok(client.messages.every(ascending), 'each message ascends by timestamp');
  t.ok(client.messages.every((m) => m.length <= 50), 'no message over messageLimit');
  const { rows } = await db.pool.query(`SELECT task_id FROM task_events.outbox ORDER BY task_id`);
  t.same(client.events.map((e) => e.task_id).sort((a, b) => a - b), rows.map((r) => Number(r.task_id)), 'every event exactly once');
});

t.test('clients of one environment and filter receive identical messages', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { messageTime: 150, messageLimit: 30 });
  const first = await TestClient.connect(t, await server.endpoint());
  const second = await TestClient.connect(t, await server.endpoint());
  for (let i = 0; i < 5; i++) await db.pool.query(insertTasks(20));
  await first.waitForEvents(100);
  await second.waitForEvents(100);
  t.same(second.frames, first.frames);
});

t.test('a client that connects mid-stream gets every event from its start on, once, in order', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { messageTime: 100 });
  const early = await TestClient.connect(t, await server.endpoint());
  const committed: number[] = [];
  const total = 120;
  const writer = (async () => {
    for (let i = 0; i < total; i++) {
      const { rows } = await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'seq') RETURNING id`);
      committed.push(Number(rows[0].id));
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  })();
  await early.waitFor(() => committed.length >= total / 3, 'a third of the writes');
  const url = await server.endpoint();
  const committedBeforeLate = committed.length;
  const lateClient = await TestClient.connect(t, url);
  const openedAfter = committed.length;
  await writer;
  await early.waitForEvents(total);
  await lateClient.waitFor(() => lateClient.events.at(-1)?.task_id === committed.at(-1), 'the last write');
  t.same(early.events.map((e) => e.task_id), committed, 'the early client got all, in order');
  const received = lateClient.events.map((e) => e.task_id);
  const start = committed.indexOf(received[0] as number);
  t.ok(start >= committedBeforeLate, 'nothing committed before the handshake started');
  // The writer has one write in flight at a time, and a write is recorded when its answer comes
  // back, after its commit: at the open, one more than recorded may have committed already.
  t.ok(start <= openedAfter + 1, 'nothing committed after the socket opened is missing');
  t.same(received, committed.slice(start), 'a contiguous suffix: no gap, no duplicate');
});

t.test('an event read late goes to the clients that were connected before it, not to a newer one', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { messageTime: 100, pollInterval: 1000 });
  const older = await TestClient.connect(t, await server.endpoint());
  await nextEvent(server.app.taskEvents.events, 'caught-up'); // the next poll is about a second away
  // Written straight into the outbox: no NOTIFY, so only the poll will read it, after `newer` opened.
  await db.pool.query(`INSERT INTO task_events.outbox (environment_id, task_id, object_class_id, event) VALUES (1, 900001, 1, 'task_created')`);
  const newer = await TestClient.connect(t, await server.endpoint());
  t.equal(server.app.taskEvents.stats().eventsReceived, 0, 'not read yet when the newer client opened');
  await older.waitForEvents(1);
  const { rows } = await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'both') RETURNING id`);
  const both = Number(rows[0].id);
  await older.waitFor(() => older.events.some((e) => e.task_id === both), 'the later task');
  await newer.waitFor(() => newer.events.some((e) => e.task_id === both), 'the later task');
  t.same(older.events.map((e) => e.task_id), [900001, both]);
  t.same(newer.events.map((e) => e.task_id), [both]);
  // And once the newer client is back in step, the two share messages again.
  await db.pool.query(insertTasks(3));
  await older.waitForEvents(5);
  await newer.waitForEvents(4);
  t.same(newer.messages.at(-1), older.messages.at(-1));
});
