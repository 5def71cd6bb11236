// What the parts report on `app.taskEvents.events` for operators, beyond their own lifecycle: how
// each handshake ended, why each socket closed, how old the events were when they were read and
// sent. lib/metrics.ts and lib/health.ts are built on these; nothing here does I/O.
import type { EventEmitter } from 'node:events';
import type { WebSocket } from 'ws';
import type { ErrorCode } from './errors.js';

/** How a handshake on the endpoint ended (`handshake` events, `handshakes_total{outcome}`). */
export type HandshakeOutcome =
  | 'ok' | 'invalid_uuid' | 'invalid_filter' | 'invalid_cursor' | 'cursor_expired' | 'rate_limited' | 'forbidden_origin' | 'error';

/** Every {@link HandshakeOutcome}, in the order of the contract. */
export const HANDSHAKE_OUTCOMES: readonly HandshakeOutcome[] = Object.freeze([
  'ok', 'invalid_uuid', 'invalid_filter', 'invalid_cursor', 'cursor_expired', 'rate_limited', 'forbidden_origin', 'error',
]);

/** Why a socket that had joined closed (`disconnect` events, `disconnects_total{reason}`). */
export type DisconnectReason = 'client' | 'shutdown' | 'slow_consumer' | 'heartbeat' | 'error';

export const DISCONNECT_REASONS: readonly DisconnectReason[] = Object.freeze(['client', 'shutdown', 'slow_consumer', 'heartbeat', 'error']);

/** `handshake`: one per upgrade of the endpoint that got an answer; `resume` when an accepted v2 client gave a cursor. */
export interface HandshakeDetail {
  outcome: HandshakeOutcome;
  resume: boolean;
}

/** `read`: one batch of events fetched from the outbox and handed on. */
export interface ReadDetail {
  events: number;
  /** The `timestamp` of its first event in outbox order: the oldest but for racing transactions. */
  oldest: string;
}

/** `flushed`: one message to the sockets of a group. */
export interface FlushedDetail {
  group: string;
  events: number;
  /** Sockets it was sent to. */
  sockets: number;
  /** Bytes of the frame (sent once to each socket). */
  bytes: number;
  /** The `timestamp` of its first event: a message is in timestamp order, so the oldest. */
  oldest: string;
  /** A v2 resume's backlog message: counted as sent, not as delivery lag (its events are old by design). */
  backlog?: boolean;
}

const REFUSALS: Readonly<Record<Exclude<ErrorCode, 'ERR_INCORRECT_URL' | 'RECEIVE_NOT_SUPPORTED'>, HandshakeOutcome>> = Object.freeze({
  ERR_INVALID_UUID: 'invalid_uuid',
  ERR_INVALID_OBJECT_CLASS_IDS: 'invalid_filter',
  ERR_INVALID_EVENT_TYPES: 'invalid_filter',
  ERR_INVALID_CURSOR: 'invalid_cursor',
  ERR_CURSOR_EXPIRED: 'cursor_expired',
  ERR_RATE_LIMIT_EXCEEDED: 'rate_limited',
});

/** The outcome of a handshake refused with the error frame `code`. */
export function refusalOutcome(code: ErrorCode): HandshakeOutcome {
  return (REFUSALS as Partial<Record<ErrorCode, HandshakeOutcome>>)[code] ?? 'error';
}

/** Close codes of a client that closed by itself: normal, going away, no status, and the application range. */
function closedByClient(code: number): boolean {
  return code === 1000 || code === 1001 || code === 1005 || (code >= 3000 && code <= 4999);
}

/**
 * Why sockets closed. The server marks the sockets it drops (a close code cannot tell: a client
 * that stopped reading never echoes our 1013, and a terminated socket reports 1006 either way);
 * an unmarked socket closed by the client when it sent a close frame, by an error otherwise (the
 * connection broke, a protocol error, a failed resume's 1011).
 */
export class CloseReasons {
  readonly #marked = new WeakMap<WebSocket, DisconnectReason>();
  #shuttingDown = false;

  /** The server drops `socket` for `reason`; the first mark stands. */
  mark(socket: WebSocket, reason: DisconnectReason): void {
    if (!this.#marked.has(socket)) this.#marked.set(socket, reason);
  }

  /** Every socket closing from now on closes for the shutdown, unless marked otherwise. */
  shutdown(): void {
    this.#shuttingDown = true;
  }

  /** Why `socket`, closed with `code`, closed. */
  of(socket: WebSocket, code: number): DisconnectReason {
    return this.#marked.get(socket) ?? (this.#shuttingDown ? 'shutdown' : closedByClient(code) ? 'client' : 'error');
  }
}

/** Seconds from an event's `timestamp` (ISO 8601 with an offset) to `now`; never negative (clock skew). */
export function secondsSince(timestamp: string, now = Date.now()): number {
  return Math.max(0, (now - Date.parse(timestamp)) / 1000);
}

/** Listeners by event name, each taking that event's detail. */
export type Handlers = Readonly<Record<string, (detail: never) => void>>;

/** Adds `handlers` to `events`; returns what removes them. */
export function subscribe(events: EventEmitter, handlers: Handlers): () => void {
  const entries = Object.entries(handlers) as [string, (...args: unknown[]) => void][];
  for (const [name, handler] of entries) events.on(name, handler);
  return () => {
    for (const [name, handler] of entries) events.off(name, handler);
  };
}
