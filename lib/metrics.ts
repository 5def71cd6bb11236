// Prometheus metrics (prom-client), fed by the events the parts emit on `app.taskEvents.events`:
// the hot paths do no metric work of their own. Each listener below runs once per handshake,
// socket close, fetched batch or message (never per event or per socket), and what is a reading
// of state (connections, outbox size) is read at scrape time.
import type { EventEmitter } from 'node:events';
import type pg from 'pg';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { withDeadline } from './deadline.js';
import { HostErrors } from './errors.js';
import { falseOr, record, Refusal, type Check } from './option-checks.js';
import {
  DISCONNECT_REASONS, HANDSHAKE_OUTCOMES, secondsSince, subscribe, type DisconnectReason, type FlushedDetail, type HandshakeDetail, type ReadDetail,
} from './signals.js';

/** The `metrics` option: where the metrics are registered, and their names' prefix. */
export interface MetricsOptions {
  /** A registry of the host's (e.g. the one its `/metrics` serves); default: a new one of the plugin's own. */
  registry?: Registry;
  /** Prepended to every name (default `task_events_`). */
  prefix?: string;
}

const DEFAULT_METRICS = Object.freeze<{ registry: Registry | undefined; prefix: string }>({ registry: undefined, prefix: 'task_events_' });

const REGISTRY = 'a prom-client Registry';
const PREFIX = 'a metric name prefix: letters, digits, "_" and ":", not starting with a digit (or "")';

const registry: Check<Registry | undefined, Registry | undefined> = Object.freeze({
  allows: REGISTRY,
  // By shape, not instanceof: the host's prom-client may be another copy than ours.
  resolve: (value: unknown) => (typeof value === 'object' && value !== null
    && typeof (value as Registry).registerMetric === 'function' && typeof (value as Registry).metrics === 'function'
    ? (value as Registry)
    : new Refusal(REGISTRY, value)),
});

const prefix: Check<string, string> = Object.freeze({
  allows: PREFIX,
  resolve: (value: unknown) => (typeof value === 'string' && /^(?:[a-zA-Z_:][a-zA-Z0-9_:]*)?$/.test(value) ? value : new Refusal(PREFIX, value)),
});

/** The `metrics` option's check and default, for the options table (lib/options.ts). */
export const METRICS_OPTION = Object.freeze({
  check: falseOr(record({ registry, prefix }, DEFAULT_METRICS), 'false or { registry, prefix }'),
  default: DEFAULT_METRICS,
});

/**
 * Seconds. Reads are normally under 0.25 s behind a commit, messages up to `messageTime` (5 s by
 * default) behind their oldest event: finer steps around 5–7 s make "p99 above messageTime + 1 s"
 * exact enough to alert on; 30 s and above is an outage.
 */
export const LAG_BUCKETS: readonly number[] = Object.freeze([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 5.5, 6, 7, 8, 10, 15, 20, 30]);

/** `resumes_total{outcome}`: a v2 handshake with a cursor accepted, refused as malformed or tampered, or too old. */
const RESUME_OUTCOMES = Object.freeze(['ok', 'invalid', 'expired']);

/** A scrape waits this long for the outbox size, then keeps the last one (the database may be down). */
const OUTBOX_ROWS_DEADLINE = 1000;

// The statistics collector's live row count: no scan, however large the outbox; it trails writes
// by a second or so. Null before migrations.
const OUTBOX_ROWS = `SELECT n_live_tup AS rows FROM pg_stat_user_tables WHERE relid = to_regclass('task_events.outbox')`;

/** What the metrics read. */
export interface MetricSources {
  /** `app.taskEvents.events`. */
  events: EventEmitter;
  pool: pg.Pool;
  /** Open sockets now. */
  connections: () => number;
}

/** The names of the metrics, without their prefix (histograms add `_bucket`, `_sum` and `_count`). */
export const METRIC_NAMES = Object.freeze([
  'connections', 'handshakes_total', 'disconnects_total', 'events_read_total', 'messages_sent_total', 'bytes_sent_total',
  'read_lag_seconds', 'delivery_lag_seconds', 'listener_connected', 'listener_reconnects_total', 'resumes_total', 'outbox_rows',
] as const);

/**
 * Registers the plugin's metrics in `target` (names prefixed `namePrefix`) and feeds them from
 * `sources`. Returns a function that stops feeding them and takes them out of the registry again
 * (so that a host's registry can take a new instance after a close).
 */
