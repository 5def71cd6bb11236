// What the plugin writes to the host's log. Lifecycle at info, once each: the listener connected,
// reconnected, caught up; trouble at warn once per outage (the retries that follow at debug), so a
// database that is down for an hour does not flood the log. An error is logged as its message,
// code and cause only: pg-pool attaches the whole client to an idle client's error (5 KB of it).
import type { FastifyBaseLogger } from 'fastify';
import type { EventEmitter } from 'node:events';

/** An error as it goes into a log line. */
export interface LoggedError {
  message: string;
  code?: string;
  cause?: LoggedError;
}

/** `error` reduced to its message, code and (nested) cause. */
export function loggedError(error: unknown, depth = 0): LoggedError {
  if (!(error instanceof Error)) return { message: String(error) };
  const { code } = error as { code?: unknown };
  return {
    message: error.message,
    ...(typeof code === 'string' && { code }),
    ...(error.cause !== undefined && depth < 3 && { cause: loggedError(error.cause, depth + 1) }),
  };
}

/** Logs the plugin's lifecycle events (see `app.taskEvents.events`) on the host's logger. */
export function logLifecycle(log: FastifyBaseLogger, events: EventEmitter): void {
  let connectedBefore = false;
  let catchingUp = false;
  let troubled = false;
  events.on('connected', () => {
    log.info(connectedBefore ? 'task events: LISTEN connection restored' : 'task events: listening for task changes');
    connectedBefore = true;
    catchingUp = true;
  });
  events.on('caught-up', ({ events: count }: { events: number }) => {
    troubled = false;
    if (!catchingUp) return;
    catchingUp = false;
    log.info({ events: count }, 'task events: caught up with the outbox');
  });
  events.on('warning', (error: Error) => {
    const level = troubled ? 'debug' : 'warn';
    troubled = true;
    log[level]({ error: loggedError(error) }, error.message);
  });
}
