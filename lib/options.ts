import type { FastifyRequest } from 'fastify';
import type pg from 'pg';

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
}

/** The options after validation: every field set, frozen. */
export interface ResolvedOptions {
  readonly connectionString: string | undefined;
  readonly pool: pg.Pool | undefined;
  readonly messageTime: number;
  readonly messageLimit: number;
  readonly path: string;
  readonly unknownPathPrefix: string | false;
  readonly authenticate: Authenticate | undefined;
  readonly tokenTtl: number;
  readonly rateLimit: Readonly<RateLimitOptions> | false;
  readonly pollInterval: number;
  readonly readBatchSize: number;
  readonly migrate: boolean;
  readonly heartbeatInterval: number;
  readonly maxBufferedBytes: number;
  readonly outboxRetention: number;
  readonly pruneInterval: number;
  /** Lower-cased origins; `null`: every origin. */
  readonly allowedOrigins: ReadonlySet<string> | null;
  readonly requireOrigin: boolean;
  /** `0`: no cap. */
  readonly maxConnectionsPerUser: number;
  readonly maxConnectionsPerIp: number;
  readonly maxConnections: number;
}

export const DEFAULT_MESSAGE_TIME = 5000;
export const DEFAULT_MESSAGE_LIMIT = 1000;
export const DEFAULT_PATH = '/ws/events/tasks/';
export const DEFAULT_UNKNOWN_PATH_PREFIX = '/ws/';
export const DEFAULT_TOKEN_TTL = 60_000;
export const DEFAULT_RATE_LIMIT: RateLimitOptions = Object.freeze({ max: 60, timeWindow: 60_000 });
export const DEFAULT_POLL_INTERVAL = 2000;
export const DEFAULT_READ_BATCH_SIZE = 5000;
export const DEFAULT_HEARTBEAT_INTERVAL = 30_000;
export const DEFAULT_MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
export const DEFAULT_OUTBOX_RETENTION = 24 * 60 * 60 * 1000;
export const DEFAULT_PRUNE_INTERVAL = 60_000;
/** Tabs and integrations of one person; far more is a leaked token or a loop. */
export const DEFAULT_MAX_CONNECTIONS_PER_USER = 100;
/** An office or a mobile carrier behind one NAT address. */
export const DEFAULT_MAX_CONNECTIONS_PER_IP = 1000;
/** Bounds memory and file descriptors of one process (a socket costs tens of KB with its buffers). */
export const DEFAULT_MAX_CONNECTIONS = 10_000;

const KNOWN = new Set([
  'connectionString', 'pool', 'messageTime', 'messageLimit', 'path', 'unknownPathPrefix',
  'authenticate', 'tokenTtl', 'rateLimit', 'pollInterval', 'readBatchSize', 'migrate',
  'heartbeatInterval', 'maxBufferedBytes', 'outboxRetention', 'pruneInterval',
  'allowedOrigins', 'requireOrigin', 'maxConnectionsPerUser', 'maxConnectionsPerIp', 'maxConnections',
]);

/** Raised at registration for a bad option; the message names the option and what it allows. */
export class OptionError extends Error {
  override name = 'TaskEventsOptionError';
}

/** Node's timers fire at once past this many milliseconds, so no duration may exceed it. */
const MAX_INTEGER = 2_147_483_647;

function positiveInteger(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_INTEGER) {
    throw new OptionError(`fastify-task-events: option "${name}" must be a positive integer up to ${MAX_INTEGER}, got ${describe(value)}`);
  }
  return value;
}

function cap(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_INTEGER) {
    throw new OptionError(`fastify-task-events: option "${name}" must be an integer from 0 (no cap) to ${MAX_INTEGER}, got ${describe(value)}`);
  }
  return value;
}

/** `https://App.example.com` → `https://app.example.com`: what a browser sends as `Origin`. */
function origins(value: unknown): ReadonlySet<string> | null {
  if (value === undefined) return null;
  const fail = (): never => {
    throw new OptionError(`fastify-task-events: option "allowedOrigins" must be an array of origins like "https://app.example.com" (scheme://host[:port], no path), got ${describe(value)}`);
  };
  if (!Array.isArray(value)) return fail();
  const allowed = new Set<string>();
  for (const entry of value) {
    if (typeof entry !== 'string') return fail();
    let url: URL;
    try {
      url = new URL(entry);
    } catch {
      return fail();
    }
    const bare = url.pathname === '/' && !url.search && !url.hash && !url.username && !url.password && !entry.endsWith('/');
    // `https://*.example.com` parses as a URL; wildcards are not supported, so it must not pass.
    const host = /^[a-z0-9.-]+$|^\[[0-9a-f:.]+\]$/i.test(url.hostname);
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || !bare || !host) return fail();
    allowed.add(url.origin.toLowerCase());
  }
  return allowed;
}

