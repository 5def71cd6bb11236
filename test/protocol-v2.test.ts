// Protocol v2 (opt-in by the subprotocol task-events.v2): ready, events with cursors, idle cursor
// frames, resume by cursor with no gap and no overlap (out-of-order commits included), cursor
// errors; and the event_types filter for v1 and v2.
import t, { type Test } from 'tap';
import WebSocket from 'ws';
import { createTestDatabase, type TestDatabase } from '../harness/db.js';
import { startServer, TestClient, type TestServer } from './helpers/server.js';
import { Conditions } from '../harness/conditions.js';

interface V2Event { task_id: number; object_class_id: number; event: string; timestamp: string }
type Frame = { type: 'ready' | 'cursor'; cursor: string } | { type: 'events'; events: V2Event[]; cursor: string } | { type: 'error'; error_code: string; detail: string };

/** A ws client speaking v2 that records its frames. */
class V2Client {
  readonly frames: Frame[] = [];
  closed: number | null = null;
  readonly #conditions = new Conditions();
  constructor(readonly socket: WebSocket) {
    socket.on('message', (data) => {
      this.frames.push(JSON.parse(String(data)) as Frame);
      this.#conditions.check();
    });
    socket.on('close', (code) => {
      this.closed = code;
      this.#conditions.check();
    });
  }

  static async open(t: Test, url: string): Promise<V2Client> {
    const client = new V2Client(new WebSocket(url, ['task-events.v2']));
    t.teardown(() => client.socket.terminate());
    await new Promise((resolve, reject) => {
      client.socket.once('open', resolve);
      client.socket.once('error', reject);
    });
    return client;
  }

  get events(): V2Event[] {
    return this.frames.flatMap((frame) => (frame.type === 'events' ? frame.events : []));
  }

  /** The cursor of the last frame that carried one. */
  get cursor(): string {
    const last = [...this.frames].reverse().find((frame) => 'cursor' in frame) as { cursor: string } | undefined;
    return last?.cursor ?? '';
  }

  waitFor(condition: () => boolean, what: string, timeout = 10_000): Promise<void> {
    return this.#conditions.waitFor(condition, what, timeout, () => JSON.stringify(this.frames).slice(-400));
  }

  async close(): Promise<void> {
    this.socket.close();
    await this.waitFor(() => this.closed !== null, 'close');
  }
}

async function insertTasks(db: TestDatabase, count: number, environmentId = 1, objectClassId = environmentId === 1 ? 1 : 4): Promise<number[]> {
  const { rows } = await db.pool.query<{ id: string }>(
    `INSERT INTO tasks (environment_id, object_class_id, name) SELECT $1, $2, 'v2 ' || n FROM generate_series(1, $3::int) n RETURNING id`,
    [environmentId, objectClassId, count]);
  return rows.map((row) => Number(row.id));
}

const created = (events: V2Event[]): number[] => events.filter((e) => e.event === 'task_created').map((e) => e.task_id);

async function v2(t: Test, server: TestServer, query: Record<string, string> = {}, environmentId = 1): Promise<V2Client> {
  return V2Client.open(t, await server.endpoint(query, environmentId));
}

t.test('v2 is chosen only by the subprotocol: ready first, then events with a cursor', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db);
  const client = await v2(t, server);
  t.equal(client.socket.protocol, 'task-events.v2');
  await client.waitFor(() => client.frames.length >= 1, 'ready');
  t.match(client.frames[0], { type: 'ready', cursor: /^[\w-]+\.[\w-]+$/ });
  const ids = await insertTasks(db, 3);
  await client.waitFor(() => client.events.length >= 3, '3 events');
  t.strictSame(created(client.events), ids);
  const message = client.frames.find((frame) => frame.type === 'events');
  t.match(message, { type: 'events', cursor: /^[\w-]+\.[\w-]+$/ });
  t.match(client.events[0], { task_id: ids[0], object_class_id: 1, event: 'task_created', timestamp: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/ });

  // A v1 client offering some other subprotocol gets none, and bare arrays.
  const v1 = await TestClient.connect(t, await server.endpoint());
  t.equal(v1.socket.protocol, '');
  const other = new WebSocket(await server.endpoint(), ['chat']);
  t.teardown(() => other.terminate());
  const frames: unknown[] = [];
  other.on('message', (data) => frames.push(JSON.parse(String(data))));
  await new Promise((resolve, reject) => { other.once('open', resolve); other.once('error', reject); });
  t.equal(other.protocol, 'chat', 'another subprotocol is selected as before (ws\'s default), and the stream is v1');
  const [next] = await insertTasks(db, 1);
  await v1.waitForEvents(1);
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.match(frames, [[{ task_id: next, event: 'task_created' }]]);
});

t.test('resume: the events written while disconnected, once, then live ones; no gap, no overlap', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { messageTime: 50 });
  const first = await v2(t, server);
  const before = await insertTasks(db, 5);
  await first.waitFor(() => first.events.length >= 5, 'the first 5');
  const cursor = first.cursor;
  await first.close();
  const missed = await insertTasks(db, 7);
  const second = await v2(t, server, { cursor });
  await second.waitFor(() => second.events.length >= 7, 'the 7 missed');
  t.match(second.frames[0], { type: 'ready', cursor });
  const after = await insertTasks(db, 4);
  await second.waitFor(() => second.events.length >= 11, 'the 4 live');
  t.strictSame(created(first.events), before);
  t.strictSame(created(second.events), [...missed, ...after], 'exactly the missed, then the live');
});

