// Hostile input (issue 3, item 8): oversized frames, malformed upgrades, garbage, half-sent requests
// (slowloris) and huge query strings are refused or dropped within a bounded time, spend no token,
// and never disturb a normal client connected from the start.
import type { FastifyInstance } from 'fastify';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { buildApp } from '../example/app.js';
import { SERVER_OPTIONS } from '../example/server-options.js';
import { TestClient } from '../harness/client.js';
import { createTestDatabase, type TestDatabase } from '../harness/db.js';
import { eventsSince, outboxMark } from './helpers/outbox.js';
import { closeCode, frameHeader, RawConnection, upgradeRequest } from './helpers/raw.js';
import { startServer } from './helpers/server.js';

/** True while the token has not been spent (only its hash is stored). */
async function unspent(db: TestDatabase, token: string): Promise<boolean> {
  const { rows } = await db.pool.query(`SELECT used_at FROM task_events.tokens WHERE token_hash = sha256(convert_to($1, 'UTF8'))`, [token]);
  return rows.length === 1 && rows[0].used_at === null;
}

function portOf(app: FastifyInstance): number {
  const address = app.server.address();
  return typeof address === 'object' && address ? address.port : 0;
}

async function insertTask(db: TestDatabase, name: string): Promise<number> {
  const { rows } = await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, $1) RETURNING id`, [name]);
  return Number(rows[0].id);
}

/** Writes a task and waits until `client` has received it. */
async function stillServed(t: Test, db: TestDatabase, client: TestClient, name: string): Promise<void> {
  const id = await insertTask(db, name);
  await client.waitFor(() => client.events.some((e) => e.task_id === id), `task ${id} (${name})`);
  t.equal(client.closed, null, `${name}: the client is still connected`);
}

t.test('hostile input against the plugin', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db);
  const port = portOf(server.app);
  const mark = await outboxMark(db.pool);
  // A normal client connected before any abuse: it must receive every event of the whole test.
  const witness = await TestClient.connect(t, await server.endpoint());
  const sockets = (): number => server.app.websocketServer.clients.size;

  t.test('a client frame over 4 KiB closes that socket with 1009; 4 KiB exactly is an ordinary frame', async (t) => {
    const exact = await TestClient.connect(t, await server.endpoint());
    exact.socket.send(Buffer.alloc(4096, 'x'));
    t.equal((await exact.waitForClose()).code, 1000, 'a 4096-byte frame gets the contract error');
    t.match(exact.frames, [{ error_code: 'RECEIVE_NOT_SUPPORTED' }]);

    const oversized = await TestClient.connect(t, await server.endpoint());
    oversized.socket.send(Buffer.alloc(4097, 'x'));
    t.equal((await oversized.waitForClose()).code, 1009, 'Message Too Big');

    // Fragments of 3,000 bytes: none is too big, the message they make is.
    const fragmented = await TestClient.connect(t, await server.endpoint());
    fragmented.socket.send(Buffer.alloc(3000, 'x'), { fin: false });
    fragmented.socket.send(Buffer.alloc(3000, 'x'), { fin: true });
    t.equal((await fragmented.waitForClose()).code, 1009, 'a fragmented message over 4 KiB');

    const later = await TestClient.connect(t, await server.endpoint());
    await stillServed(t, db, later, 'after oversized frames');
    await stillServed(t, db, witness, 'witness after oversized frames');
  });

  t.test('a frame header announcing 1 GiB is refused at once with 1009, before any of its body', async (t) => {
    const raw = await RawConnection.open(t, port);
    raw.write(upgradeRequest(`/ws/events/tasks/?uuid=${await server.token()}`));
    await raw.waitFor(() => raw.status === 101, 'the 101');
    raw.write(frameHeader(0x2, 2 ** 30));
    await raw.waitForClose();
    t.equal(closeCode(raw.afterHead), 1009, 'close frame 1009 without waiting for the body');
  });

  t.test('malformed upgrades get a 4xx, spend no token and upgrade nothing', async (t) => {
    const cases: Array<{ name: string; headers: Record<string, string | null> }> = [
      { name: 'no Sec-WebSocket-Key', headers: { 'Sec-WebSocket-Key': null } },
      { name: 'a Sec-WebSocket-Key that is not 16 bytes in base64', headers: { 'Sec-WebSocket-Key': 'c2hvcnQ=' } },
      { name: 'no Sec-WebSocket-Version', headers: { 'Sec-WebSocket-Version': null } },
      { name: 'Sec-WebSocket-Version: 12', headers: { 'Sec-WebSocket-Version': '12' } },
      // ws itself still accepts version 8 (a 2011 draft); the route refuses it with the rest.
      { name: 'Sec-WebSocket-Version: 8', headers: { 'Sec-WebSocket-Version': '8' } },
      { name: 'Upgrade: h2c', headers: { Upgrade: 'h2c' } },
      { name: 'a malformed Sec-WebSocket-Protocol', headers: { 'Sec-WebSocket-Protocol': 'chat,,chat' } },
    ];
    const before = sockets();
    for (const { name, headers } of cases) {
      const token = await server.token();
      const raw = await RawConnection.open(t, port);
      raw.write(upgradeRequest(`/ws/events/tasks/?uuid=${token}`, headers));
      await raw.waitForClose();
      t.ok(raw.status !== null && raw.status >= 400 && raw.status < 500, `${name}: 4xx (got ${raw.status})`);
      t.ok(await unspent(db, token), `${name}: the token is not spent`);
      t.equal(sockets(), before, `${name}: no socket upgraded`);
    }

    // The same request with a valid key and version is upgraded: the cases above differ by their header only.
    const token = await server.token();
    const valid = await RawConnection.open(t, port);
    valid.write(upgradeRequest(`/ws/events/tasks/?uuid=${token}`));
    await valid.waitFor(() => valid.status === 101, 'the 101 of a valid raw upgrade');
    t.notOk(await unspent(db, token), 'a valid upgrade spends its token');
    valid.socket.destroy();
    await stillServed(t, db, witness, 'witness after malformed upgrades');
  });

  t.test('garbage bytes get a 400 and the connection is closed', async (t) => {
    const garbage: Array<string | Buffer> = [
      Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]), // a TLS ClientHello
      '\x00\x01\x02\x03garbage\r\n\r\n',
      'GET /ws/events/tasks/ HTTP/9.9\r\n\r\n',
      'GET /ws/events/tasks/ HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n', // a header without a colon
    ];
    for (const bytes of garbage) {
      const raw = await RawConnection.open(t, port);
      raw.write(bytes);
      await raw.waitForClose(5_000);
      t.equal(raw.status, 400, `400 for ${JSON.stringify(bytes.toString('latin1').slice(0, 24))}`);
    }
    await stillServed(t, db, witness, 'witness after garbage');
  });

  t.test('a huge query string is refused with 431 and upgrades nothing; a long one gets ERR_INVALID_UUID', async (t) => {
    const before = sockets();
    const huge = await RawConnection.open(t, port);
    huge.write(upgradeRequest(`/ws/events/tasks/?uuid=${'0'.repeat(64 * 1024)}`));
    await huge.waitForClose();
    t.equal(huge.status, 431, 'Request Header Fields Too Large (Node\'s 16 KiB header limit)');
    t.equal(sockets(), before, 'no socket upgraded');

    // Just under the limit the contract applies: the upgrade succeeds, the token is refused.
    const long = await TestClient.connect(t, server.wsUrl(`/ws/events/tasks/?uuid=${'0'.repeat(12 * 1024)}`));
    t.equal((await long.waitForClose()).code, 1000);
    t.match(long.frames, [{ error_code: 'ERR_INVALID_UUID' }]);
    await stillServed(t, db, witness, 'witness after huge query strings');
  });

  t.test('the witness received every event of the test, once, in order, and is still connected', async (t) => {
    await stillServed(t, db, witness, 'witness at the end');
    const written = (await eventsSince(db.pool, mark)).filter((e) => e.environment_id === 1);
    t.same(witness.events.map((e) => [e.event, e.task_id]), written.map((e) => [e.event, e.task_id]));
  });
});

/** The example's settings with every timeout shortened, so surviving them several times over is quick. */
const SHORT_OPTIONS = {
  connectionTimeout: 1_000,
  requestTimeout: 1_000,
  keepAliveTimeout: 1_000,
  forceCloseConnections: 'idle',
  http: { headersTimeout: 500, connectionsCheckingInterval: 100 },
} as const;

async function startExample(t: Test, db: TestDatabase, serverOptions: Parameters<typeof buildApp>[1]): Promise<FastifyInstance> {
  const app = await buildApp({ databaseUrl: db.url, logLevel: 'silent', taskEvents: { messageTime: 100, rateLimit: false } }, serverOptions);
  t.teardown(() => app.close());
  await app.listen({ port: 0, host: '127.0.0.1' });
  return app;
}

async function connectExample(t: Test, app: FastifyInstance): Promise<TestClient> {
  const token = await app.taskEvents.issueToken({ environmentId: 1, userId: 1 });
  return TestClient.connect(t, `ws://127.0.0.1:${portOf(app)}/ws/events/tasks/?uuid=${token}`);
}

