// `fastify-task-events/client`: a protocol v2 client for browsers and Node. No Node built-ins and
// nothing imported from outside client/: it ships to browsers as it is.
import { backoffDelay, rateLimitDelay, READY_WITHIN, SILENT_AFTER, STABLE_AFTER } from './backoff.js';
import { Emitter, rethrowLater } from './emitter.js';
import { bufferedIterator } from './iterator.js';
import {
  connectionUrl, MAX_INVALID_TOKENS, parseFrame, PROTOCOL, TASK_EVENT_NAMES, TaskEventsError, TERMINAL_CODES,
  type ServerErrorCode, type TaskEvent, type TerminalErrorCode,
} from './protocol.js';
import type {
  ClientEvents, ClientStatus, RetryInfo, TaskEventsClientOptions, WebSocketConstructor, WebSocketLike,
} from './types.js';

export { TASK_EVENT_NAMES, TaskEventsError };
export type { ServerErrorCode, StreamFilters, TaskEvent, TaskEventName, TerminalErrorCode } from './protocol.js';
export type {
  ClientEvents, ClientStatus, GapInfo, RetryInfo, TaskEventsClientOptions, WebSocketConstructor, WebSocketLike,
} from './types.js';

const noop = (): void => {};

type Why = Omit<RetryInfo, 'attempt' | 'delay'>;

/**
 * A protocol v2 stream of task events that survives reconnects: it resumes from its last cursor
 * with full-jitter exponential backoff, and stops only on `close()` or a terminal error. Create it
 * with `createTaskEventsClient`.
 *
 * Iterating it (`for await (const events of client)`) yields the same messages as 'events'. Each
 * iterator buffers, without bound, the messages that arrived since it was created and that it has
 * not yielded yet: a loop that stops pulling without `break` makes the client's memory grow. The
 * iterator ends after its buffer when the client is closed, and then throws the terminal error if
 * that is why the client closed.
 */
export class TaskEventsClient extends Emitter<ClientEvents> implements AsyncIterable<TaskEvent[]> {
  readonly #options: TaskEventsClientOptions;
  readonly #WebSocket: WebSocketConstructor;
  #status: ClientStatus = 'connecting';
  #cursor: string | undefined;
  #socket: WebSocketLike | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Drops a connection that says nothing for too long (see READY_WITHIN, SILENT_AFTER). */
  #watchdog: ReturnType<typeof setTimeout> | undefined;
  /** The backoff step of the next wait. */
  #attempt = 0;
  /** ERR_INVALID_UUID answers since the last `ready`. */
  #invalidTokens = 0;
  /** When the current connection became ready; 0 when it is not. */
  #readyAt = 0;
  #failure: TaskEventsError | undefined;

  /** Use `createTaskEventsClient`. Throws a TaskEventsError `ERR_INVALID_OPTION` for an unusable option. */
  constructor(options: TaskEventsClientOptions) {
    super();
    const WebSocket = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    const invalid = typeof WebSocket !== 'function'
      ? '`WebSocket` is required where there is no globalThis.WebSocket (in Node 20: the `ws` package)'
      : typeof options.getToken !== 'function' ? '`getToken` must be a function'
        : typeof options.url !== 'string' && typeof options.url !== 'function' ? '`url` must be a string or a function' : '';
    if (invalid) throw new TaskEventsError('ERR_INVALID_OPTION', `fastify-task-events/client: option ${invalid}`);
    this.#options = { ...options };
    this.#WebSocket = WebSocket as WebSocketConstructor;
    this.#cursor = options.cursor ?? undefined;
    // After the caller has added its listeners.
    queueMicrotask(() => this.#connect());
  }

  /** The current status. */
  get status(): ClientStatus {
    return this.#status;
  }

  /** The last cursor received (or the one given), undefined before the first `ready` of a fresh start. */
  get cursor(): string | undefined {
    return this.#cursor;
  }

  get #closed(): boolean {
    return this.#status === 'closed';
  }