function urlPath(name: string, value: unknown, fallback: string): string {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !/^\/[\w\-./]*$/.test(value)) {
    throw new OptionError(`fastify-task-events: option "${name}" must be a URL path starting with "/", got ${describe(value)}`);
  }
  return value;
}

function describe(value: unknown): string {
  if (typeof value === 'function') return 'a function';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** Validates the options once, at `register`, into a frozen object. */
export function resolveOptions(options: TaskEventsOptions = {}): ResolvedOptions {
  for (const key of Object.keys(options)) {
    if (!KNOWN.has(key)) {
      throw new OptionError(`fastify-task-events: unknown option "${key}"; known options: ${[...KNOWN].join(', ')}`);
    }
  }
  const { connectionString, pool, authenticate, rateLimit, unknownPathPrefix, migrate, requireOrigin } = options;
  if (connectionString !== undefined && (typeof connectionString !== 'string' || connectionString === '')) {
    throw new OptionError(`fastify-task-events: option "connectionString" must be a non-empty string, got ${describe(connectionString)}`);
  }
  if (pool !== undefined && (typeof pool !== 'object' || pool === null || typeof (pool as pg.Pool).query !== 'function')) {
    throw new OptionError('fastify-task-events: option "pool" must be a pg.Pool');
  }
  if ((connectionString === undefined) === (pool === undefined)) {
    throw new OptionError('fastify-task-events: give exactly one of the options "connectionString" and "pool"');
  }
  if (authenticate !== undefined && typeof authenticate !== 'function') {
    throw new OptionError(`fastify-task-events: option "authenticate" must be a function, got ${describe(authenticate)}`);
  }
  if (migrate !== undefined && typeof migrate !== 'boolean') {
    throw new OptionError(`fastify-task-events: option "migrate" must be true or false, got ${describe(migrate)}`);
  }
  if (requireOrigin !== undefined && typeof requireOrigin !== 'boolean') {
    throw new OptionError(`fastify-task-events: option "requireOrigin" must be true or false, got ${describe(requireOrigin)}`);
  }
  let resolvedRateLimit: Readonly<RateLimitOptions> | false = DEFAULT_RATE_LIMIT;
  if (rateLimit === false) resolvedRateLimit = false;
  else if (rateLimit !== undefined) {
    if (typeof rateLimit !== 'object' || rateLimit === null) {
      throw new OptionError(`fastify-task-events: option "rateLimit" must be false or { max, timeWindow }, got ${describe(rateLimit)}`);
    }
    resolvedRateLimit = Object.freeze({
      max: positiveInteger('rateLimit.max', rateLimit.max, DEFAULT_RATE_LIMIT.max),
      timeWindow: positiveInteger('rateLimit.timeWindow', rateLimit.timeWindow, DEFAULT_RATE_LIMIT.timeWindow),
    });
  }
  const path = urlPath('path', options.path, DEFAULT_PATH);
  return Object.freeze({
    connectionString,
    pool,
    messageTime: positiveInteger('messageTime', options.messageTime, DEFAULT_MESSAGE_TIME),
    messageLimit: positiveInteger('messageLimit', options.messageLimit, DEFAULT_MESSAGE_LIMIT),
    path,
    unknownPathPrefix: unknownPathPrefix === false ? false : urlPath('unknownPathPrefix', unknownPathPrefix, DEFAULT_UNKNOWN_PATH_PREFIX),
    authenticate,
    tokenTtl: positiveInteger('tokenTtl', options.tokenTtl, DEFAULT_TOKEN_TTL),
    rateLimit: resolvedRateLimit,
    pollInterval: positiveInteger('pollInterval', options.pollInterval, DEFAULT_POLL_INTERVAL),
    readBatchSize: positiveInteger('readBatchSize', options.readBatchSize, DEFAULT_READ_BATCH_SIZE),
    migrate: migrate ?? false,
    heartbeatInterval: positiveInteger('heartbeatInterval', options.heartbeatInterval, DEFAULT_HEARTBEAT_INTERVAL),
    maxBufferedBytes: positiveInteger('maxBufferedBytes', options.maxBufferedBytes, DEFAULT_MAX_BUFFERED_BYTES),
    outboxRetention: positiveInteger('outboxRetention', options.outboxRetention, DEFAULT_OUTBOX_RETENTION),
    pruneInterval: positiveInteger('pruneInterval', options.pruneInterval, DEFAULT_PRUNE_INTERVAL),
    allowedOrigins: origins(options.allowedOrigins),
    requireOrigin: requireOrigin ?? false,
    maxConnectionsPerUser: cap('maxConnectionsPerUser', options.maxConnectionsPerUser, DEFAULT_MAX_CONNECTIONS_PER_USER),
    maxConnectionsPerIp: cap('maxConnectionsPerIp', options.maxConnectionsPerIp, DEFAULT_MAX_CONNECTIONS_PER_IP),
    maxConnections: cap('maxConnections', options.maxConnections, DEFAULT_MAX_CONNECTIONS),
  });
}
