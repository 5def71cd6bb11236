import createError from '@fastify/error';

/**
 * The error frames of the contract: code → detail text. Every error that reaches a client
 * comes from this table.
 */
export const ERRORS = Object.freeze({
  ERR_INCORRECT_URL: 'Incorrect WebSocket URL.',
  ERR_INVALID_UUID: 'A valid UUID is required.',
  RECEIVE_NOT_SUPPORTED: 'This WebSocket connection does not support receiving messages.',
  ERR_RATE_LIMIT_EXCEEDED: 'The rate limit for requests has been exceeded. Please wait before trying again.',
  ERR_INVALID_OBJECT_CLASS_IDS: 'object_class_ids must be a comma-separated list of integers.',
  ERR_INVALID_EVENT_TYPES: 'event_types must be a comma-separated list of event names.',
  ERR_INVALID_CURSOR: 'The cursor is malformed or was not issued by this service.',
  ERR_CURSOR_EXPIRED: 'The cursor is older than the events this service keeps; connect without it to start afresh.',
} as const);

/** One of the error codes a client can receive. */
export type ErrorCode = keyof typeof ERRORS;

/** The text of the frame for `code`: `{"type":"error","error_code":…,"detail":…}`. */
export function errorFrame(code: ErrorCode): string {
  return JSON.stringify({ type: 'error', error_code: code, detail: ERRORS[code] });
}

/**
 * Errors that reach the host app (thrown at `register`, `ready()` or by the exported functions),
 * each with a code it can test for: `error.code === 'FST_TASK_EVENTS_NOT_MIGRATED'`.
 */
export const HostErrors = Object.freeze({
  /** A bad option at `register`; the message names the option and what it allows. */
  OPTION: createError('FST_TASK_EVENTS_OPTION', 'fastify-task-events: %s'),
  /** Our migrations are not (all) applied to the plugin's database. */
  NOT_MIGRATED: createError('FST_TASK_EVENTS_NOT_MIGRATED',
    'fastify-task-events: %s; run `npx fastify-task-events migrate` as the owner of the database (or register with `migrate: true`)'),
  /** The database holds a task_events schema our migrations did not make (the 0.x pre-release one). */
  FOREIGN_SCHEMA: createError('FST_TASK_EVENTS_FOREIGN_SCHEMA', 'fastify-task-events: %s'),
  /** The plugin's database role lacks privileges it needs at run time. */
  PRIVILEGES: createError('FST_TASK_EVENTS_PRIVILEGES',
    'fastify-task-events: role %s lacks %s; run `npx fastify-task-events grant --role %s` as the owner of schema task_events'),
  /** `attach()` or `detach()` refused (a table or column that does not exist); the message names the argument. */
  ATTACH: createError('FST_TASK_EVENTS_ATTACH', 'fastify-task-events: %s'),
  /** A handshake's authentication failed (the database, or a custom `authenticate` threw): HTTP 500. */
  AUTHENTICATION: createError('FST_TASK_EVENTS_AUTHENTICATION', 'fastify-task-events: authentication failed', 500),
  /** Warnings (`app.taskEvents.events` 'warning'), each retried: a read of the outbox failed. */
  READ: createError('FST_TASK_EVENTS_READ', 'fastify-task-events: reading the outbox failed; retrying'),
  /** The LISTEN connection was lost or could not be made. */
  LISTEN: createError('FST_TASK_EVENTS_LISTEN', 'fastify-task-events: LISTEN connection lost; reconnecting'),
  /** A v2 resume's backlog could not be read; its socket is closed with 1011 (the client resumes again). */
  BACKLOG: createError('FST_TASK_EVENTS_BACKLOG', 'fastify-task-events: sending a resume\'s backlog failed'),
  /** A pruning round failed. */
  PRUNE: createError('FST_TASK_EVENTS_PRUNE', 'fastify-task-events: pruning failed; will retry'),
  /** An idle client of the plugin's own pool failed (its backend was terminated). */
  POOL: createError('FST_TASK_EVENTS_POOL', 'fastify-task-events: idle pool client failed'),
  /** The database could not be reached or queried. */
  DATABASE: createError('FST_TASK_EVENTS_DATABASE', 'fastify-task-events: %s'),
});
