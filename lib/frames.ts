// The text frames of protocol v2 (v1's message is a bare array: buffer.ts `serialize`). Built
// from each event's JSON, serialized once when it was read.
import { eventsArray, type TaskEvent } from './buffer.js';

/** The subprotocol a client offers to speak v2. */
export const V2_PROTOCOL = 'task-events.v2';

/** `{"type":"ready","cursor":…}`: the stream's starting point is fixed. */
export function readyFrame(cursor: string): string {
  return `{"type":"ready","cursor":"${cursor}"}`;
}

/** `{"type":"events","events":[…],"cursor":…}`: one message; the cursor is right after it. */
export function eventsFrame(events: readonly TaskEvent[], cursor: string): Buffer {
  return Buffer.from(`{"type":"events","events":${eventsArray(events)},"cursor":"${cursor}"}`);
}

/** `{"type":"cursor","cursor":…}`: the point moved on without events for this client. */
export function cursorFrame(cursor: string): string {
  return `{"type":"cursor","cursor":"${cursor}"}`;
}
