import type { FastifyRequest } from 'fastify';
import type pg from 'pg';
import { HostErrors } from './errors.js';
import { METRICS_OPTION, type MetricsOptions } from './metrics.js';
import {
  callback, connectionCap, falseOr, flag, nonEmptyString, origins, pgPool, positiveInteger, record, Refusal, urlPath, type Check,
} from './option-checks.js';

/** Who a token belongs to: one user of one environment (tenant). */
export interface Identity {
  environmentId: number;
  userId: number;
}

/**
 * Resolves a token to its identity, or `null` when it is unknown, expired or used. Throwing (or
 * rejecting) means authentication itself failed: the upgrade is refused with HTTP 500.
 */
export type Authenticate = (token: string, request: FastifyRequest) => Promise<Identity | null> | Identity | null;

/** Connection attempts allowed per client IP in a sliding window. */
export interface RateLimitOptions {
  /** Attempts allowed per window. */
  max: number;
  /** The window, in milliseconds. */
  timeWindow: number;
}

/** What `app.register(taskEvents, options)` takes. */
export interface TaskEventsOptions {
  /** PostgreSQL connection string; or give `pool`. */
  connectionString?: string;
  /** A pool of the host app's. It is not ended by the plugin. */
  pool?: pg.Pool;
  /** Milliseconds between two messages to a client (default 5000). */
  messageTime?: number;
  /** Most events in one message; this many waiting are sent at once (default 1000). */
  messageLimit?: number;
  /** The endpoint (default `/ws/events/tasks/`); served with and without the trailing slash. */
  path?: string;
  /**
   * Upgrades to any other path under this prefix get `ERR_INCORRECT_URL` (default `/ws/`);
   * `false` leaves other paths to the host app.
   */
  unknownPathPrefix?: string | false;
  /** Replaces the default one-time token store. */
  authenticate?: Authenticate;
  /** Lifetime of tokens from `issueToken`, in milliseconds (default 60000). */
  tokenTtl?: number;
  /** Connection attempts per client IP (default 60 a minute); `false` turns the limit off. */
  rateLimit?: Partial<RateLimitOptions> | false;
  /**
   * Milliseconds between two reads of the outbox when no NOTIFY woke the listener (default 2000):
   * bounds the delay of an event whose wake-up was lost with a dropped connection.
   */
  pollInterval?: number;
  /** Outbox rows read per query (default 5000). */
  readBatchSize?: number;
  /** Apply our migrations at startup (default `false`: the host applies them, see README). */
  migrate?: boolean;
  /** Milliseconds between pings; a client that has not answered the last one is dropped (default 30000). */
  heartbeatInterval?: number;
  /**
   * A client with more unsent bytes than this is closed with 1013 (default 4 MiB: about forty full
   * messages of 1,000 events, a minute of backlog or more for a client that still reads at all).
   */
  maxBufferedBytes?: number;
  /** Outbox rows older than this many milliseconds are deleted (default 86400000: a day). */
  outboxRetention?: number;
  /** Milliseconds between two pruning rounds of the outbox and the token table (default 60000). */
  pruneInterval?: number;
  /**
   * Origins (`scheme://host[:port]`) whose pages may open the endpoint; a handshake with another
   * `Origin` header is refused with HTTP 403. Unset (the default): every origin. Compared exactly,
   * lower-cased, no wildcards.
   */
  allowedOrigins?: readonly string[];
  /** Refuse (403) handshakes without an `Origin` header too (default `false`: server-to-server clients send none). */
  requireOrigin?: boolean;
  /** Open connections per user (environment and user id) in this process (default 100; `0`: no cap). */
  maxConnectionsPerUser?: number;
  /** Open connections per client IP in this process (default 1000; `0`: no cap). */
  maxConnectionsPerIp?: number;
  /** Open connections in this process (default 10000; `0`: no cap). */
  maxConnections?: number;
  /** Prometheus metrics in `app.taskEvents.metrics` (default: a registry of their own, names prefixed `task_events_`); `false`: none. */
  metrics?: MetricsOptions | false;
}

const DEFAULT_RATE_LIMIT: Readonly<RateLimitOptions> = Object.freeze({ max: 60, timeWindow: 60_000 });

/** How one option is checked, its default, and the example server's environment variable for it. */
interface OptionSpec<In> {
  readonly check: Check<In, unknown>;
  readonly default: unknown;
  /** The variable (README, "The example server's environment"); for an object option, one per field. */
  readonly env?: string | Readonly<Record<string, string>>;
}

/** Every option of {@link TaskEventsOptions}, and nothing else: adding one to either fails to compile until both have it. */
type OptionTable = { readonly [K in keyof TaskEventsOptions]-?: OptionSpec<Exclude<TaskEventsOptions[K], undefined>> };

