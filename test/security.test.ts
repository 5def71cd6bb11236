// Issue 5: who may connect. The Origin allowlist (403 before any upgrade, no token spent), the
// caps on open connections (the newest over a cap is refused, earlier sockets are untouched, a
// closed socket frees its slot) and tokens kept out of the logs on every path.
import Fastify from 'fastify';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import t, { type Test } from 'tap';
import { TestClient } from '../harness/client.js';
import { createTestDatabase, type TestDatabase } from '../harness/db.js';
import taskEvents, { ERRORS } from '../lib/index.js';
import { startServer, type TestServer } from './helpers/server.js';

/** True while the token has not been spent (only its hash is stored). */
async function unspent(db: TestDatabase, token: string): Promise<boolean> {
  const { rows } = await db.pool.query(`SELECT used_at FROM task_events.tokens WHERE token_hash = sha256(convert_to($1, 'UTF8'))`, [token]);
  return rows.length === 1 && rows[0].used_at === null;
}

const errorOf = (code: keyof typeof ERRORS) => ({ type: 'error', error_code: code, detail: ERRORS[code] });

/** A WebSocket handshake by hand, so a refusal's status and body can be read. */
function handshake(server: TestServer, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const url = new URL(server.wsUrl(path));
  return new Promise((resolve, reject) => {
    const request = http.get({
      agent: false, // a socket refused or upgraded is never reused
      host: url.hostname, port: url.port, path: url.pathname + url.search,
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers },
    });
    request.on('upgrade', (response, socket) => {
      socket.destroy();
      resolve({ status: response.statusCode ?? 0, body: '' });
    });
    request.on('response', (response) => {
      let body = '';
      response.on('data', (chunk) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    });
    request.on('error', reject);
  });
}

