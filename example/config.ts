// The example server's settings, read once from the environment; an empty value counts as unset.
// The plugin's settings come from its options table (OPTIONS): the variables it names, each text
// parsed as its option's kind of value and checked by the plugin's own check, so a bad value stops
// startup with what the plugin allows, said of the variable.
import { OPTIONS, Refusal, type Check, type TaskEventsOptions } from '../lib/index.js';

/** Pino levels accepted by `LOG_LEVEL`. */
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

type LogLevel = (typeof LOG_LEVELS)[number];

/** Defaults of the example server (the plugin's own defaults apply to its options). */
const DEFAULT_HOST = '127.0.0.1';
const DEFAULT_PORT = 3000;
const DEFAULT_LOG_LEVEL: LogLevel = 'info';
/** Next to the usual 5432, so a PostgreSQL already installed on the machine keeps its port. */
const DEFAULT_EMBEDDED_PG_PORT = 5433;

type Options = typeof OPTIONS;

/** The plugin options the environment can set: those the options table names a variable for. */
type EnvOption = { [K in keyof Options]: Options[K] extends { env: unknown } ? K : never }[keyof Options];

/** The plugin options the environment sets; unset ones keep the plugin's defaults. */
export type TaskEventsSettings = Pick<TaskEventsOptions, EnvOption>;

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

/** What `variable` spells, or `undefined` when it is unset; a value `check` refuses stops startup. */
function setting<T>(env: Env, variable: string, check: Check<T, unknown>): T | undefined {
  const text = read(env, variable);
  if (text === undefined) return undefined;
  const value = check.text ? check.text.parse(text) : text;
  const refusal = check.resolve(value);
  if (refusal instanceof Refusal) {
    throw new ConfigError(`${variable} must be ${check.text?.allows ?? refusal.allows}, got ${JSON.stringify(text)}`);
  }
  return value as T;
}

/** One variable a field; a field left unset keeps the plugin's default, and `0` attempts is `rateLimit: false`. */
function rateLimit(env: Env): TaskEventsSettings['rateLimit'] {
  const { check, env: variables } = OPTIONS.rateLimit;
  const off = read(env, variables.max) === '0';
  const limit = {
    max: off ? undefined : setting(env, variables.max, check.fields.max),
    timeWindow: setting(env, variables.timeWindow, check.fields.timeWindow),
  };
  if (off) return false;
  return defined(limit);
}

/** `value` without its undefined fields; `undefined` when none is left. */
function defined<T extends object>(value: T): Partial<T> | undefined {
  const entries = Object.entries(value).filter(([, field]) => field !== undefined);
  return entries.length > 0 ? (Object.fromEntries(entries) as Partial<T>) : undefined;
}

/** The plugin options the environment sets; unset ones are left out, so the plugin's defaults apply. */
function taskEvents(env: Env): TaskEventsSettings {
  const settings: Record<string, unknown> = { rateLimit: rateLimit(env) };
  for (const [option, spec] of Object.entries(OPTIONS)) {
    if ('env' in spec && typeof spec.env === 'string') settings[option] = setting<unknown>(env, spec.env, spec.check);
  }
  return defined(settings) ?? {};
}

/** Reads and validates the environment; throws a {@link ConfigError} on the first bad value. */
export function loadConfig(env: Env = process.env): Config {
  const settings = taskEvents(env);
  const host = read(env, 'HOST') ?? DEFAULT_HOST;
  if (/\s/.test(host)) throw new ConfigError(`HOST must be a host name or IP address, got '${host}'`);
  return {
    databaseUrl: databaseUrl(env),
    embeddedPostgresPort: integer(env, 'EMBEDDED_PG_PORT', 0, 65535, 'a port number from 0 to 65535 (0: any free port)') ?? DEFAULT_EMBEDDED_PG_PORT,
    host,
    port: integer(env, 'PORT', 0, 65535, 'a port number from 0 to 65535') ?? DEFAULT_PORT,
    logLevel: logLevel(env),
    taskEvents: settings,
  };
}