  /** Stops for good: cancels a pending attempt, closes the socket (1000), ends the iterators. */
  close(): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#drop();
    this.#setStatus('closed');
  }

  /** The messages' events, in order; see the class's comment for buffering and ending. */
  [Symbol.asyncIterator](): AsyncIterableIterator<TaskEvent[]> {
    return bufferedIterator<TaskEvent[]>((push, end) => {
      const unsubscribe = [this.on('events', push), this.on('status', (status) => status === 'closed' && end())];
      return () => unsubscribe.forEach((off) => off());
    }, () => this.#failure, this.#closed);
  }

  async #connect(): Promise<void> {
    if (this.#closed) return;
    let token: string;
    try {
      token = await this.#options.getToken();
    } catch (error) {
      if (this.#closed) return;
      const { status, statusCode } = (error ?? {}) as { status?: unknown; statusCode?: unknown };
      const code = status ?? statusCode;
      if (code === 401 || code === 403) return this.#fail('ERR_TOKEN_REJECTED', `getToken failed with status ${code}`, error);
      return this.#retry({ reason: 'token', error });
    }
    if (this.#closed) return;
    let socket: WebSocketLike;
    try {
      const { url } = this.#options;
      socket = new this.#WebSocket(connectionUrl(typeof url === 'function' ? url() : url, token, this.#options, this.#cursor), PROTOCOL);
    } catch (error) {
      return this.#fail('ERR_INVALID_OPTION', 'fastify-task-events/client: option `url` does not give a WebSocket URL', error);
    }
    this.#socket = socket;
    this.#watch(READY_WITHIN);
    socket.onopen = () => {
      if (socket.protocol !== PROTOCOL) this.#fail('ERR_PROTOCOL_NOT_SELECTED', `the server did not select ${PROTOCOL} (a v1-only server?)`);
    };
    socket.onmessage = (message) => this.#receive(message.data);
    socket.onerror = (event) => this.#lost({ reason: 'error', error: (event as { error?: unknown }).error ?? event });
    socket.onclose = (event) => this.#lost({ reason: 'closed', code: event.code });
  }

  #watch(ms: number): void {
    clearTimeout(this.#watchdog);
    this.#watchdog = setTimeout(() => this.#lost({ reason: 'silent' }), ms);
  }

  #receive(data: unknown): void {
    if (this.#readyAt) this.#watch(SILENT_AFTER);
    const frame = parseFrame(data);
    if (!frame) return this.#lost({ reason: 'protocol' });
    switch (frame.type) {
      case 'ready':
        this.#watch(SILENT_AFTER);
        this.#readyAt = Date.now();
        this.#invalidTokens = 0;
        this.#advance(frame.cursor);
        return this.#setStatus('open');
      case 'events':
        this.emit('events', frame.events, { cursor: frame.cursor });
        return this.#advance(frame.cursor);
      case 'cursor':
        return this.#advance(frame.cursor);
      case 'error':
        return this.#refused(frame.error_code, frame.detail);
    }
  }

  #advance(cursor: string): void {
    if (cursor === this.#cursor) return;
    this.#cursor = cursor;
    try {
      this.#options.onCursor?.(cursor);
    } catch (error) {
      rethrowLater(error);
    }
  }

  /** An error frame: the server closes next; the client does not wait for it. */
  #refused(code: string, detail = code): void {
    this.#drop();
    if (TERMINAL_CODES.includes(code) || (code === 'ERR_INVALID_UUID' && ++this.#invalidTokens >= MAX_INVALID_TOKENS)) {
      return this.#fail(code as TerminalErrorCode, `the server refused the connection: ${detail}`, undefined, detail);
    }
    if (code === 'ERR_INVALID_CURSOR' || code === 'ERR_CURSOR_EXPIRED') {
      const cursor = this.#cursor;
      this.#cursor = undefined;
      this.emit('gap', { reason: code === 'ERR_CURSOR_EXPIRED' ? 'cursor_expired' : 'invalid_cursor', cursor });
    }
    this.#retry({ reason: code as ServerErrorCode });
  }

  /** The connection closed or failed without a terminal error. */
  #lost(why: Why): void {
    this.#drop();
    this.#retry(why);
  }

  /** Detaches and closes the current socket, if any; a loss after a stable connection resets the backoff. */
  #drop(): void {
    clearTimeout(this.#watchdog);
    const socket = this.#socket;
    if (!socket) return;
    this.#socket = undefined;
    if (this.#readyAt && Date.now() - this.#readyAt >= STABLE_AFTER) this.#attempt = 0;
    this.#readyAt = 0;
    // Handlers stay set: `ws` throws an 'error' that has no listener (closing while connecting emits one).
    socket.onopen = socket.onmessage = socket.onerror = socket.onclose = noop;
    try {
      socket.close(1000);
    } catch {
      // Already closed, or the implementation refuses close() while connecting: it is gone either way.
    }
  }

  #retry(why: Why): void {
    if (this.#closed) return;
    this.#setStatus('reconnecting');
    const attempt = this.#attempt++;
    const delay = (why.reason === 'ERR_RATE_LIMIT_EXCEEDED' ? rateLimitDelay : backoffDelay)(attempt);
    this.#timer = setTimeout(() => this.#connect(), delay);
    this.emit('retry', { ...why, attempt, delay });
  }

  #fail(code: TerminalErrorCode, message: string, cause?: unknown, detail?: string): void {
    if (this.#closed) return;
    this.#failure = new TaskEventsError(code, message, { cause, detail });
    this.close();
    this.emit('error', this.#failure);
  }

  #setStatus(status: ClientStatus): void {
    if (status === this.#status) return;
    this.#status = status;
    this.emit('status', status);
  }
}

/**
 * Creates a client and starts connecting (on a microtask: add listeners right after). See
 * TaskEventsClient. Throws a TaskEventsError `ERR_INVALID_OPTION` for an unusable option.
 */
export function createTaskEventsClient(options: TaskEventsClientOptions): TaskEventsClient {
  return new TaskEventsClient(options);
}
