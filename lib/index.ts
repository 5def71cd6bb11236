import websocket from '@fastify/websocket';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import fp from 'fastify-plugin';
import { EventEmitter } from 'node:events';
import pg from 'pg';
import { Registry } from 'prom-client';
import { sendBacklog } from './backlog.js';
import type { TaskEvent } from './buffer.js';
import { ConnectionCaps } from './caps.js';
import { CursorCodec, type Cursor } from './cursor.js';
import { HostErrors } from './errors.js';
import { HealthWatch, type TaskEventsHealth } from './health.js';
import { Heartbeat } from './heartbeat.js';
import { Hub } from './hub.js';
import { Listener } from './listener.js';
import { logLifecycle } from './logging.js';
import { registerMetrics } from './metrics.js';
import { migrate } from './migrate.js';
import { cursorKey, streamPoint } from './outbox.js';
import { resolveOptions, type Identity, type TaskEventsOptions } from './options.js';
import { endPool } from './pool.js';
import { SlidingWindowLimiter } from './rate-limit.js';
import { checkDatabase } from './readiness.js';
import { Retention } from './retention.js';
import { selectProtocol } from './request.js';
import { registerRoute } from './route.js';
import { CloseReasons, type ReadDetail } from './signals.js';
import { TokenStore } from './tokens.js';

export { migrate, migrationsDirectory, migrationState, type MigrationState } from './migrate.js';
export { attach, detach, type AttachOptions } from './attach.js';
export { grant, grantStatements, missingPrivileges, RUNTIME_PRIVILEGES } from './privileges.js';
export { status, type TaskEventsStatus } from './status.js';
export { ERRORS, HostErrors, type ErrorCode } from './errors.js';
export { OptionError, OPTIONS } from './options.js';
export { Refusal, type Check, type TextSpelling } from './option-checks.js';
export type { Authenticate, Identity, RateLimitOptions, TaskEventsOptions } from './options.js';
export { LAG_BUCKETS, METRIC_NAMES, type MetricsOptions } from './metrics.js';
export { DATABASE_DEADLINE, READ_LAG_LIMIT, STALE_READ_INTERVALS, type TaskEventsHealth } from './health.js';
export type { DisconnectReason, FlushedDetail, HandshakeDetail, HandshakeOutcome, ReadDetail } from './signals.js';

/** Counters of one plugin instance. */
export interface TaskEventsStats {
  /** Open WebSocket connections receiving events. */
  connections: number;
  /** Events read from the outbox since start. */
  eventsReceived: number;
  /** Messages (frames) sent to clients since start. */
  messagesSent: number;
  /** Clients closed with 1013 for not keeping up (see `maxBufferedBytes`). */
  slowConsumersClosed: number;
}

/** `app.taskEvents`: what the plugin offers the host app. */
export interface TaskEventsDecorator {
  /** Mints a one-time token for `GET /ws/events/tasks/?uuid=…` (default token store). */
  issueToken(identity: Identity): Promise<string>;
  /** Applies our migrations to the plugin's database (idempotent). */
  migrate(): Promise<void>;
  /**
   * One pruning round now (old outbox rows, expired tokens); `null` when another instance is
   * pruning. Rounds also run every `pruneInterval`.
   */
  prune(): Promise<{ outbox: number; tokens: number } | null>;
  stats(): TaskEventsStats;
  /** The Prometheus registry holding the plugin's metrics (README, "Operating it"); null with `metrics: false`. */
  metrics: Registry | null;
  /** Whether this instance can serve events now: the database, the LISTEN connection, reads keeping up. */
  health(): Promise<TaskEventsHealth>;
  /**
   * Lifecycle events, for tests and monitoring: `connected` and `reconnecting` (the LISTEN
   * connection), `read` ({ events, oldest }) per fetched batch, `caught-up` ({ events }) after each
   * outbox read, `flushed` ({ group, events, sockets, bytes, oldest }) after each message,
   * `handshake` ({ outcome, resume }), `disconnect` ({ reason, code }) when a socket that had
   * joined closes, `slow-consumer` ({ environmentId, bufferedAmount }) and `heartbeat-timeout`
   * when a client is dropped, `warning` (an error that is being retried). Details: lib/signals.ts.
   */
  events: EventEmitter;
}

declare module 'fastify' {
  interface FastifyInstance {
    taskEvents: TaskEventsDecorator;
  }
}

/** Close code sent to every client when the server shuts down. */
const GOING_AWAY = 1001;

/** Close code for a resume whose backlog could not be read: the client resumes again. */
const INTERNAL_ERROR = 1011;

/** v2: an idle client gets a cursor frame at most this often (milliseconds). */
const CURSOR_INTERVAL = 30_000;

/** Client frames are never valid here; the limit bounds what a client can make us read. */
const MAX_PAYLOAD = 4096;