export function registerMetrics(target: Registry, namePrefix: string, sources: MetricSources): () => void {
  const taken = METRIC_NAMES.filter((name) => target.getSingleMetric(namePrefix + name) !== undefined);
  if (taken.length > 0) {
    throw new HostErrors.OPTION(`option "metrics.registry" already holds ${namePrefix}${taken[0]}: give each instance its own registry or prefix`);
  }
  const registers = [target];
  const name = (suffix: (typeof METRIC_NAMES)[number]): string => namePrefix + suffix;
  const lag = (suffix: 'read_lag_seconds' | 'delivery_lag_seconds', help: string): Histogram =>
    new Histogram({ name: name(suffix), help, buckets: [...LAG_BUCKETS], registers });
  // Readings of state, taken at scrape time.
  new Gauge({
    name: name('connections'), help: 'Open WebSocket connections receiving events.', registers,
    collect() {
      this.set(sources.connections());
    },
  });
  new Gauge({
    name: name('outbox_rows'), help: 'Rows in the outbox (the statistics collector\'s count).', registers,
    async collect() {
      const rows = await outboxRows(sources.pool).catch(() => null);
      if (rows !== null) this.set(rows);
    },
  });
  const unsubscribe = feed(sources.events, {
    handshakes: new Counter({ name: name('handshakes_total'), help: 'Handshakes on the endpoint, by outcome.', labelNames: ['outcome'], registers }),
    disconnects: new Counter({ name: name('disconnects_total'), help: 'Connections closed, by reason.', labelNames: ['reason'], registers }),
    eventsRead: new Counter({ name: name('events_read_total'), help: 'Events read from the outbox.', registers }),
    messagesSent: new Counter({ name: name('messages_sent_total'), help: 'Event messages sent, counted per socket.', registers }),
    bytesSent: new Counter({ name: name('bytes_sent_total'), help: 'Bytes of event messages sent, counted per socket.', registers }),
    readLag: lag('read_lag_seconds', 'From the creation of the oldest event of a fetched batch to its read.'),
    deliveryLag: lag('delivery_lag_seconds', 'From the creation of the oldest event of a message to its sending.'),
    listenerConnected: new Gauge({ name: name('listener_connected'), help: '1 while the LISTEN connection is up.', registers }),
    reconnects: new Counter({ name: name('listener_reconnects_total'), help: 'Times the LISTEN connection was lost and restored.', registers }),
    resumes: new Counter({ name: name('resumes_total'), help: 'v2 resumes by cursor, by outcome.', labelNames: ['outcome'], registers }),
  });
  return () => {
    unsubscribe();
    for (const suffix of METRIC_NAMES) target.removeSingleMetric(name(suffix));
  };
}

/** The families that events update. */
interface Families {
  handshakes: Counter<'outcome'>;
  disconnects: Counter<'reason'>;
  eventsRead: Counter;
  messagesSent: Counter;
  bytesSent: Counter;
  readLag: Histogram;
  deliveryLag: Histogram;
  listenerConnected: Gauge;
  reconnects: Counter;
  resumes: Counter<'outcome'>;
}

/** Subscribes the families to the parts' events; returns what unsubscribes them. */
function feed(events: EventEmitter, metrics: Families): () => void {
  // Every label value from the start, so that rates and alerts see a 0 before the first one.
  for (const outcome of HANDSHAKE_OUTCOMES) metrics.handshakes.inc({ outcome }, 0);
  for (const reason of DISCONNECT_REASONS) metrics.disconnects.inc({ reason }, 0);
  for (const outcome of RESUME_OUTCOMES) metrics.resumes.inc({ outcome }, 0);
  metrics.listenerConnected.set(0);

  let connectedBefore = false;
  return subscribe(events, {
    handshake: ({ outcome, resume }: HandshakeDetail) => {
      metrics.handshakes.inc({ outcome });
      const resumed = outcome === 'invalid_cursor' ? 'invalid' : outcome === 'cursor_expired' ? 'expired' : outcome === 'ok' && resume ? 'ok' : null;
      if (resumed) metrics.resumes.inc({ outcome: resumed });
    },
    disconnect: ({ reason }: { reason: DisconnectReason }) => metrics.disconnects.inc({ reason }),
    read: ({ events: count, oldest }: ReadDetail) => {
      metrics.eventsRead.inc(count);
      metrics.readLag.observe(secondsSince(oldest));
    },
    flushed: ({ sockets, bytes, oldest, backlog }: FlushedDetail) => {
      if (sockets === 0) return;
      metrics.messagesSent.inc(sockets);
      metrics.bytesSent.inc(bytes * sockets);
      if (!backlog) metrics.deliveryLag.observe(secondsSince(oldest));
    },
    connected: () => {
      metrics.listenerConnected.set(1);
      if (connectedBefore) metrics.reconnects.inc();
      connectedBefore = true;
    },
    reconnecting: () => metrics.listenerConnected.set(0),
  });
}

/** The outbox's row count as the statistics collector has it; `null` when it cannot be read in time. */
async function outboxRows(pool: pg.Pool): Promise<number | null> {
  const { rows } = await withDeadline(pool.query<{ rows: string | null }>(OUTBOX_ROWS), OUTBOX_ROWS_DEADLINE, 'reading the outbox size');
  const count = rows[0]?.rows;
  return count === undefined || count === null ? null : Number(count);
}