t.test('resume from a cursor inside one statement\'s events (messages cut by messageLimit)', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { messageTime: 50, messageLimit: 3 });
  const first = await v2(t, server);
  const ids = await insertTasks(db, 10);
  await first.waitFor(() => first.events.length >= 10, '10 events');
  const messages = first.frames.filter((frame) => frame.type === 'events') as Array<{ events: V2Event[]; cursor: string }>;
  t.ok(messages.every((message) => message.events.length <= 3), 'at most messageLimit a message');
  const cut = messages[1] as { events: V2Event[]; cursor: string };
  const delivered = messages.slice(0, 2).flatMap((message) => message.events).map((event) => event.task_id);
  const second = await v2(t, server, { cursor: cut.cursor });
  const rest = ids.filter((id) => !delivered.includes(id));
  await second.waitFor(() => second.events.length >= rest.length, 'the rest');
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.strictSame(created(second.events).sort((a, b) => a - b), rest, 'exactly the events after the cut');
});

t.test('out-of-order commits: a long transaction holding a lower id, committed after the cursor, is delivered once', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { messageTime: 50 });
  const first = await v2(t, server);
  const long = await db.pool.connect();
  t.teardown(() => long.release());
  await long.query('BEGIN');
  const [lowId] = (await long.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'slow') RETURNING id`)).rows.map((row) => Number(row.id));
  const [highId] = await insertTasks(db, 1);
  await first.waitFor(() => first.events.length >= 1, 'the later id');
  t.strictSame(created(first.events), [highId]);
  const cursor = first.cursor;
  await first.close();
  await long.query('COMMIT');
  const second = await v2(t, server, { cursor });
  await second.waitFor(() => second.events.length >= 1, 'the lower id');
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.ok(lowId! < highId!, 'the slow transaction holds the lower id');
  t.strictSame(created(second.events), [lowId], 'delivered once, after the cursor');
});

t.test('cursors work on another instance, grant nothing, and bad ones are refused', async (t) => {
  const db = await createTestDatabase(t);
  const one = await startServer(t, db, { messageTime: 50 });
  const two = await startServer(t, db, { messageTime: 50 });
  const globex = await v2(t, one, {}, 2);
  const acme = await v2(t, one, {}, 1);
  await insertTasks(db, 2, 2);
  const acmeIds = await insertTasks(db, 2, 1);
  await globex.waitFor(() => globex.events.length >= 2, 'globex events');
  await acme.waitFor(() => acme.events.length >= 2, 'acme events');
  const globexCursor = globex.cursor;
  await acme.close();
  const later = await insertTasks(db, 3, 1);
  await insertTasks(db, 3, 2);

  const other = await v2(t, two, { cursor: acme.cursor });
  await other.waitFor(() => other.events.length >= 3, 'resumed on the other instance');
  t.strictSame(created(other.events), later);

  // Globex's cursor with an Acme token: Acme's events after that point, never Globex's.
  const crossed = await v2(t, two, { cursor: globexCursor }, 1);
  await crossed.waitFor(() => crossed.events.length >= 3, 'acme events');
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.ok(crossed.events.every((event) => event.object_class_id === 1), 'only the token\'s environment');
  t.ok(created(crossed.events).every((id) => acmeIds.includes(id) || later.includes(id)), 'nothing from before the cursor');
  t.ok(later.every((id) => created(crossed.events).includes(id)), 'everything after it');

  for (const [what, cursor] of [
    ['tampered', acme.cursor.replace(/^./, (c) => (c === 'A' ? 'B' : 'A'))],
    ['malformed', 'not-a-cursor'],
    ['signed by nobody', `${Buffer.from('1:2:').toString('base64url')}.${Buffer.alloc(12).toString('base64url')}`],
  ] as const) {
    const refused = await v2(t, one, { cursor });
    await refused.waitFor(() => refused.closed !== null, 'close');
    t.strictSame(refused.frames, [{ type: 'error', error_code: 'ERR_INVALID_CURSOR', detail: 'The cursor is malformed or was not issued by this service.' }], what);
    t.equal(refused.closed, 1000);
  }
});

t.test('a cursor older than the outbox keeps: ERR_CURSOR_EXPIRED', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { messageTime: 50, outboxRetention: 60_000, pruneInterval: 3_600_000 });
  const client = await v2(t, server);
  await insertTasks(db, 1);
  await client.waitFor(() => client.events.length >= 1, 'an event');
  const cursor = client.cursor;
  await client.close();
  await insertTasks(db, 1);
  // The pruner's mark of a round a retention ago, above every transaction of the cursor's (as
  // prune() writes it, but not held back by other tests' open transactions: the mark is the
  // server's oldest running transaction): rows below it may be gone.
  await db.pool.query(`INSERT INTO task_events.prune_horizon (taken_at, oldest_running) VALUES (now() - interval '1 hour', pg_current_xact_id())`);
  const expired = await v2(t, server, { cursor });
  await expired.waitFor(() => expired.closed !== null, 'close');
  t.match(expired.frames, [{ type: 'error', error_code: 'ERR_CURSOR_EXPIRED' }]);
});

t.test('an idle v2 client gets cursor frames, so its cursor never ages out', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { outboxRetention: 2000, pollInterval: 100 });
  const client = await v2(t, server);
  await insertTasks(db, 1, 2); // another tenant's write moves the outbox on
  await client.waitFor(() => client.frames.some((frame) => frame.type === 'cursor'), 'a cursor frame', 5000);
  t.equal(client.events.length, 0);
  const cursor = client.cursor;
  t.not(cursor, (client.frames[0] as { cursor: string }).cursor, 'a newer cursor than ready\'s');
  await client.close();
  const ids = await insertTasks(db, 2);
  const resumed = await v2(t, server, { cursor });
  await resumed.waitFor(() => resumed.events.length >= 2, 'the events after it');
  t.strictSame(created(resumed.events), ids);
});

t.test('a large backlog goes out at once in full messages', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { messageTime: 60_000, messageLimit: 1000, readBatchSize: 700 });
  const first = await v2(t, server);
  await first.waitFor(() => first.frames.length >= 1, 'ready');
  const cursor = first.cursor;
  await first.close();
  const ids = await insertTasks(db, 4500);
  const resumed = await v2(t, server, { cursor });
  const started = Date.now();
  await resumed.waitFor(() => resumed.events.length >= 4500, 'the backlog', 20_000);
  t.ok(Date.now() - started < 10_000, 'not one message per messageTime');
  const sizes = resumed.frames.filter((frame) => frame.type === 'events').map((frame) => (frame as { events: unknown[] }).events.length);
  t.strictSame(sizes, [1000, 1000, 1000, 1000, 500]);
  t.strictSame(created(resumed.events).sort((a, b) => a - b), ids);
});

t.test('event_types filters v1 and v2; an unknown name is ERR_INVALID_EVENT_TYPES', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { messageTime: 50 });
  const v1 = await TestClient.connect(t, await server.endpoint({ event_types: 'task_deleted,task_status_changed' }));
  const client = await v2(t, server, { event_types: 'task_deleted' });
  const [id] = await insertTasks(db, 1);
  await db.pool.query(`UPDATE tasks SET status = 'done' WHERE id = $1`, [id]);
  await db.pool.query('DELETE FROM tasks WHERE id = $1', [id]);
  await v1.waitForEvents(2);
  await client.waitFor(() => client.events.length >= 1, 'the delete');
  t.strictSame(v1.events.map((event) => event.event), ['task_status_changed', 'task_deleted']);
  t.strictSame(client.events.map((event) => event.event), ['task_deleted']);

  for (const connect of [(url: string) => TestClient.connect(t, url), (url: string) => V2Client.open(t, url)]) {
    const refused = await connect(await server.endpoint({ event_types: 'task_created,task_exploded' }));
    await refused.waitFor(() => refused.closed !== null, 'close');
    t.match(refused.frames, [{ type: 'error', error_code: 'ERR_INVALID_EVENT_TYPES' }]);
  }
});


t.test('the seam under load: clients dropping and resuming while writes go on get every event exactly once', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { messageTime: 40, messageLimit: 7 });
  const clientCount = 8;
  // Each logical client: its events across connections, and its last cursor.
  const clients = await Promise.all(Array.from({ length: clientCount }, async () => {
    const first = await v2(t, server);
    await first.waitFor(() => first.frames.length >= 1, 'ready');
    return { connection: first, received: [] as number[], cursor: first.cursor, resumes: 0 };
  }));
  const collect = (client: (typeof clients)[number]): void => {
    client.received.push(...created(client.connection.events));
    client.cursor = client.connection.cursor;
  };
  const written: number[] = [];
  let writing = true;
  const writer = (async () => {
    while (writing) {
      written.push(...(await insertTasks(db, 1 + (written.length % 3))));
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  })();
  const deadline = Date.now() + 3000;
  await Promise.all(clients.map(async (client, index) => {
    while (Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 150 + ((index * 97) % 250)));
      client.connection.socket.terminate(); // abruptly: no close handshake
      collect(client);
      client.connection = await v2(t, server, { cursor: client.cursor });
      client.resumes++;
    }
  }));
  writing = false;
  await writer;
  await Promise.all(clients.map((client) => client.connection.waitFor(
    () => client.received.length + created(client.connection.events).length >= written.length, 'every event', 20_000)));
  for (const [index, client] of clients.entries()) {
    collect(client);
    t.equal(new Set(client.received).size, client.received.length, `client ${index}: no duplicate (${client.resumes} resumes)`);
    t.strictSame([...client.received].sort((a, b) => a - b), [...written].sort((a, b) => a - b), `client ${index}: every event`);
  }
  t.ok(clients.every((client) => client.resumes >= 5), 'each client resumed several times');
});
