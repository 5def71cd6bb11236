// What the client knows of protocol v2: the event and frame shapes, the error codes and which of
// them end the client, and the connection URL. Declared here rather than imported from lib/:
// this module ships to browsers.

/** The subprotocol that opts a connection into protocol v2. */
export const PROTOCOL = 'task-events.v2';

/** The eight event names of the contract (for `eventTypes`, a filter's choices, a check). */
export const TASK_EVENT_NAMES = Object.freeze([
  'task_created', 'task_value_changed', 'task_status_changed', 'task_owner_added', 'task_owner_removed',
  'task_assignee_added', 'task_assignee_removed', 'task_deleted',
] as const);

/** The name of a task event. */
export type TaskEventName = (typeof TASK_EVENT_NAMES)[number];

/** One task event as the server sends it. */
export interface TaskEvent {
  task_id: number;
  object_class_id: number;
  event: TaskEventName;
  /** When the event was created: ISO 8601 with microseconds and UTC offset. */
  timestamp: string;
}

/** The error codes a server sends in an error frame (`{"type":"error","error_code":…}`). */
export type ServerErrorCode =
  | 'ERR_INCORRECT_URL' | 'ERR_INVALID_UUID' | 'RECEIVE_NOT_SUPPORTED' | 'ERR_RATE_LIMIT_EXCEEDED'
  | 'ERR_INVALID_OBJECT_CLASS_IDS' | 'ERR_INVALID_EVENT_TYPES'
  | 'ERR_INVALID_CURSOR' | 'ERR_CURSOR_EXPIRED';

/**
 * The codes of the errors that end a client (its 'error' event):
 * - `ERR_INCORRECT_URL`, `ERR_INVALID_OBJECT_CLASS_IDS`, `ERR_INVALID_EVENT_TYPES`,
 *   `RECEIVE_NOT_SUPPORTED`: the server's error frame; retrying would get the same answer.
 * - `ERR_INVALID_UUID`: the server refused MAX_INVALID_TOKENS fresh tokens in a row.
 * - `ERR_TOKEN_REJECTED`: `getToken` failed with status 401 or 403 (its error is the `cause`).
 * - `ERR_PROTOCOL_NOT_SELECTED`: the server did not select `task-events.v2` (a v1-only server).
 * - `ERR_INVALID_OPTION`: an option is unusable (thrown by `createTaskEventsClient`, or emitted
 *   when a `url` function returns something that is not a URL).
 */
export type TerminalErrorCode =
  | 'ERR_INCORRECT_URL' | 'ERR_INVALID_OBJECT_CLASS_IDS' | 'ERR_INVALID_EVENT_TYPES'
  | 'RECEIVE_NOT_SUPPORTED' | 'ERR_INVALID_UUID'
  | 'ERR_TOKEN_REJECTED' | 'ERR_PROTOCOL_NOT_SELECTED' | 'ERR_INVALID_OPTION';

/** Server error codes that end the client at once. */
export const TERMINAL_CODES: readonly string[] = [
  'ERR_INCORRECT_URL', 'ERR_INVALID_OBJECT_CLASS_IDS', 'ERR_INVALID_EVENT_TYPES', 'RECEIVE_NOT_SUPPORTED',
] satisfies TerminalErrorCode[];

/** `ERR_INVALID_UUID` this many times in a row ends the client (one can be a race; five is a bug). */
export const MAX_INVALID_TOKENS = 5;

/** A terminal error of the client; `code` says which (see TerminalErrorCode). */
export class TaskEventsError extends Error {
  override name = 'TaskEventsError';
  /** Which error: one of TerminalErrorCode. */
  readonly code: TerminalErrorCode;
  /** The server's detail text, when the error came in an error frame. */
  readonly detail?: string;

  /** `options.cause`: the lower error (e.g. what `getToken` threw), kept as it was. */
  constructor(code: TerminalErrorCode, message: string, options?: { cause?: unknown; detail?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.detail = options?.detail;
  }
}

/** The filters of a stream; empty or absent means no filter. */
export interface StreamFilters {
  /** Only events of these object classes. */
  objectClassIds?: readonly number[];
  /** Only these events. */
  eventTypes?: readonly TaskEventName[];
}

/**
 * The URL of one connection attempt: `base` (absolute, or relative to the page's location in a
 * browser; `http(s):` becomes `ws(s):`) with the token, the filters and the cursor in its query,
 * keeping any query `base` already has. Throws a TypeError when `base` is not a URL.
 */
export function connectionUrl(base: string, token: string, filters: StreamFilters, cursor?: string): string {
  const url = new URL(base, (globalThis as { location?: { href: string } }).location?.href);
  url.protocol = url.protocol.replace('http', 'ws');
  const query = url.searchParams;
  query.set('uuid', token);
  if (filters.objectClassIds?.length) query.set('object_class_ids', filters.objectClassIds.join(','));
  if (filters.eventTypes?.length) query.set('event_types', filters.eventTypes.join(','));
  if (cursor) query.set('cursor', cursor);
  return url.href;
}

/** A v2 frame, as far as the client relies on it; `other`: a type this client does not know. */
export type Frame =
  | { type: 'ready' | 'cursor'; cursor: string }
  | { type: 'events'; events: TaskEvent[]; cursor: string }
  | { type: 'error'; error_code: string; detail?: string }
  | { type: 'other' };

/**
 * Parses a text frame: undefined when it breaks the protocol (not a JSON object, a known type
 * without its fields); `{ type: 'other' }` for a type this client does not know, which a newer
 * server may add and the caller skips.
 */
export function parseFrame(data: unknown): Frame | undefined {
  let frame: { type?: unknown; cursor?: unknown; events?: unknown; error_code?: unknown } | null;
  try {
    frame = JSON.parse(String(data));
  } catch {
    return undefined;
  }
  if (!frame || typeof frame !== 'object' || typeof frame.type !== 'string') return undefined;
  switch (frame.type) {
    case 'error':
      return typeof frame.error_code === 'string' ? frame as Frame : undefined;
    case 'events':
      if (!Array.isArray(frame.events)) return undefined;
    // falls through: an events frame carries a cursor too
    case 'ready':
    case 'cursor':
      return typeof frame.cursor === 'string' ? frame as Frame : undefined;
  }
  return { type: 'other' };
}