/** Resolves once `condition` holds (checked every 20 ms); rejects after `timeout` ms. */
async function until(condition: () => boolean, what: string, timeout = 10_000): Promise<void> {
  const deadline = Date.now() + timeout;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function insertTask(db: TestDatabase, environmentId: number, objectClassId: number, name: string): Promise<number> {
  const { rows } = await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES ($1, $2, $3) RETURNING id`, [environmentId, objectClassId, name]);
  return Number(rows[0].id);
}

/** Asserts that every client in `clients` still receives events (one task written per environment). */
async function stillServed(t: Test, db: TestDatabase, clients: [TestClient, number][], what: string): Promise<void> {
  const ids = new Map<number, number>();
  for (const environmentId of new Set(clients.map(([, e]) => e))) ids.set(environmentId, await insertTask(db, environmentId, environmentId === 1 ? 1 : 4, what));
  for (const [client, environmentId] of clients) {
    await client.waitFor(() => client.events.some((e) => e.task_id === ids.get(environmentId)), `${what}: task of environment ${environmentId}`);
    t.equal(client.closed, null, `${what}: still connected`);
  }
}

t.test('Origin allowlist', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { allowedOrigins: ['https://App.example.com', 'http://localhost:8080'] });

  t.test('a listed Origin connects, compared case-insensitively', async (t) => {
    for (const origin of ['https://app.example.com', 'HTTPS://APP.EXAMPLE.COM', 'http://localhost:8080']) {
      const client = await TestClient.connect(t, await server.endpoint(), { origin });
      t.equal(client.socket.readyState, client.socket.OPEN, origin);
      client.socket.close();
    }
  });

  t.test('any other Origin gets 403 with a JSON message before any upgrade, and spends no token', async (t) => {
    const origins = ['https://evil.example', 'https://app.example.com.evil.example', 'http://app.example.com', 'https://app.example.com:8443', 'http://localhost', 'null', ''];
    for (const origin of origins) {
      const token = await server.token();
      const answer = await handshake(server, `/ws/events/tasks/?uuid=${token}`, { origin });
      t.equal(answer.status, 403, `'${origin}'`);
      t.same(JSON.parse(answer.body), { statusCode: 403, error: 'Forbidden', message: 'This Origin may not open task events.' }, `'${origin}'`);
      t.ok(await unspent(db, token), `'${origin}' spends no token`);
    }
    const rejected = await TestClient.connect(t, await server.endpoint(), { origin: 'https://evil.example' }).catch((error: { statusCode?: number }) => error);
    t.equal((rejected as { statusCode?: number }).statusCode, 403, 'a ws client sees the 403');
    t.equal(server.app.websocketServer.clients.size, 0, 'no socket was upgraded');
  });

  t.test('no Origin header (a server-to-server client) is allowed', async (t) => {
    const answer = await handshake(server, `/ws/events/tasks/?uuid=${await server.token()}`);
    t.equal(answer.status, 101);
  });

  t.test('requireOrigin refuses a handshake without Origin, still spending no token', async (t) => {
    const strict = await startServer(t, db, { allowedOrigins: ['https://app.example.com'], requireOrigin: true });
    const token = await strict.token();
    t.equal((await handshake(strict, `/ws/events/tasks/?uuid=${token}`)).status, 403);
    t.ok(await unspent(db, token));
    t.equal((await handshake(strict, `/ws/events/tasks/?uuid=${token}`, { origin: 'https://app.example.com' })).status, 101);
  });

  t.test('without a list every Origin is allowed', async (t) => {
    const open = await startServer(t, db);
    t.equal((await handshake(open, `/ws/events/tasks/?uuid=${await open.token()}`, { origin: 'https://anywhere.example' })).status, 101);
  });
});

t.test('connection caps', async (t) => {
  const db = await createTestDatabase(t);

  t.test('maxConnectionsPerUser: the newest socket over the cap gets ERR_RATE_LIMIT_EXCEEDED; the earlier ones keep receiving; a close frees the slot', async (t) => {
    const server = await startServer(t, db, { maxConnectionsPerUser: 2 });
    const first = await TestClient.connect(t, await server.endpoint());
    const second = await TestClient.connect(t, await server.endpoint());
    const bob = await TestClient.connect(t, await server.endpoint({}, 2));
    const third = await TestClient.connect(t, await server.endpoint());
    t.equal((await third.waitForClose()).code, 1000);
    t.same(third.frames, [errorOf('ERR_RATE_LIMIT_EXCEEDED')]);
    await stillServed(t, db, [[first, 1], [second, 1], [bob, 2]], 'after the refusal');
    first.socket.close();
    await first.waitForClose();
    await until(() => server.app.taskEvents.stats().connections === 2, 'the server to see the close');
    const again = await TestClient.connect(t, await server.endpoint());
    await stillServed(t, db, [[second, 1], [again, 1]], 'the freed slot is taken');
  });

  t.test('maxConnectionsPerIp counts per client address, before the token is spent', async (t) => {
    const server = await startServer(t, db, { maxConnectionsPerIp: 2 });
    const alice = await TestClient.connect(t, await server.endpoint());
    const bob = await TestClient.connect(t, await server.endpoint({}, 2));
    const token = await server.token();
    const over = await TestClient.connect(t, server.wsUrl(`/ws/events/tasks/?uuid=${token}`));
    t.equal((await over.waitForClose()).code, 1000);
    t.same(over.frames, [errorOf('ERR_RATE_LIMIT_EXCEEDED')]);
    t.ok(await unspent(db, token), 'a full address spends no token');
    // Another loopback address is another client.
    const elsewhere = await TestClient.connect(t, server.wsUrl(`/ws/events/tasks/?uuid=${token}`), { localAddress: '127.0.0.2' });
    await stillServed(t, db, [[alice, 1], [bob, 2], [elsewhere, 1]], 'other addresses and earlier sockets');
  });

  t.test('maxConnections caps the process; a socket that vanishes without a close frame frees its slot too', async (t) => {
    const server = await startServer(t, db, { maxConnections: 1 });
    const only = await TestClient.connect(t, await server.endpoint());
    const bob = await TestClient.connect(t, await server.endpoint({}, 2));
    await bob.waitForClose();
    t.same(bob.frames, [errorOf('ERR_RATE_LIMIT_EXCEEDED')]);
    await stillServed(t, db, [[only, 1]], 'the first socket');
    only.socket.terminate(); // no close frame: the server notices the TCP close
    await until(() => server.app.taskEvents.stats().connections === 0, 'the server to see the TCP close');
    const next = await TestClient.connect(t, await server.endpoint({}, 2));
    await stillServed(t, db, [[next, 2]], 'after the close');
  });

  t.test('0 means no cap', async (t) => {
    const server = await startServer(t, db, { maxConnectionsPerUser: 0, maxConnectionsPerIp: 0, maxConnections: 0 });
    const clients: [TestClient, number][] = [];
    for (let i = 0; i < 5; i++) clients.push([await TestClient.connect(t, await server.endpoint()), 1]);
    await stillServed(t, db, clients, 'five of one user');
  });
});

/** Everything a Fastify logger writes, as text. */
function captureLogs(): { stream: Writable; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      chunks.push(String(chunk));
      callback();
    },
  });
  return { stream, text: () => chunks.join('') };
}

t.test('no token value reaches a log, on success or on any error path', async (t) => {
  const db = await createTestDatabase(t);
  const logs = captureLogs();
  const start = async (options: Parameters<typeof taskEvents>[1]): Promise<TestServer> => {
    const app = Fastify({ logger: { level: 'info', stream: logs.stream } });
    await app.register(taskEvents, { connectionString: db.url, messageTime: 100, pollInterval: 500, ...options });
    await app.listen({ port: 0, host: '127.0.0.1' });
    t.teardown(() => app.close());
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    const wsUrl = (path: string): string => `ws://127.0.0.1:${port}${path}`;
    const token = (environmentId = 1): Promise<string> => app.taskEvents.issueToken({ environmentId, userId: environmentId });
    return { app, wsUrl, token, endpoint: async (query = {}) => wsUrl(`/ws/events/tasks/?${new URLSearchParams({ uuid: await token(), ...query })}`) };
  };
  const server = await start({ rateLimit: { max: 5, timeWindow: 60_000 }, allowedOrigins: ['https://app.example.com'] });
  const tokens: string[] = [];
  const mint = async (): Promise<string> => {
    const token = await server.token();
    tokens.push(token);
    return token;
  };
  // Five attempts count (good, reused, unknown, expired, bad filter; the 403, the wrong path and
  // the plain GET do not): the sixth is over the limit.
  const connect = async (path: string, options = {}): Promise<TestClient> => TestClient.connect(t, server.wsUrl(path), options);

  const good = await connect(`/ws/events/tasks/?uuid=${await mint()}`);
  const used = tokens[0] as string;
  const reused = await connect(`/ws/events/tasks/?uuid=${used}`);
  await reused.waitForClose();
  const unknown = crypto.randomUUID();
  tokens.push(unknown);
  await (await connect(`/ws/events/tasks?uuid=${unknown}`)).waitForClose();
  const expired = await mint();
  await db.pool.query(`UPDATE task_events.tokens SET expires_at = now() - interval '1 second' WHERE used_at IS NULL`);
  await (await connect(`/ws/events/tasks/?object_class_ids=1&uuid=${expired}`)).waitForClose();
  const badFilter = await mint();
  await (await connect(`/ws/events/tasks/?uuid=${badFilter}&object_class_ids=x`)).waitForClose();
  const encoded = await mint(); // the query parser decodes names: %75uid is uuid
  await server.app.inject({ method: 'GET', url: `/ws/events/tasks/?object_class_ids=1&%75uid=${encoded}` });
  const foreign = await mint();
  await connect(`/ws/events/tasks/?uuid=${foreign}`, { origin: 'https://evil.example' }).catch(() => {});
  const wrongPath = await mint();
  await (await connect(`/ws/events/taskz/?uuid=${wrongPath}`)).waitForClose();
  const plain = await mint();
  await server.app.inject({ method: 'GET', url: `/ws/events/tasks/?uuid=${plain}` });
  const limited = await mint();
  const refused = await connect(`/ws/events/tasks/?uuid=${limited}`);
  await refused.waitForClose();
  t.same(refused.frames, [errorOf('ERR_RATE_LIMIT_EXCEEDED')], 'the rate limit was reached');
  good.socket.close();
  await good.waitForClose();

  const failing = await start({ rateLimit: false, authenticate: () => Promise.reject(new Error('the token service is down')) });
  const boom = crypto.randomUUID();
  tokens.push(boom);
  const refusedWith500 = await TestClient.connect(t, failing.wsUrl(`/ws/events/tasks/?uuid=${boom}`)).catch((error: { statusCode?: number }) => error);
  t.equal((refusedWith500 as { statusCode?: number }).statusCode, 500, 'authentication failed: HTTP 500');
  await server.app.close();
  await failing.app.close();

  const text = logs.text();
  t.match(text, /"url":"\/ws\/events\/tasks\/\?uuid=\*\*\*"/, 'requests are logged, redacted');
  t.match(text, /"level":50.*authentication failed/, 'the 500 is logged');
  for (const token of tokens) {
    t.notOk(text.toLowerCase().includes(token.toLowerCase()), `token ${tokens.indexOf(token) + 1} is in no log line`);
  }
  t.ok(text.split("\n").length > 10, `${text.split('\n').length} log lines checked`);
});