/** Half-sent requests; each must be answered 408 and closed by the header deadline. */
const SLOWLORIS: Record<string, (raw: RawConnection) => void> = {
  'a connection that sends nothing': () => {},
  'half a request line': (raw) => raw.write('GET /ws/events/tas'),
  'an upgrade whose headers never end': (raw) => raw.write(upgradeRequest('/ws/events/tasks/?uuid=x').replace(/\r\n\r\n$/, '\r\n')),
  'headers trickled a line every 200 ms': (raw) => {
    raw.write('GET /api/users/ws-auth/ HTTP/1.1\r\n');
    const timer = setInterval(() => raw.write('X-Slow: 1\r\n'), 200);
    raw.socket.on('close', () => clearInterval(timer));
  },
};

async function slowloris(t: Test, port: number, bound: { min: number; max: number }): Promise<void> {
  await Promise.all(
    Object.entries(SLOWLORIS).map(async ([name, send]) => {
      const raw = await RawConnection.open(t, port);
      send(raw);
      const closedAfter = await raw.waitForClose(bound.max + 5_000);
      t.equal(raw.status, 408, `${name}: 408 Request Timeout`);
      t.ok(closedAfter >= bound.min && closedAfter <= bound.max, `${name}: closed after ${closedAfter} ms, within [${bound.min}, ${bound.max}]`);
    }),
  );
}

