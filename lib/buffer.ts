import type { Snapshot } from './snapshot.js';

/** The outbox read an event came from: the rows committed after `since` that `upto` sees. */
export interface ReadSpan {
  readonly since: Snapshot;
  readonly upto: Snapshot;
}

/** One event as it travels from the outbox to the sockets. */
export interface TaskEvent {
  /** The outbox id: the database's order of creation. */
  readonly id: number;
  /** The writing transaction (xid8), for the v2 cursors. */
  readonly xid: number;
  /** Its read: a message's cursor is stated in the read of its last event. */
  readonly read: ReadSpan;
  readonly environmentId: number;
  readonly objectClassId: number | null;
  /** `task_created`, …: for the `event_types` filter. */
  readonly event: string;
  /** ISO 8601 with microseconds and `+00:00`, so that string order is time order. */
  readonly timestamp: string;
  /** The event as a client receives it, serialized once when it is read. */
  readonly json: string;
}

/**
 * The events waiting for one message, oldest first. Pure: no I/O, no timers. Messages are cut
 * from the front, at most `limit` events each, sorted by timestamp within the message.
 */
export class EventBuffer {
  #events: TaskEvent[] = [];
  #head = 0;

  /** Events waiting. */
  get size(): number {
    return this.#events.length - this.#head;
  }

  push(event: TaskEvent): void {
    this.#events.push(event);
  }

  /** Removes and returns the oldest `limit` events, in ascending timestamp (stable for ties). */
  take(limit: number): TaskEvent[] {
    return this.takeMessage(limit).events;
  }

  /**
   * {@link take}, and the last of the events in the order they were pushed (the stream's order,
   * which a v2 cursor follows; the message itself is in timestamp order).
   */
  takeMessage(limit: number): { events: TaskEvent[]; last: TaskEvent } {
    const end = Math.min(this.#head + limit, this.#events.length);
    const chunk = this.#events.slice(this.#head, end);
    const last = chunk[chunk.length - 1] as TaskEvent;
    this.#head = end;
    if (this.#head === this.#events.length) {
      this.#events = [];
      this.#head = 0;
    } else if (this.#head > 4096 && this.#head * 2 > this.#events.length) {
      this.#events = this.#events.slice(this.#head);
      this.#head = 0;
    }
    return { events: byTimestamp(chunk), last };
  }

  /** A copy holding the same waiting events, in the same order. */
  clone(): EventBuffer {
    const copy = new EventBuffer();
    copy.#events = this.#events.slice(this.#head);
    return copy;
  }

  clear(): void {
    this.#events = [];
    this.#head = 0;
  }
}

function byTimestamp(chunk: TaskEvent[]): TaskEvent[] {
  for (let i = 1; i < chunk.length; i++) {
    // Events of concurrent transactions can interleave; sort only when they do.
    if ((chunk[i - 1] as TaskEvent).timestamp > (chunk[i] as TaskEvent).timestamp) {
      return chunk.sort((a, b) => (a.timestamp < b.timestamp ? -1 : a.timestamp > b.timestamp ? 1 : a.id - b.id));
    }
  }
  return chunk;
}

/** The frame for one message: a JSON array of the events, built from their serialized forms. */
export function serialize(chunk: readonly TaskEvent[]): Buffer {
  return Buffer.from(eventsArray(chunk));
}

/** The JSON array of the events, as text (a v2 frame wraps it before it is encoded once). */
export function eventsArray(chunk: readonly TaskEvent[]): string {
  let text = '[';
  for (let i = 0; i < chunk.length; i++) text += (i ? ',' : '') + (chunk[i] as TaskEvent).json;
  return text + ']';
}
