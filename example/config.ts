// The example server's settings, read once from the environment. A malformed value stops startup
// with a message naming the variable and what it allows; an empty value counts as unset.

/** Pino levels accepted by `LOG_LEVEL`. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** One of {@link LOG_LEVELS}. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Defaults of the example server (the plugin's own defaults apply to its options). */
export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 3000;
export const DEFAULT_LOG_LEVEL: LogLevel = 'info';
/** Next to the usual 5432, so a PostgreSQL already installed on the machine keeps its port. */
export const DEFAULT_EMBEDDED_PG_PORT = 5433;

/** Node timers overflow (and fire after 1 ms) past this many milliseconds. */
const MAX_TIMER_MS = 2_147_483_647;

/** The plugin options the environment can override; unset ones keep the plugin's defaults. */
export interface TaskEventsSettings {
  messageTime?: number;
  messageLimit?: number;
  tokenTtl?: number;
  heartbeatInterval?: number;
  maxBufferedBytes?: number;
  outboxRetention?: number;
  /** `false` when `TASK_EVENTS_RATE_LIMIT_MAX=0`; a field left out keeps the plugin's default. */
  rateLimit?: { max?: number; timeWindow?: number } | false;
  allowedOrigins?: string[];
  requireOrigin?: boolean;
  maxConnectionsPerUser?: number;
  maxConnectionsPerIp?: number;
  maxConnections?: number;
}

/** Everything the example server reads from the environment. */
export interface Config {
  /** `DATABASE_URL`; unset: an embedded PostgreSQL with its data under `.data/`. */
  databaseUrl: string | undefined;
  /** `EMBEDDED_PG_PORT`: where the embedded PostgreSQL listens (0: any free port). */
  embeddedPostgresPort: number;
  host: string;
  port: number;
  logLevel: LogLevel;
  taskEvents: TaskEventsSettings;
}

/** A malformed environment variable; the message names it and what it allows. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Env = Record<string, string | undefined>;

function read(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value === '' ? undefined : value;
}

function integer(env: Env, name: string, min: number, max: number, allows: string): number | undefined {
  const value = read(env, name);
  if (value === undefined) return undefined;
  const parsed = /^[0-9]+$/.test(value) ? Number(value) : Number.NaN;
  if (!(parsed >= min && parsed <= max)) throw new ConfigError(`${name} must be ${allows}, got '${value}'`);
  return parsed;
}

function milliseconds(env: Env, name: string): number | undefined {
  return integer(env, name, 1, MAX_TIMER_MS, `a positive integer of milliseconds, at most ${MAX_TIMER_MS}`);
}

function databaseUrl(env: Env): string | undefined {
  const value = read(env, 'DATABASE_URL');
  if (value === undefined) return undefined;
  let protocol: string | undefined;
  try {
    protocol = new URL(value).protocol;
  } catch {
    // The value may hold a password: it is not repeated in the message.
  }
  if (protocol !== 'postgres:' && protocol !== 'postgresql:') {
    throw new ConfigError('DATABASE_URL must be a postgres://user:password@host:port/database URL (or unset for an embedded PostgreSQL)');
  }
  return value;
}

function logLevel(env: Env): LogLevel {
  const value = read(env, 'LOG_LEVEL');
  if (value === undefined) return DEFAULT_LOG_LEVEL;
  if (!(LOG_LEVELS as readonly string[]).includes(value)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got '${value}'`);
  }
  return value as LogLevel;
}

function rateLimit(env: Env): TaskEventsSettings['rateLimit'] {
  const max = integer(env, 'TASK_EVENTS_RATE_LIMIT_MAX', 0, Number.MAX_SAFE_INTEGER, 'a non-negative integer (0 turns the limit off)');
  const timeWindow = milliseconds(env, 'TASK_EVENTS_RATE_LIMIT_WINDOW_MS');
  if (max === 0) return false;
  if (max === undefined && timeWindow === undefined) return undefined;
  return { ...(max !== undefined && { max }), ...(timeWindow !== undefined && { timeWindow }) };
}

/** `TASK_EVENTS_ALLOWED_ORIGINS=https://a.example,https://b.example`: each a bare origin. */
function allowedOrigins(env: Env): string[] | undefined {
  const value = read(env, 'TASK_EVENTS_ALLOWED_ORIGINS');
  if (value === undefined) return undefined;
  const origins = value.split(',').map((entry) => entry.trim());
  for (const origin of origins) {
    let url: URL | undefined;
    try {
      url = new URL(origin);
    } catch {
      // reported below
    }
    const bare = url && (url.protocol === 'http:' || url.protocol === 'https:') && url.pathname === '/' && !url.search && !url.hash && !url.username && !origin.endsWith('/') && /^[a-z0-9.-]+$|^\[[0-9a-f:.]+\]$/i.test(url.hostname);
    if (!bare) {
      throw new ConfigError(`TASK_EVENTS_ALLOWED_ORIGINS must be a comma-separated list of origins like https://app.example.com (scheme://host[:port], no path), got '${value}'`);
    }
  }
  return origins;
}