const table = {
  connectionString: { check: nonEmptyString, default: undefined },
  pool: { check: pgPool, default: undefined },
  messageTime: { check: positiveInteger, default: 5000, env: 'TASK_EVENTS_MESSAGE_TIME_MS' },
  messageLimit: { check: positiveInteger, default: 1000, env: 'TASK_EVENTS_MESSAGE_LIMIT' },
  path: { check: urlPath, default: '/ws/events/tasks/' },
  unknownPathPrefix: { check: falseOr(urlPath), default: '/ws/' },
  authenticate: { check: callback<Authenticate>(), default: undefined },
  tokenTtl: { check: positiveInteger, default: 60_000, env: 'TASK_EVENTS_TOKEN_TTL_MS' },
  rateLimit: {
    check: falseOr(record({ max: positiveInteger, timeWindow: positiveInteger }, DEFAULT_RATE_LIMIT), 'false or { max, timeWindow }'),
    default: DEFAULT_RATE_LIMIT,
    env: { max: 'TASK_EVENTS_RATE_LIMIT_MAX', timeWindow: 'TASK_EVENTS_RATE_LIMIT_WINDOW_MS' },
  },
  pollInterval: { check: positiveInteger, default: 2000 },
  readBatchSize: { check: positiveInteger, default: 5000 },
  migrate: { check: flag, default: false },
  heartbeatInterval: { check: positiveInteger, default: 30_000, env: 'TASK_EVENTS_HEARTBEAT_MS' },
  maxBufferedBytes: { check: positiveInteger, default: 4 * 1024 * 1024, env: 'TASK_EVENTS_MAX_BUFFERED_BYTES' },
  outboxRetention: { check: positiveInteger, default: 24 * 60 * 60 * 1000, env: 'TASK_EVENTS_OUTBOX_RETENTION_MS' },
  pruneInterval: { check: positiveInteger, default: 60_000 },
  /** `null`: every origin. */
  allowedOrigins: { check: origins, default: null, env: 'TASK_EVENTS_ALLOWED_ORIGINS' },
  requireOrigin: { check: flag, default: false, env: 'TASK_EVENTS_REQUIRE_ORIGIN' },
  /** Tabs and integrations of one person; far more is a leaked token or a loop. */
  maxConnectionsPerUser: { check: connectionCap, default: 100, env: 'TASK_EVENTS_MAX_CONNECTIONS_PER_USER' },
  /** An office or a mobile carrier behind one NAT address. */
  maxConnectionsPerIp: { check: connectionCap, default: 1000, env: 'TASK_EVENTS_MAX_CONNECTIONS_PER_IP' },
  /** Bounds memory and file descriptors of one process (a socket costs tens of KB with its buffers). */
  maxConnections: { check: connectionCap, default: 10_000, env: 'TASK_EVENTS_MAX_CONNECTIONS' },
  metrics: METRICS_OPTION,
} satisfies OptionTable;

/** The options: each one's check, default and environment variable, in the order of {@link TaskEventsOptions}. Frozen. */
export const OPTIONS: typeof table = Object.freeze(table);
for (const spec of Object.values(OPTIONS)) Object.freeze(spec);

const NAMES = Object.keys(OPTIONS) as (keyof TaskEventsOptions)[];

type Resolved<S extends OptionSpec<unknown>> = Exclude<ReturnType<S['check']['resolve']>, Refusal> | S['default'];

/** The options after validation: every field set, frozen. (Over `Required<…>`: `-?` would strip `undefined` from `connectionString` too.) */
export type ResolvedOptions = { readonly [K in keyof Required<TaskEventsOptions>]: Resolved<(typeof table)[K]> };

/** Raised at registration for a bad option (`code` `FST_TASK_EVENTS_OPTION`); the message names the option and what it allows. */
export const OptionError = HostErrors.OPTION;
export type OptionError = InstanceType<typeof OptionError>;

function describe(value: unknown): string {
  if (typeof value === 'function') return 'a function';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

function refused(name: string, refusal: Refusal): OptionError {
  const option = refusal.field === undefined ? name : `${name}.${refusal.field}`;
  const got = refusal.secret ? '' : `, got ${describe(refusal.value)}`;
  return new OptionError(`option "${option}" must be ${refusal.allows}${got}`);
}

/** Validates the options once, at `register`, into a frozen object. */
export function resolveOptions(options: TaskEventsOptions = {}): ResolvedOptions {
  for (const key of Object.keys(options)) {
    if (!Object.hasOwn(OPTIONS, key)) throw new OptionError(`unknown option "${key}"; known options: ${NAMES.join(', ')}`);
  }
  const resolved: Record<string, unknown> = {};
  for (const name of NAMES) {
    const value = options[name];
    const result = value === undefined ? OPTIONS[name].default : OPTIONS[name].check.resolve(value);
    if (result instanceof Refusal) throw refused(name, result);
    resolved[name] = result;
  }
  if ((options.connectionString === undefined) === (options.pool === undefined)) {
    throw new OptionError('give exactly one of the options "connectionString" and "pool"');
  }
  return Object.freeze(resolved as ResolvedOptions);
}