const taskEventsPlugin: FastifyPluginAsync<TaskEventsOptions> = async (app: FastifyInstance, rawOptions) => {
  const options = resolveOptions(rawOptions);
  const pool = options.pool ?? new pg.Pool({ connectionString: options.connectionString, max: 10, connectionTimeoutMillis: 10_000 });
  // Exactly the pool's settings. pg-pool keeps `password` non-enumerable, and a copy (ours, or
  // pg-listen's Object.assign) drops it: the LISTEN connection then fails where a password is asked.
  const connection: pg.ClientConfig = { ...pool.options, password: pool.options.password };
  const events = new EventEmitter();
  if (!options.pool) {
    // An idle client's error (its backend was terminated) must not crash the process.
    pool.on('error', (error) => events.emit('warning', new HostErrors.POOL({ cause: error })));
  }
  const registry = options.metrics ? (options.metrics.registry ?? new Registry()) : null;
  const stopMetrics = options.metrics && registry
    ? registerMetrics(registry, options.metrics.prefix, { events, pool, connections: () => hub.stats().connections })
    : null;
  const health = new HealthWatch({ events, pool, pollInterval: options.pollInterval });
  const closeReasons = new CloseReasons();
  if (options.migrate) await migrate(pool);

  const tokens = new TokenStore(pool, options.tokenTtl);
  // v2 cursors are signed with the database's key, read at ready.
  let cursors: CursorCodec | null = null;
  const codec = (): CursorCodec => cursors ?? (() => { throw new Error('task events: not ready'); })();
  const encodeCursor = (cursor: Cursor): string => codec().encode(cursor);
  const hub = new Hub({
    messageTime: options.messageTime,
    messageLimit: options.messageLimit,
    maxBufferedBytes: options.maxBufferedBytes,
    // often enough that an idle client's cursor stays well inside the retention
    cursorInterval: Math.min(CURSOR_INTERVAL, options.outboxRetention / 4),
    encodeCursor,
  });
  // The terminated socket's own 'close' takes it out of the hub.
  const heartbeat = new Heartbeat(options.heartbeatInterval, (socket) => {
    closeReasons.mark(socket, 'heartbeat');
    events.emit('heartbeat-timeout');
  });
  const listener = new Listener({
    pool,
    connection,
    pollInterval: options.pollInterval,
    readBatchSize: options.readBatchSize,
    onEvents: (batch) => {
      events.emit('read', { events: batch.length, oldest: (batch[0] as TaskEvent).timestamp } satisfies ReadDetail);
      hub.publish(batch);
    },
    onRead: (read) => hub.advance(read),
  });
  const limiter = options.rateLimit ? new SlidingWindowLimiter(options.rateLimit.max, options.rateLimit.timeWindow) : null;

  for (const name of ['connected', 'reconnecting', 'caught-up', 'warning']) {
    listener.on(name, (detail) => events.emit(name, detail));
  }
  for (const name of ['flushed', 'slow-consumer']) hub.on(name, (detail) => events.emit(name, detail));
  hub.on('slow-consumer', (_detail, socket) => closeReasons.mark(socket, 'slow_consumer'));
  logLifecycle(app.log, events);

  /** Sends what is buffered, then closes our sockets with 1001. */
  const shutdown = async (): Promise<void> => {
    closeReasons.shutdown();
    health.shutdown();
    hub.flushAll();
    hub.closeAll(GOING_AWAY, 'Server shutting down');
  };

  if (app.hasDecorator('websocketServer')) {
    // The host registered @fastify/websocket itself; its preClose closes the sockets it knows.
    app.addHook('preClose', shutdown);
  } else {
    await app.register(websocket, {
      options: { maxPayload: MAX_PAYLOAD, handleProtocols: selectProtocol },
      preClose: async function closeSockets(this: FastifyInstance) {
        await shutdown();
        for (const client of this.websocketServer.clients) client.close(GOING_AWAY, 'Server shutting down');
        await new Promise((resolve) => this.websocketServer.close(resolve));
      },
    });
  }

  registerRoute(app, {
    path: options.path,
    unknownPathPrefix: options.unknownPathPrefix,
    hub,
    authenticate: options.authenticate ?? ((token) => tokens.consume(token)),
    position: () => listener.position(),
    streamPoint: (from) => streamPoint(pool, from, options.outboxRetention),
    cursors: codec,
    resume: (socket, filter, from, to) => {
      sendBacklog({
        pool, socket, filter, from, to,
        batchSize: options.readBatchSize,
        messageLimit: options.messageLimit,
        maxBufferedBytes: options.maxBufferedBytes,
        encodeCursor,
        onMessage: (count, bytes, oldest) => events.emit('flushed', { group: 'backlog', events: count, sockets: 1, bytes, oldest, backlog: true }),
      }).then(
        () => hub.unhold(socket),
        (error) => {
          // the client resumes again from its last cursor
          events.emit('warning', new HostErrors.BACKLOG({ cause: error }));
          socket.close(INTERNAL_ERROR, 'Backlog failed; resume again');
        },
      );
    },
    limiter,
    heartbeat,
    allowedOrigins: options.allowedOrigins,
    requireOrigin: options.requireOrigin,
    caps: new ConnectionCaps(options),
    onHandshake: (detail) => events.emit('handshake', detail),
    onDisconnect: (socket, code) => events.emit('disconnect', { reason: closeReasons.of(socket, code), code }),
  });

  const retention = new Retention({
    pool,
    tokens,
    outboxRetention: options.outboxRetention,
    pruneInterval: options.pruneInterval,
    onWarning: (error) => events.emit('warning', error),
  });

  app.decorate<TaskEventsDecorator>('taskEvents', {
    issueToken: (identity) => tokens.issue(identity),
    migrate: () => migrate(pool),
    prune: () => retention.prune(),
    stats: () => hub.stats(),
    metrics: registry,
    health: () => health.check(),
    events,
  });

  app.addHook('onReady', async () => {
    await checkDatabase(pool, app.log);
    cursors = new CursorCodec(await cursorKey(pool));
    await listener.start();
  });
  app.addHook('onClose', async () => {
    stopMetrics?.();
    heartbeat.close();
    limiter?.close();
    await retention.close();
    await listener.close();
    if (!options.pool) await endPool(pool);
  });
};

/** The plugin: `app.register(taskEvents, { connectionString, ... })`. */
export const taskEvents = fp(taskEventsPlugin, { fastify: '5.x', name: 'fastify-task-events' });
export default taskEvents;