function boolean(env: Env, name: string): boolean | undefined {
  const value = read(env, name);
  if (value === undefined) return undefined;
  if (value === 'true' || value === '1') return true;
  if (value === 'false' || value === '0') return false;
  throw new ConfigError(`${name} must be true, false, 1 or 0, got '${value}'`);
}

function connectionCap(env: Env, name: string): number | undefined {
  return integer(env, name, 0, MAX_TIMER_MS, `an integer from 0 (no cap) to ${MAX_TIMER_MS}`);
}

/** Reads and validates the environment; throws a {@link ConfigError} on the first bad value. */
export function loadConfig(env: Env = process.env): Config {
  const taskEvents: TaskEventsSettings = {
    messageTime: milliseconds(env, 'TASK_EVENTS_MESSAGE_TIME_MS'),
    messageLimit: integer(env, 'TASK_EVENTS_MESSAGE_LIMIT', 1, Number.MAX_SAFE_INTEGER, 'a positive integer'),
    tokenTtl: milliseconds(env, 'TASK_EVENTS_TOKEN_TTL_MS'),
    rateLimit: rateLimit(env),
    heartbeatInterval: milliseconds(env, 'TASK_EVENTS_HEARTBEAT_MS'),
    maxBufferedBytes: integer(env, 'TASK_EVENTS_MAX_BUFFERED_BYTES', 1, MAX_TIMER_MS, `a positive integer of bytes, at most ${MAX_TIMER_MS}`),
    outboxRetention: milliseconds(env, 'TASK_EVENTS_OUTBOX_RETENTION_MS'),
    allowedOrigins: allowedOrigins(env),
    requireOrigin: boolean(env, 'TASK_EVENTS_REQUIRE_ORIGIN'),
    maxConnectionsPerUser: connectionCap(env, 'TASK_EVENTS_MAX_CONNECTIONS_PER_USER'),
    maxConnectionsPerIp: connectionCap(env, 'TASK_EVENTS_MAX_CONNECTIONS_PER_IP'),
    maxConnections: connectionCap(env, 'TASK_EVENTS_MAX_CONNECTIONS'),
  };
  const host = read(env, 'HOST') ?? DEFAULT_HOST;
  if (/\s/.test(host)) throw new ConfigError(`HOST must be a host name or IP address, got '${host}'`);
  return {
    databaseUrl: databaseUrl(env),
    embeddedPostgresPort: integer(env, 'EMBEDDED_PG_PORT', 0, 65535, 'a port number from 0 to 65535 (0: any free port)') ?? DEFAULT_EMBEDDED_PG_PORT,
    host,
    port: integer(env, 'PORT', 0, 65535, 'a port number from 0 to 65535') ?? DEFAULT_PORT,
    logLevel: logLevel(env),
    // Unset keys are left out, so the plugin's own defaults apply.
    taskEvents: Object.fromEntries(Object.entries(taskEvents).filter(([, value]) => value !== undefined)),
  };
}
