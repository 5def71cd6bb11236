// The client's public types: its options, the WebSocket it needs, its statuses and events.
import type { ServerErrorCode, StreamFilters, TaskEvent, TaskEventsError } from './protocol.js';

// A method's parameter is bivariant: lets `ws`'s and the DOM's handler types (whose events are
// their own classes) fit the few fields the client reads.
type Handler<Event> = { bivarianceHack(event: Event): void }['bivarianceHack'];

/** The part of a WebSocket the client uses: the DOM's `WebSocket` and the `ws` package's both fit. */
export interface WebSocketLike {
  /** The subprotocol the server selected ('' when none). */
  readonly protocol: string;
  onopen: Handler<unknown> | null;
  onmessage: Handler<{ data: unknown }> | null;
  onerror: Handler<unknown> | null;
  onclose: Handler<{ code: number }> | null;
  close(code?: number, reason?: string): void;
}

/** A WebSocket implementation: `globalThis.WebSocket` in browsers, `ws`'s default export in Node 20. */
export type WebSocketConstructor = new (url: string, protocols: string) => WebSocketLike;

/** The options of `createTaskEventsClient`. */
export interface TaskEventsClientOptions extends StreamFilters {
  /**
   * The endpoint, e.g. `wss://host/ws/events/tasks/` (in a browser also relative to the page, or
   * `https:`), or a function called before each attempt (e.g. to go round several hosts). A query
   * it already has is kept. A function that throws, or a value that is not a URL, ends the client
   * with `ERR_INVALID_OPTION`.
   */
  url: string | (() => string);
  /**
   * A fresh one-time token for each connection attempt (the host app's `GET /api/users/ws-auth/`).
   * An error with `status` (or `statusCode`) 401 or 403 ends the client (`ERR_TOKEN_REJECTED`);
   * any other failure is retried.
   */
  getToken: () => Promise<string> | string;
  /** Where to start: a cursor saved by `onCursor` (null or undefined: from now). */
  cursor?: string | null;
  /**
   * Called with each new cursor, after the 'events' listeners of the message it follows, so that a
   * saved cursor never runs ahead of what those listeners have processed. (An async iterator's
   * loop may still have messages to pull when it is called.)
   */
  onCursor?: (cursor: string) => void;
  /** The WebSocket implementation; default `globalThis.WebSocket` (Node 20 has none: pass `ws`). */
  WebSocket?: WebSocketConstructor;
}

/**
 * The client's state: 'connecting' (the first attempt), 'open' (the server sent `ready`),
 * 'reconnecting' (waiting or attempting after a loss), 'closed' (by `close()` or a terminal error).
 */
export type ClientStatus = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** What a 'gap' says: the server refused the cursor and the stream restarted from now. */
export interface GapInfo {
  /** 'cursor_expired': older than the server keeps; 'invalid_cursor': malformed or tampered. */
  reason: 'invalid_cursor' | 'cursor_expired';
  /** The cursor that was refused. */
  cursor?: string;
}

/** Why the client is about to reconnect, and when: for logs and metrics. */
export interface RetryInfo {
  /**
   * What went wrong: the server's error code; 'closed': the connection closed (`code`);
   * 'error': the socket failed, e.g. on a refused upgrade or the network (`error`: the
   * implementation's error event); 'token': `getToken` failed (`error`: what it threw);
   * 'protocol': a frame the client could not read; 'silent': no `ready` within 30 s of an attempt,
   * or no frame for 75 s on an open connection (the server sends at least a cursor frame every
   * 30 s), so a half-open connection is dropped.
   */
  reason: ServerErrorCode | 'closed' | 'error' | 'token' | 'protocol' | 'silent';
  /** The close code, for 'closed'. */
  code?: number;
  /** The error, for 'error' and 'token'. */
  error?: unknown;
  /** The backoff step: 0 after a stable connection, one more for each failure since. */
  attempt: number;
  /** Milliseconds until the next attempt. */
  delay: number;
}

/** The events of a client and their listeners' signatures. */
export type ClientEvents = {
  /** One message: its events, in stream order, each delivered once; `cursor` marks the point after them. */
  events: (events: TaskEvent[], message: { cursor: string }) => void;
  /** The status changed (see ClientStatus). */
  status: (status: ClientStatus) => void;
  /** Events were missed: the cursor was refused and the stream restarted from now. */
  gap: (info: GapInfo) => void;
  /** A reconnect is scheduled (status 'reconnecting'): why, and in how long. */
  retry: (info: RetryInfo) => void;
  /** A terminal error: the client has closed (status 'closed') and will not reconnect. */
  error: (error: TaskEventsError) => void;
};