t.test('the example server\'s HTTP timeouts', async (t) => {
  const db = await createTestDatabase(t);

  t.test('the settings bound a half-sent request to 10 s', async (t) => {
    const { headersTimeout, connectionsCheckingInterval } = SERVER_OPTIONS.http;
    t.ok(headersTimeout + connectionsCheckingInterval <= 10_000, 'half-sent headers');
    t.ok(SERVER_OPTIONS.requestTimeout + connectionsCheckingInterval <= 10_000, 'half-sent body');
    t.ok(headersTimeout <= SERVER_OPTIONS.requestTimeout, 'Node requires headersTimeout <= requestTimeout');
  });

  t.test('with shortened timeouts: slowloris is dropped, plain HTTP keep-alive ends, a WebSocket outlives them all', async (t) => {
    const app = await startExample(t, db, SHORT_OPTIONS);
    const port = portOf(app);
    const client = await connectExample(t, app);
    const connectedAt = Date.now();
    await slowloris(t, port, { min: 400, max: 1_500 });

    // The settings do reach plain HTTP: an idle keep-alive connection is closed after keepAliveTimeout.
    const keepAlive = await RawConnection.open(t, port);
    keepAlive.write('GET /api/users/ws-auth/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token demo-key-1\r\n\r\n');
    await keepAlive.waitFor(() => keepAlive.status === 200, 'the 200');
    t.ok((await keepAlive.waitForClose(5_000)) < 3_000, 'the idle keep-alive connection is closed');

    // Time passing is the condition here: three times the longest timeout, with no traffic at all.
    await sleep(Math.max(0, connectedAt + 3_000 - Date.now()));
    t.equal(client.closed, null, 'the idle WebSocket is still open after 3 s');
    await stillServed(t, db, client, 'after every HTTP timeout passed three times');
  });

  t.test('with the real settings: slowloris is dropped within the bound while a WebSocket is served', async (t) => {
    const app = await startExample(t, db, SERVER_OPTIONS);
    const port = portOf(app);
    const client = await connectExample(t, app);
    const { headersTimeout, connectionsCheckingInterval } = SERVER_OPTIONS.http;
    const slowBody = (async () => {
      const raw = await RawConnection.open(t, port);
      raw.write('POST /api/tasks/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token demo-key-1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"name":');
      const closedAfter = await raw.waitForClose(15_000);
      t.equal(raw.status, 408, 'a half-sent body: 408');
      t.ok(closedAfter >= SERVER_OPTIONS.requestTimeout - 100 && closedAfter <= 10_000, `a half-sent body: closed after ${closedAfter} ms`);
    })();
    // Node looks every connectionsCheckingInterval: a deadline is acted on up to that much later (plus a busy CPU's delay).
    await slowloris(t, port, { min: headersTimeout - 100, max: Math.min(10_000, headersTimeout + connectionsCheckingInterval + 2_000) });
    await slowBody;
    t.equal(client.closed, null, 'the WebSocket connected before is still open');
    await stillServed(t, db, client, 'after the real timeouts');
  });
});