t.test('the example server (npm start, LOG_LEVEL=info) logs no token either', async (t) => {
  const db = await createTestDatabase(t, { schema: false });
  const server = spawn(process.execPath, ['--import', 'tsx', 'example/server.ts'], {
    cwd: new URL('..', import.meta.url),
    env: {
      ...process.env, DATABASE_URL: db.url, PORT: '0', LOG_LEVEL: 'info',
      TASK_EVENTS_RATE_LIMIT_MAX: '4', TASK_EVENTS_ALLOWED_ORIGINS: 'https://app.example.com',
    },
  });
  const exited = once(server, 'exit');
  t.teardown(() => void server.kill('SIGKILL'));
  let stdout = '';
  const lines = createInterface({ input: server.stdout });
  const ready = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start in 30 s: ${stdout}`)), 30_000);
    lines.on('line', (line) => {
      stdout += `${line}\n`;
      const entry = JSON.parse(line) as { url?: string; msg: string };
      if (entry.url && entry.msg.includes('try: curl')) {
        clearTimeout(timer);
        resolve(entry.url);
      }
    });
  });
  const base = (await ready).replace(/^http/, 'ws');
  const mint = async (): Promise<string> => {
    const response = await fetch(`${base.replace(/^ws/, 'http')}/api/users/ws-auth/`, { headers: { authorization: 'Token demo-key-1' } });
    return ((await response.json()) as { uuid: string }).uuid;
  };
  const tokens = [await mint(), crypto.randomUUID(), await mint(), await mint(), await mint(), await mint()];
  const [good, unknown, badFilter, foreign, wrongPath, limited] = tokens as [string, string, string, string, string, string];
  const client = await TestClient.connect(t, `${base}/ws/events/tasks/?uuid=${good}`, { origin: 'https://app.example.com' });
  await (await TestClient.connect(t, `${base}/ws/events/tasks/?uuid=${good}`)).waitForClose(); // used
  await (await TestClient.connect(t, `${base}/ws/events/tasks/?uuid=${unknown}`)).waitForClose();
  await (await TestClient.connect(t, `${base}/ws/events/tasks/?object_class_ids=x&uuid=${badFilter}`)).waitForClose();
  await TestClient.connect(t, `${base}/ws/events/tasks/?uuid=${foreign}`, { origin: 'https://evil.example' }).catch(() => {});
  await (await TestClient.connect(t, `${base}/ws/events/taskz/?uuid=${wrongPath}`)).waitForClose();
  const refused = await TestClient.connect(t, `${base}/ws/events/tasks/?uuid=${limited}`);
  await refused.waitForClose();
  t.same(refused.frames, [errorOf('ERR_RATE_LIMIT_EXCEEDED')], 'the rate limit was reached');
  server.kill('SIGTERM');
  await client.waitForClose();
  await exited;
  t.match(stdout, /uuid=\*\*\*/, 'requests are logged, redacted');
  for (const [index, token] of tokens.entries()) t.notOk(stdout.toLowerCase().includes(token.toLowerCase()), `token ${index + 1} is in no log line`);
});
