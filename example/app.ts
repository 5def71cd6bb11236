// The example app: the reference schema, the task-events plugin and a small REST API on one pool.
import Fastify, { type FastifyBaseLogger, type FastifyHttpOptions, type FastifyInstance, type FastifyRequest } from 'fastify';
import type { Server } from 'node:http';
import { readFile } from 'node:fs/promises';
import pg from 'pg';
import taskEvents, { migrate } from '../lib/index.js';
import { endPool } from '../lib/pool.js';
import { api } from './api.js';
import type { Config } from './config.js';
import { operations } from './operations.js';
import { page } from './page.js';

const SCHEMA_FILE = new URL('./schema.sql', import.meta.url);

/** Request logs without the WebSocket token: `?uuid=…` is a credential, if a short-lived one. */
function logRequest(request: FastifyRequest) {
  return {
    method: request.method,
    url: request.url.replace(/([?&]uuid=)[^&]*/g, '$1***'),
    host: request.host,
    remoteAddress: request.ip,
    remotePort: request.socket?.remotePort,
  };
}

/** What {@link buildApp} needs: the database, resolved (embedded or not), and the settings. */
export type AppConfig = Pick<Config, 'logLevel' | 'taskEvents'> & { databaseUrl: string };

/**
 * Creates the reference schema and seed with our triggers attached. Idempotent, and serialized
 * by an advisory lock: two instances starting at once would otherwise race on `CREATE TABLE`.
 */
async function prepareDatabase(pool: pg.Pool, log: FastifyBaseLogger): Promise<void> {
  await migrate(pool).catch(async (error: Error & { code?: string }) => {
    if (error.code !== 'FST_TASK_EVENTS_FOREIGN_SCHEMA') throw error;
    // The demo's own .data/ from the 0.1 pre-release: its outbox holds nothing worth keeping.
    log.info('the demo database had the 0.1 pre-release schema task_events; re-creating it');
    await pool.query('DROP SCHEMA task_events CASCADE');
    await migrate(pool);
  });
  const schema = await readFile(SCHEMA_FILE, 'utf8');
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query(`SELECT pg_advisory_xact_lock(hashtext('task_events.example.schema'))`);
    await client.query(schema);
    await client.query('SELECT task_events.attach()');
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}

/**
 * Builds the example server, ready but not listening: migrations, reference schema and seed
 * applied (a restart keeps the data), the plugin at `/ws/events/tasks/`, the REST API under
 * `/api/`, the live page at `/`. `serverOptions` adds Fastify options (`SERVER_OPTIONS`: timeouts); closing the app ends its pool.
 */
export async function buildApp(config: AppConfig, serverOptions: FastifyHttpOptions<Server> = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: { level: config.logLevel, serializers: { req: logRequest } },
    // Reject unknown fields with a 400 instead of silently dropping them (Fastify's default).
    ajv: { customOptions: { removeAdditional: false } },
    ...serverOptions,
  });
  const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 10, connectionTimeoutMillis: 10_000 });
  // An idle client's backend can be terminated (restart, failover): log it, never crash.
  // Its message and code only: pg-pool hangs the whole client on this error.
  pool.on('error', (error: Error & { code?: string }) => app.log.warn({ error: { message: error.message, code: error.code } }, 'idle PostgreSQL client failed'));
  // onClose hooks run in reverse order: added before the plugin, this one runs after the plugin's.
  // It waits for the connections to close: the embedded database is stopped right after.
  app.addHook('onClose', () => endPool(pool));
  try {
    await prepareDatabase(pool, app.log);
    const { rateLimit, ...settings } = config.taskEvents;
    await app.register(taskEvents, {
      pool,
      ...settings,
      // The plugin fills a field left out with its default (60 attempts a minute).
      ...(rateLimit !== undefined && { rateLimit }),
    });
    await app.register(api, { pool, issueToken: (identity) => app.taskEvents.issueToken(identity) });
    // GET /metrics, /health/live and /health/ready
    await app.register(operations);
    // GET /: the live page, built on the client
    await app.register(page);
    await app.ready();
  } catch (error) {
    await app.close().catch(() => {});
    if (!pool.ended) await pool.end();
    throw error;
  }
  return app;
}
