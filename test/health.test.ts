// Health (README, "Operating it"): `app.taskEvents.health()`, and the example's probes and
// `/metrics` with the app's own role cut off from its database (NOLOGIN, its backends terminated)
// and let in again.
import type { FastifyInstance } from 'fastify';
import t from 'tap';
import { buildApp } from '../example/app.js';
import { createAppRole, terminateBackends, waitUntil } from '../harness/backends.js';
import { createTestDatabase } from '../harness/db.js';
import type { TaskEventsHealth } from '../lib/index.js';
import { nextEvent, startServer } from './helpers/server.js';

interface Probe {
  status: number;
  body: Partial<TaskEventsHealth> & { status?: string };
}

async function probe(app: FastifyInstance, url: string): Promise<Probe> {
  const response = await app.inject({ method: 'GET', url });
  return { status: response.statusCode, body: response.json() };
}

t.test('the example: /health/ready turns 503 within seconds when the app is cut off from its database and 200 once it is let in; /health/live stays 200', async (t) => {
  const role = await createAppRole(t);
  const db = await createTestDatabase(t, { migrate: false });
  // The role owns the database, so the example applies migrations and its schema as that role.
  await db.pool.query(`ALTER DATABASE ${db.name} OWNER TO ${role.name}`);
  await db.pool.query(`ALTER SCHEMA public OWNER TO ${role.name}`);
  const app = await buildApp({ databaseUrl: role.url(db, 'te_health'), logLevel: 'silent', taskEvents: { messageTime: 100, rateLimit: false } });
  t.teardown(() => app.close());

  await waitUntil(async () => (await probe(app, '/health/ready')).status === 200, 'ready', 10_000, 100);
  const ready = await probe(app, '/health/ready');
  t.match(ready.body, { status: 'ok', ok: true, reasons: [], listenerConnected: true, database: 'reachable', readLagSeconds: Number, lastReadAt: String });
  t.same(await probe(app, '/health/live'), { status: 200, body: { status: 'ok' } });

  const lives = new Set<number>();
  const watch = async (): Promise<Probe> => {
    lives.add((await probe(app, '/health/live')).status);
    return probe(app, '/health/ready');
  };
  await role.setLogin(false);
  await terminateBackends(db, { user: role.name });
  const cutOff = performance.now();
  let unready: Probe | undefined;
  await waitUntil(async () => (unready = await watch()).status === 503, '/health/ready to answer 503', 10_000, 100);
  t.comment(`503 after ${(performance.now() - cutOff).toFixed(0)} ms`);
  t.match(unready?.body, { status: 'unavailable', ok: false, database: 'unreachable', reasons: ['database unreachable'] });
  // No read succeeds meanwhile: after 5 poll intervals (10 s) that is a reason of its own.
  await waitUntil(async () => {
    const reasons = (await watch()).body.reasons ?? [];
    return reasons.includes('listener not connected') && reasons.some((reason) => reason.startsWith('reads falling behind: no successful read for'));
  }, 'every reason', 20_000, 250);

  await role.setLogin(true);
  let back: Probe | undefined;
  await waitUntil(async () => (back = await watch()).status === 200, '/health/ready to answer 200 again', 30_000, 250);
  t.match(back?.body, { ok: true, reasons: [], listenerConnected: true, database: 'reachable' });
  t.same([...lives], [200], '/health/live answered 200 throughout');
});

t.test('the example serves the plugin\'s registry at /metrics, in Prometheus\' text format', async (t) => {
  const db = await createTestDatabase(t, { schema: false });
  const app = await buildApp({ databaseUrl: db.url, logLevel: 'silent', taskEvents: { rateLimit: false } });
  t.teardown(() => app.close());
  const response = await app.inject({ method: 'GET', url: '/metrics' });
  t.equal(response.statusCode, 200);
  t.equal(response.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  t.match(response.body, /^# HELP task_events_connections /m);
  t.match(response.body, /^task_events_handshakes_total\{outcome="ok"\} 0$/m);
});

t.test('health(): reads falling behind when the last read found events older than the limit; fine again after a fresh read; shutting down', async (t) => {
  const db = await createTestDatabase(t);
  // Reads only when woken (no poll meanwhile), so no read comes between the one we cause and the check.
  const server = await startServer(t, db, { pollInterval: 60_000 });
  const events = server.app.taskEvents.events;
  await waitUntil(async () => (await server.app.taskEvents.health()).ok, 'healthy');
  const readAll = async (sql: string): Promise<TaskEventsHealth> => {
    const read = nextEvent<{ events: number }>(events, 'caught-up', (detail) => detail.events > 0);
    await db.pool.query(sql);
    await db.pool.query(`SELECT pg_notify('task_events', '')`);
    await read;
    return server.app.taskEvents.health();
  };

  // An event created 45 s before it is read (written into the outbox by hand, as a stuck listener would find it).
  const late = await readAll(`INSERT INTO task_events.outbox (environment_id, task_id, object_class_id, event, created_at)
                              VALUES (1, 1, 1, 'task_created', clock_timestamp() - interval '45 seconds')`);
  t.equal(late.ok, false);
  t.ok(late.readLagSeconds >= 45 && late.readLagSeconds < 50, `read lag ${late.readLagSeconds} s`);
  t.match(late.reasons, [/^reads falling behind: the last read was 4\d\.\d s behind$/]);
  t.equal(late.database, 'reachable');

  const fresh = await readAll(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'on time')`);
  t.match(fresh, { ok: true, reasons: [], listenerConnected: true, database: 'reachable' });
  t.ok(fresh.readLagSeconds < 5 && fresh.secondsSinceLastRead !== null && fresh.secondsSinceLastRead < 5);

  await server.app.close();
  const closed = await server.app.taskEvents.health();
  t.equal(closed.ok, false);
  t.ok(closed.reasons.includes('shutting down'), closed.reasons.join('; '));
});
