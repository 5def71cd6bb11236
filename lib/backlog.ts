// A v2 resume's backlog: the events of one environment and filter that the client's cursor does
// not have and that the handshake's snapshot sees, read from the outbox in bounded batches and
// sent at once in full messages, each with its cursor. What comes live meanwhile waits in the hub.
import type pg from 'pg';
import type { WebSocket } from 'ws';
import { EventBuffer, type ReadSpan } from './buffer.js';
import { cursorAfter, type Cursor } from './cursor.js';
import { eventsFrame } from './frames.js';
import type { Filter } from './group.js';
import { committedBetween, EVENT_COLUMNS, fetchRows, toEvent, type OutboxRow } from './outbox.js';
import { checkout } from './pool.js';
import { visible, type Snapshot } from './snapshot.js';

// The events the cursor's floor does not see and the handshake's snapshot does, looked up by
// their xids (committedBetween(): a transaction still open is not visited), in the cursor's read
// first (what `upto` sees, after `lastId`), then beyond it, each in id order: the order in which a
// cursor can follow them. Null when no transaction can be in between.
export function backlogQuery(from: Cursor, to: Snapshot): string | null {
  const committed = committedBetween({ since: from.floor, upto: to });
  if (!committed) return null;
  return `
  SELECT ${EVENT_COLUMNS}
  FROM task_events.outbox
  WHERE ${committed}
    AND environment_id = $3
    AND ($4::bigint[] IS NULL OR object_class_id = ANY ($4))
    AND ($5::text[] IS NULL OR event = ANY ($5))
    AND NOT ($2::bigint IS NOT NULL AND id <= $2 AND pg_visible_in_snapshot(xid, $1::pg_snapshot))
  ORDER BY NOT pg_visible_in_snapshot(xid, $1::pg_snapshot), id`;
}

/** What one resume needs. */
export interface BacklogRequest {
  pool: pg.Pool;
  socket: WebSocket;
  filter: Filter;
  /** The client's cursor. */
  from: Cursor;
  /** The handshake's snapshot: the live stream has what it does not see. */
  to: Snapshot;
  batchSize: number;
  messageLimit: number;
  /** Sending pauses while more than half of this waits unsent (the slow-consumer bound). */
  maxBufferedBytes: number;
  encodeCursor: (cursor: Cursor) => string;
  /** After each message: its events, its frame's bytes, the timestamp of its first event. */
  onMessage?: (events: number, bytes: number, oldest: string) => void;
}

/** Sends the backlog; resolves with how many events went out (stops early when the socket closes). */
export async function sendBacklog(request: BacklogRequest): Promise<number> {
  const { pool, socket, filter, from, to, batchSize, messageLimit, encodeCursor } = request;
  const inCursorRead: ReadSpan = { since: from.floor, upto: from.upto };
  const beyond: ReadSpan = { since: from.upto, upto: to };
  const query = backlogQuery(from, to);
  if (!query) return 0;
  const client = await checkout(pool);
  let failure: Error | undefined;
  let sent = 0;
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await client.query({
      text: `DECLARE task_events_backlog NO SCROLL CURSOR FOR ${query}`,
      values: [from.upto.text, from.lastId, filter.environmentId,
        filter.objectClassIds ? [...filter.objectClassIds] : null, filter.eventTypes ? [...filter.eventTypes] : null],
    });
    const waiting = new EventBuffer();
    const send = (): void => {
      const { events, last } = waiting.takeMessage(messageLimit);
      const frame = eventsFrame(events, encodeCursor(cursorAfter(last, null)));
      socket.send(frame, { binary: false });
      sent += events.length;
      request.onMessage?.(events.length, frame.length, (events[0] as { timestamp: string }).timestamp);
    };
    for (;;) {
      const { rows } = await client.query<OutboxRow>(fetchRows(`FETCH ${batchSize} FROM task_events_backlog`));
      for (const row of rows) {
        // in the cursor's read while `upto` sees it
        const read = from.lastId !== null && visible(from.upto, Number(row[4])) ? inCursorRead : beyond;
        waiting.push(toEvent(row, read));
      }
      const more = rows.length === batchSize;
      while (waiting.size >= messageLimit || (!more && waiting.size > 0)) {
        if (socket.readyState !== socket.OPEN) return sent;
        send();
        await drained(request);
      }
      if (!more) break;
    }
    await client.query('COMMIT');
    return sent;
  } catch (error) {
    failure = error as Error;
    throw error;
  } finally {
    client.giveBack(failure);
  }
}

/** Waits while the socket holds more than half of `maxBufferedBytes` unsent (or until it closes). */
async function drained({ socket, maxBufferedBytes }: BacklogRequest): Promise<void> {
  while (socket.readyState === socket.OPEN && socket.bufferedAmount > maxBufferedBytes / 2) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
