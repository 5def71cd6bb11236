// The page's event stream: `fastify-task-events/client` with its cursor kept in sessionStorage, so
// that a reload of the page, like a restart of the server, resumes where the stream stopped. It
// tells the page what to show: each message (and how many of its events were caught up), and the
// connection's status as a sentence.
import {
  createTaskEventsClient, type TaskEvent, type TaskEventName, type TaskEventsClient,
} from 'fastify-task-events/client';
import { plural } from './dom.js';
import type { Rest } from './rest.js';

/** What the page streams: whose events, and which. Empty lists: no filter. */
export interface StreamSettings {
  key: string;
  objectClassIds: number[];
  eventTypes: TaskEventName[];
}

/** The connection's state, for the status's colour: 'live' once the server has said `ready`. */
export type StreamState = 'connecting' | 'live' | 'reconnecting' | 'closed';

/** One message as the page shows it. */
export interface Message {
  events: TaskEvent[];
  receivedAt: Date;
  /** The frame's size as the server sent it (the same JSON, compact). */
  bytes: number;
  /** Its events written before this connection opened: caught up on resuming. */
  caughtUp: number;
}

/** Where the page hears from its stream. */
export interface StreamView {
  message: (message: Message) => void;
  status: (state: StreamState, text: string) => void;
  /** The saved cursor was refused (expired): events were missed, the stream restarted from now. */
  gap: () => void;
}

const STORAGE_KEY = 'task-events-demo';

/** The settings and cursor of this tab's stream, kept across reloads. */
interface Saved extends StreamSettings {
  cursor: string | null;
}

/** What this tab streamed last, if anything. */
export function loadSaved(): Saved | null {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? 'null') as Saved | null;
    return saved && typeof saved.key === 'string' && Array.isArray(saved.objectClassIds) && Array.isArray(saved.eventTypes) ? saved : null;
  } catch {
    return null; // a value of an older page, or storage turned off: start from now
  }
}

function save(saved: Saved): void {
  try {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(saved));
  } catch {
    // storage full or turned off: the stream goes on, a reload just starts from now
  }
}

const encoder = new TextEncoder();

/** One stream of one environment and filter; `close()` ends it for good. */
export class Stream {
  readonly settings: StreamSettings;
  readonly #client: TaskEventsClient;
  readonly #rest: Rest;
  readonly #view: StreamView;
  /** Whether the next `ready` continues from a cursor (a resume) rather than starting from now. */
  #resuming: boolean;
  /** The current connection resumed: events older than `#openedAt` are caught up. */
  #resumed = false;
  /** When the current connection opened, on the server's clock (ms). */
  #openedAt = 0;
  #caughtUp = 0;
  #nextAttempt = '';
  #quiet: boolean;

  /**
   * Starts streaming `settings`' events from `cursor` (null: from now). `quiet`: a resume the user
   * asked for (a new filter) is not announced unless it caught events up.
   */
  constructor(settings: StreamSettings, cursor: string | null, rest: Rest, view: StreamView, quiet = false) {
    this.settings = settings;
    this.#rest = rest;
    this.#view = view;
    this.#resuming = cursor !== null;
    this.#quiet = quiet;
    save({ ...settings, cursor });
    view.status('connecting', 'Connecting…');
    const client = createTaskEventsClient({
      url: '/ws/events/tasks/',
      getToken: () => rest.token(),
      objectClassIds: settings.objectClassIds,
      eventTypes: settings.eventTypes,
      cursor,
      onCursor: (next) => save({ ...settings, cursor: next }),
    });
    this.#client = client;
    client.on('status', (status) => {
      if (status === 'open') this.#opened();
      // after a loss the client resumes with its last cursor, if it has had one
      else if (status === 'reconnecting') {
        this.#resuming = client.cursor !== undefined;
        this.#quiet = false;
      }
      this.#showStatus();
    });
    client.on('retry', ({ delay }) => {
      this.#nextAttempt = delay >= 1000 ? `, next attempt in ${Math.round(delay / 1000)} s` : '';
      this.#showStatus();
    });
    client.on('events', (events, { cursor: after }) => this.#received(events, after));
    client.on('gap', () => {
      this.#resuming = false;
      this.#view.gap();
    });
    client.on('error', (error) => {
      this.#view.status('closed', `Stopped: ${error.detail ?? error.message}. Sign in again to reconnect.`);
    });
  }

  /** The stream's position: a new stream of the same key given it goes on without a gap. */
  get cursor(): string | null {
    return this.#client.cursor ?? null;
  }

  /** Ends the stream (no reconnect); a closed client emits nothing more, so the view hears nothing more. */
  close(): void {
    this.#client.close();
  }

  #opened(): void {
    this.#openedAt = Date.now() + this.#rest.clockOffset;
    this.#resumed = this.#resuming;
    this.#resuming = false;
    this.#caughtUp = 0;
    this.#nextAttempt = '';
  }

  #received(events: TaskEvent[], cursor: string): void {
    const caughtUp = this.#resumed ? events.filter((event) => Date.parse(event.timestamp) < this.#openedAt).length : 0;
    this.#caughtUp += caughtUp;
    const bytes = encoder.encode(JSON.stringify({ type: 'events', events, cursor })).length;
    this.#view.message({ events, receivedAt: new Date(), bytes, caughtUp });
    if (caughtUp > 0) this.#showStatus();
  }

  #showStatus(): void {
    switch (this.#client.status) {
      case 'connecting':
        return this.#view.status('connecting', 'Connecting…');
      case 'open':
        return this.#view.status('live', this.#resumed && !(this.#quiet && this.#caughtUp === 0)
          ? `Live · resumed: ${plural(this.#caughtUp, 'event')} caught up`
          : 'Live');
      case 'reconnecting':
        return this.#view.status('reconnecting', `Reconnecting${this.#nextAttempt}…`);
      case 'closed':
        return; // by close(), or the 'error' listener says why
    }
  }
}
