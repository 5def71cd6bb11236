// v2 cursors: a point in the stream of events, stated in snapshots so it means the same on every
// instance and after any restart. A cursor (floor, upto, lastId) says the client has every event
// of its environment and filter that `floor` sees, plus those `upto` sees with an id up to
// `lastId` (a message can end inside one outbox read, whose rows go out in id order). Signed with
// a key kept in the database, so a cursor cannot be forged or altered; it grants nothing (the
// environment always comes from the token).
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { TaskEvent } from './buffer.js';
import { covers, later, parseSnapshot, type Snapshot } from './snapshot.js';

/** Where a client stands. `floor` is covered by `upto`. */
export interface Cursor {
  readonly floor: Snapshot;
  readonly upto: Snapshot;
  /** `null` (only where `floor` is `upto`): nothing beyond what `floor` sees. */
  readonly lastId: number | null;
}

/** Bytes of HMAC-SHA256 kept in a cursor: forging one takes 2⁹⁶ tries. */
const MAC_BYTES = 12;

/** A cursor at a snapshot: everything it sees, and nothing else. */
export function cursorAt(snapshot: Snapshot): Cursor {
  return { floor: snapshot, upto: snapshot, lastId: null };
}

/**
 * The cursor right after `event`, for a client whose stream started at `start` (events `start`
 * sees were delivered another way: before the handshake, or in a resume's backlog).
 */
export function cursorAfter(event: TaskEvent, start: Snapshot | null): Cursor {
  const { since, upto } = event.read;
  return { floor: start ? later(start, since) : since, upto, lastId: event.id };
}

/** Signs cursors and checks them, with the database's cursor key. */
export class CursorCodec {
  readonly #key: Buffer;

  constructor(key: Buffer) {
    this.#key = key;
  }

  /** An opaque, URL-safe string. */
  encode(cursor: Cursor): string {
    const payload = cursor.lastId === null && cursor.floor.text === cursor.upto.text
      ? cursor.floor.text
      : `${cursor.floor.text}~${cursor.upto.text}~${cursor.lastId ?? ''}`;
    return `${Buffer.from(payload).toString('base64url')}.${this.#mac(payload).toString('base64url')}`;
  }

  /** The cursor, or `null` when the text is malformed or was not signed with our key. */
  decode(text: unknown): Cursor | null {
    if (typeof text !== 'string' || text.length > 4096) return null;
    const [body, mac, extra] = text.split('.');
    if (!body || !mac || extra !== undefined || !/^[\w-]+$/.test(body) || !/^[\w-]+$/.test(mac)) return null;
    const payload = Buffer.from(body, 'base64url').toString();
    const given = Buffer.from(mac, 'base64url');
    if (given.length !== MAC_BYTES || !timingSafeEqual(given, this.#mac(payload))) return null;
    const parts = payload.split('~');
    if (parts.length === 1) {
      const at = parseSnapshot(payload);
      return at && cursorAt(at);
    }
    const [floorText = '', uptoText = '', lastIdText = '', ...rest] = parts;
    const floor = parseSnapshot(floorText);
    const upto = parseSnapshot(uptoText);
    const lastId = Number(lastIdText);
    if (!floor || !upto || rest.length || !/^\d{1,15}$/.test(lastIdText) || !covers(upto, floor)) return null;
    return { floor, upto, lastId };
  }

  #mac(payload: string): Buffer {
    return createHmac('sha256', this.#key).update(payload).digest().subarray(0, MAC_BYTES);
  }
}
