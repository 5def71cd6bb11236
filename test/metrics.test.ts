// Prometheus metrics (README, "Operating it"): scraped after known actions, with exact deltas; the
// registry option; and the dashboard and alert rules shipped with the example, which may only
// name metrics the plugin exports.
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import type pg from 'pg';
import { Registry } from 'prom-client';
import t, { type Test } from 'tap';
import WebSocket from 'ws';
import { waitUntil } from '../harness/backends.js';
import { TestClient } from '../harness/client.js';
import { createTestDatabase, type TestDatabase } from '../harness/db.js';
import { METRIC_NAMES } from '../lib/index.js';
import { registerMetrics } from '../lib/metrics.js';
import { nextEvent, startServer, type TestServer } from './helpers/server.js';

type Samples = Map<string, number>;

/** Every sample of the registry's text exposition: `name{labels}` → value. */
async function scrape(registry: Registry | null): Promise<Samples> {
  if (!registry) throw new Error('metrics are off');
  const samples: Samples = new Map();
  for (const line of (await registry.metrics()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

/** What changed between two scrapes, for the samples named (missing ones count as 0). */
function deltas<Name extends string>(before: Samples, after: Samples, names: readonly Name[]): Record<Name, number> {
  return Object.fromEntries(names.map((name) => [name, (after.get(name) ?? 0) - (before.get(name) ?? 0)])) as Record<Name, number>;
}

const outcome = (name: string): string => `task_events_handshakes_total{outcome="${name}"}`;
const reason = (name: string): string => `task_events_disconnects_total{reason="${name}"}`;
const OUTCOMES = ['ok', 'invalid_uuid', 'invalid_filter', 'invalid_cursor', 'cursor_expired', 'rate_limited', 'forbidden_origin', 'error'];
const REASONS = ['client', 'shutdown', 'slow_consumer', 'heartbeat', 'error'];

async function insertTasks(db: TestDatabase, count: number): Promise<void> {
  await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) SELECT 1, 1, 'metered' FROM generate_series(1, $1::int)`, [count]);
}

/** Opens a v2 connection (subprotocol task-events.v2); resolves with its first frame. */
async function openV2(t: Test, url: string): Promise<{ socket: WebSocket; first: { type: string; cursor?: string; error_code?: string } }> {
  const socket = new WebSocket(url, ['task-events.v2']);
  t.teardown(() => socket.terminate());
  const first = await new Promise<{ type: string }>((resolve, reject) => {
    socket.once('message', (data) => resolve(JSON.parse(String(data))));
    socket.once('error', reject);
  });
  return { socket, first };
}

async function connectionsAre(server: TestServer, count: number): Promise<void> {
  await waitUntil(async () => (await scrape(server.app.taskEvents.metrics)).get('task_events_connections') === count, `${count} connections`);
}

t.test('handshakes and connections: three good handshakes and one bad token, then the clients close', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db);
  const before = await scrape(server.app.taskEvents.metrics);
  const clients = [];
  for (let i = 0; i < 3; i++) clients.push(await TestClient.connect(t, await server.endpoint()));
  const bad = await TestClient.connect(t, server.wsUrl('/ws/events/tasks/?uuid=not-a-token'));
  t.equal((await bad.waitForClose()).code, 1000);
  await connectionsAre(server, 3);
  const joined = await scrape(server.app.taskEvents.metrics);
  t.same(deltas(before, joined, OUTCOMES.map(outcome)), { ...Object.fromEntries(OUTCOMES.map((name) => [outcome(name), 0])), [outcome('ok')]: 3, [outcome('invalid_uuid')]: 1 });
  t.same(deltas(before, joined, REASONS.map(reason)), Object.fromEntries(REASONS.map((name) => [reason(name), 0])), 'a refused handshake is no disconnect');

  for (const client of clients) client.socket.close(1000);
  await Promise.all(clients.map((client) => client.waitForClose()));
  await connectionsAre(server, 0);
  const left = await scrape(server.app.taskEvents.metrics);
  t.same(deltas(joined, left, REASONS.map(reason)), { ...Object.fromEntries(REASONS.map((name) => [reason(name), 0])), [reason('client')]: 3 });
});

t.test('every handshake outcome, and v2 resumes', async (t) => {
  const db = await createTestDatabase(t);
  const failing = randomUUID();
  const server = await startServer(t, db, {
    allowedOrigins: ['https://app.example.com'],
    maxConnectionsPerUser: 1,
    // any token-shaped value is alice, but one: authentication itself fails (HTTP 500)
    authenticate: (token) => {
      if (token === failing) throw new Error('the user database is down');
      return { environmentId: 1, userId: 1 };
    },
  });
  const url = (query: Record<string, string>): string => server.wsUrl(`/ws/events/tasks/?${new URLSearchParams({ uuid: randomUUID(), ...query })}`);
  const before = await scrape(server.app.taskEvents.metrics);

  const v2 = await openV2(t, url({}));
  t.equal(v2.first.type, 'ready');
  const refusals: [Record<string, string>, string][] = [
    [{}, 'ERR_RATE_LIMIT_EXCEEDED'], // alice has her one connection
    [{ uuid: 'nope' }, 'ERR_INVALID_UUID'],
    [{ object_class_ids: 'one' }, 'ERR_INVALID_OBJECT_CLASS_IDS'],
    [{ event_types: 'task_exploded' }, 'ERR_INVALID_EVENT_TYPES'],
  ];
  for (const [query, code] of refusals) {
    const client = await TestClient.connect(t, url(query));
    await client.waitForClose();
    t.match(client.frames, [{ error_code: code }], code);
  }
  const tampered = await openV2(t, url({ cursor: 'not-a-cursor' }));
  t.equal(tampered.first.error_code, 'ERR_INVALID_CURSOR');
  const statusOf = (opening: Promise<unknown>): Promise<unknown> => opening.then(() => 101, (error: { statusCode?: number }) => error.statusCode);
  t.equal(await statusOf(TestClient.connect(t, url({}), { origin: 'https://evil.example' })), 403);
  t.equal(await statusOf(TestClient.connect(t, url({ uuid: failing }))), 500);

  v2.socket.close(1000);
  await connectionsAre(server, 0);
  const resumed = await openV2(t, url({ cursor: v2.first.cursor as string }));
  t.equal(resumed.first.type, 'ready', 'a resume from the first connection\'s cursor');

  const after = await scrape(server.app.taskEvents.metrics);
  t.same(deltas(before, after, OUTCOMES.map(outcome)), {
    [outcome('ok')]: 2, [outcome('invalid_uuid')]: 1, [outcome('invalid_filter')]: 2, [outcome('invalid_cursor')]: 1,
    [outcome('cursor_expired')]: 0, [outcome('rate_limited')]: 1, [outcome('forbidden_origin')]: 1, [outcome('error')]: 1,
  });
  const resume = (name: string): string => `task_events_resumes_total{outcome="${name}"}`;
  t.same(deltas(before, after, ['ok', 'invalid', 'expired'].map(resume)), { [resume('ok')]: 1, [resume('invalid')]: 1, [resume('expired')]: 0 });
});

t.test('events read, messages and bytes sent, lag observed once per batch and per message', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { messageTime: 200 });
  const client = await TestClient.connect(t, await server.endpoint());
  await waitUntil(async () => (await scrape(server.app.taskEvents.metrics)).get('task_events_listener_connected') === 1, 'the listener');
  const before = await scrape(server.app.taskEvents.metrics);
  const reads: number[] = [];
  server.app.taskEvents.events.on('read', ({ events }: { events: number }) => reads.push(events));

  for (let i = 0; i < 10; i++) await insertTasks(db, 1);
  await client.waitForEvents(10);
  const after = await scrape(server.app.taskEvents.metrics);
  const changed = deltas(before, after, [
    'task_events_events_read_total', 'task_events_messages_sent_total', 'task_events_bytes_sent_total',
    'task_events_read_lag_seconds_count', 'task_events_read_lag_seconds_sum', 'task_events_delivery_lag_seconds_count', 'task_events_delivery_lag_seconds_sum',
  ] as const);
  t.ok(changed.task_events_events_read_total >= 10, `events read: +${changed.task_events_events_read_total}`);
  t.equal(changed.task_events_read_lag_seconds_count, reads.length, 'one read-lag observation per fetched batch');
  t.equal(changed.task_events_messages_sent_total, client.messages.length, 'one message per message the only client received');
  t.equal(changed.task_events_delivery_lag_seconds_count, client.messages.length, 'one delivery-lag observation per message');
  const bytes = client.messages.reduce((sum, message) => sum + Buffer.byteLength(JSON.stringify(message)), 0);
  t.equal(changed.task_events_bytes_sent_total, bytes, 'the bytes of the frames the client received');
  const meanDelivery = changed.task_events_delivery_lag_seconds_sum / changed.task_events_delivery_lag_seconds_count;
  t.ok(meanDelivery > 0 && meanDelivery < 5, `delivery lag ${meanDelivery.toFixed(3)} s on average: created, read, then up to messageTime`);
  t.ok(changed.task_events_read_lag_seconds_sum / changed.task_events_read_lag_seconds_count < 5, 'read lag within seconds');
  t.ok((after.get('task_events_delivery_lag_seconds_bucket{le="30"}') ?? 0) >= client.messages.length, 'buckets up to 30 s');

  // The statistics collector's count trails the writes by a second or so.
  await waitUntil(async () => ((await scrape(server.app.taskEvents.metrics)).get('task_events_outbox_rows') ?? 0) >= 10, 'outbox_rows >= 10', 20_000, 250);
});

t.test('a slow consumer closed with 1013 is counted as slow_consumer', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { maxBufferedBytes: 256 * 1024, messageLimit: 1000, messageTime: 100 });
  const stalled = await TestClient.connect(t, await server.endpoint());
  const before = await scrape(server.app.taskEvents.metrics);
  const tcp = (stalled.socket as unknown as { _socket: Socket })._socket;
  tcp.pause(); // see test/slow-consumer.test.ts: 50,000 events go past the kernel's buffers
  const disconnected = nextEvent<{ reason: string }>(server.app.taskEvents.events, 'disconnect', () => true, 60_000);
  const dropped = nextEvent(server.app.taskEvents.events, 'slow-consumer', () => true, 30_000);
  for (let i = 0; i < 10; i++) await insertTasks(db, 5000);
  await dropped;
  tcp.resume(); // reads what it was sent, then the close frame
  t.equal((await stalled.waitForClose(20_000)).code, 1013);
  // marked when it was dropped: whether it echoes our 1013 in time or is cut off (1006) after
  t.equal((await disconnected).reason, 'slow_consumer');
  const after = await scrape(server.app.taskEvents.metrics);
  t.same(deltas(before, after, REASONS.map(reason)), { ...Object.fromEntries(REASONS.map((name) => [reason(name), 0])), [reason('slow_consumer')]: 1 });
  t.equal(after.get('task_events_connections'), 0);
});

t.test('a peer that stops answering pings is counted as heartbeat', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { heartbeatInterval: 150 });
  const silent = await TestClient.connect(t, await server.endpoint(), { autoPong: false });
  const disconnected = nextEvent(server.app.taskEvents.events, 'disconnect');
  await silent.waitForClose();
  t.same(await disconnected, { reason: 'heartbeat', code: 1006 });
  t.equal((await scrape(server.app.taskEvents.metrics)).get(reason('heartbeat')), 1);
});

t.test('a registry of the host\'s, with a prefix; shutdown closes count as shutdown; close takes the metrics out again', async (t) => {
  const db = await createTestDatabase(t);
  const registry = new Registry();
  const server = await startServer(t, db, { metrics: { registry, prefix: 'app_stream_' } });
  t.equal(server.app.taskEvents.metrics, registry);
  const names = (await registry.getMetricsAsJSON()).map((metric) => metric.name).sort();
  t.same(names, METRIC_NAMES.map((name) => `app_stream_${name}`).sort());

  await t.rejects(startServer(t, db, { metrics: { registry, prefix: 'app_stream_' } }), {
    code: 'FST_TASK_EVENTS_OPTION', message: /option "metrics.registry" already holds app_stream_connections/,
  }, 'a second instance under the same names is refused at registration');

  const clients = [await TestClient.connect(t, await server.endpoint()), await TestClient.connect(t, await server.endpoint())];
  const reasons: string[] = [];
  server.app.taskEvents.events.on('disconnect', ({ reason }: { reason: string }) => reasons.push(reason));
  await server.app.close();
  t.same(await Promise.all(clients.map(async (client) => (await client.waitForClose()).code)), [1001, 1001]);
  t.same(reasons, ['shutdown', 'shutdown']);
  t.same(await registry.getMetricsAsJSON(), [], 'gone from the host\'s registry');
  const again = await startServer(t, db, { metrics: { registry, prefix: 'app_stream_' } });
  t.equal(again.app.taskEvents.metrics, registry, 'a new instance takes the same names');
});

t.test('metrics: false: no registry, and handshakes work as before', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { metrics: false });
  t.equal(server.app.taskEvents.metrics, null);
  const client = await TestClient.connect(t, await server.endpoint());
  await insertTasks(db, 1);
  await client.waitForEvents(1);
});

t.test('the dashboard and the README\'s alert rules name only metrics the plugin exports, and the dashboard shows each', async (t) => {
  const registry = new Registry();
  const pool = { query: async () => ({ rows: [] }) } as unknown as pg.Pool;
  registerMetrics(registry, 'task_events_', { events: new EventEmitter(), pool, connections: () => 0 });
  const exported = new Set((await registry.getMetricsAsJSON()).flatMap((metric) =>
    String(metric.type) === 'histogram' ? ['_bucket', '_sum', '_count'].map((suffix) => metric.name + suffix) : [metric.name]));
  const namesIn = (text: string): string[] => [...new Set(text.match(/\btask_events_[a-z_]+/g) ?? [])];

  const dashboard = JSON.parse(await readFile(new URL('../example/grafana-dashboard.json', import.meta.url), 'utf8')) as { panels: { title: string; targets?: { expr: string }[] }[] };
  const queries = dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((target) => target.expr)).join('\n');
  const used = namesIn(queries);
  t.same(used.filter((name) => !exported.has(name)), [], 'every name in the dashboard\'s queries');
  const shown = new Set(used.map((name) => name.replace(/_(bucket|sum|count)$/, '')));
  t.same(METRIC_NAMES.filter((name) => !shown.has(`task_events_${name}`)), [], 'every metric has a panel');

  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  const start = readme.indexOf('## Operating it');
  t.ok(start >= 0, 'README has "## Operating it"');
  const section = readme.slice(start, readme.indexOf('\n## ', start + 1));
  const rules = [...section.matchAll(/```yaml\n([\s\S]*?)```/g)].map(([, body]) => body).join('\n');
  t.ok(rules.includes('alert:'), 'the section holds alert rules');
  t.same(namesIn(rules).filter((name) => !exported.has(name)), [], 'every name in the alert rules');
});

t.test('a resume\'s backlog counts as messages and bytes sent, not as delivery lag; an expired cursor counts as cursor_expired', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db, { messageLimit: 10 });
  const first = await openV2(t, await server.endpoint());
  const cursor = first.first.cursor as string;
  first.socket.close(1000);
  await connectionsAre(server, 0);
  await insertTasks(db, 25);
  const before = await scrape(server.app.taskEvents.metrics);
  const resumed = new WebSocket(await server.endpoint({ cursor }), ['task-events.v2']);
  t.teardown(() => resumed.terminate());
  const frames: Array<{ type: string; events?: unknown[] }> = [];
  let bytes = 0;
  resumed.on('message', (data: Buffer) => {
    const frame = JSON.parse(String(data)) as { type: string; events?: unknown[] };
    frames.push(frame);
    if (frame.type === 'events') bytes += data.length;
  });
  await waitUntil(() => frames.flatMap((frame) => frame.events ?? []).length >= 25, 'the backlog');
  const after = await scrape(server.app.taskEvents.metrics);
  t.same(deltas(before, after, ['task_events_messages_sent_total', 'task_events_bytes_sent_total', 'task_events_delivery_lag_seconds_count']), {
    task_events_messages_sent_total: 3, task_events_bytes_sent_total: bytes, task_events_delivery_lag_seconds_count: 0,
  });

  // a pruning mark a retention ago above the cursor's transactions: the cursor has expired
  await db.pool.query(`INSERT INTO task_events.prune_horizon (taken_at, oldest_running) VALUES (now() - interval '2 days', pg_current_xact_id())`);
  const expired = await openV2(t, await server.endpoint({ cursor }));
  t.equal(expired.first.error_code, 'ERR_CURSOR_EXPIRED');
  const last = await scrape(server.app.taskEvents.metrics);
  t.same(deltas(after, last, [outcome('cursor_expired'), 'task_events_resumes_total{outcome="expired"}']), {
    [outcome('cursor_expired')]: 1, 'task_events_resumes_total{outcome="expired"}': 1,
  });
});
