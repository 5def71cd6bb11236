import type { WebSocket } from 'ws';
import { EventBuffer, type TaskEvent } from './buffer.js';
import { covers, visible, type Snapshot } from './snapshot.js';

/** Where a socket's stream starts: v1, an outbox position (ids above it); v2, a snapshot (what it does not see). */
export type Start = { readonly protocol: 1; readonly afterEventId: number } | { readonly protocol: 2; readonly snapshot: Snapshot };

/** A socket with messages of its own until the group's next timed message. */
export interface Solo {
  /** Whether an event is in this socket's stream. */
  after: (event: TaskEvent) => boolean;
  /** v1: its outbox position (v2: 0). */
  afterEventId: number;
  buffer: EventBuffer;
  /** v2: the snapshot its stream starts at (its cursors say it has what that sees). */
  start: Snapshot | null;
  /**
   * v2: a read covering `start` has been published in full, so every event published from now on
   * is in its stream and its cursors are the group's: it may join the step.
   */
  covered: boolean;
  /** v2 resume: its backlog is still being sent; what comes meanwhile waits here. */
  held: boolean;
}

/** What a group's sockets asked for: one environment, optionally some classes and event names. */
export interface Filter {
  readonly environmentId: number;
  /** `null`: every class of the environment. */
  readonly objectClassIds: ReadonlySet<number> | null;
  /** `null`: every event name. */
  readonly eventTypes: ReadonlySet<string> | null;
}

/**
 * Sockets of one protocol, environment and filter, and what waits for them; pure, no I/O, no
 * timers (the hub sends and times). Members in step receive the same messages, serialized once.
 * A socket gets only the events of its own stream (v1: after its outbox position; v2: not seen by
 * its starting snapshot), so a socket for which an event is not meant (it joined later than the
 * event's position, or the event is one it missed during its handshake) is "solo": it gets
 * messages of its own until the next timed message, after which it is in step again. A v2 socket
 * starts solo, and rejoins once a read covering its starting snapshot has been published: from
 * then on every event is in its stream and its cursors are the group's.
 */
export class Group {
  readonly key: string;
  readonly protocol: 1 | 2;
  readonly filter: Filter;
  /** In step: socket → its v1 position (v2: 0). */
  readonly members = new Map<WebSocket, number>();
  /** Out of step until the next timed message. */
  readonly solos = new Map<WebSocket, Solo>();
  /** What waits for the members in step. */
  readonly buffer = new EventBuffer();
  timer: NodeJS.Timeout | null = null;
  lastSentAt = Date.now();
  /** v2: when the members last got a cursor (in a message or a cursor frame). */
  lastCursorAt = Date.now();
  /** v1: the largest position of a member; events above it are for every member. */
  #membersAfter = 0;

  constructor(protocol: 1 | 2, filter: Filter) {
    this.key = Group.key(protocol, filter);
    this.protocol = protocol;
    this.filter = filter;
  }

  /** The key of the group of a protocol and filter. */
  static key(protocol: 1 | 2, { environmentId, objectClassIds, eventTypes }: Filter): string {
    const classes = objectClassIds ? [...objectClassIds].sort((a, b) => a - b).join(',') : '*';
    const types = eventTypes ? [...eventTypes].sort().join(',') : '*';
    return `${protocol}|${environmentId}|${classes}|${types}`;
  }

  /** True when the event is for this group's environment and filter. */
  accepts(event: TaskEvent): boolean {
    const { environmentId, objectClassIds, eventTypes } = this.filter;
    if (event.environmentId !== environmentId) return false;
    if (eventTypes !== null && !eventTypes.has(event.event)) return false;
    return objectClassIds === null || (event.objectClassId !== null && objectClassIds.has(event.objectClassId));
  }

  /**
   * Adds a socket with what it `missed` during its handshake: v1, in step when nothing waits;
   * v2, solo (and `held` while its resume's backlog goes out).
   */
  add(socket: WebSocket, start: Start, missed: EventBuffer, held = false): void {
    if (start.protocol === 1) {
      if (missed.size === 0 && this.buffer.size === 0) this.#addMember(socket, start.afterEventId);
      else this.solos.set(socket, v1Solo(start.afterEventId, missed));
      return;
    }
    const { snapshot } = start;
    this.solos.set(socket, { after: (event) => !visible(snapshot, event.xid), afterEventId: 0, buffer: missed, start: snapshot, covered: false, held });
  }

  /** Removes a socket; true when the group is empty now. */
  remove(socket: WebSocket): boolean {
    this.members.delete(socket);
    this.solos.delete(socket);
    return this.members.size === 0 && this.solos.size === 0;
  }

  /** Buffers an accepted event for every socket it is meant for. */
  push(event: TaskEvent): void {
    if (this.protocol === 1 && event.id <= this.#membersAfter) this.#split(event.id);
    if (this.members.size) this.buffer.push(event);
    for (const solo of this.solos.values()) {
      if (solo.after(event)) solo.buffer.push(event);
    }
  }

  /** A read up to `upto` has been published in full: v2 sockets that started before it may join the step. */
  advance(upto: Snapshot): void {
    for (const solo of this.solos.values()) {
      if (solo.start && covers(upto, solo.start)) solo.covered = true;
    }
  }

  /** After a timed message: solos are in step again (v2: those not held and past their start). */
  rejoin(): void {
    for (const [socket, solo] of this.solos) {
      if (solo.held || (solo.start && !solo.covered) || solo.buffer.size > 0) continue;
      this.#addMember(socket, solo.afterEventId);
      this.solos.delete(socket);
    }
  }

  /** Events wait for some socket that may be sent to. */
  hasWaiting(): boolean {
    if (this.buffer.size > 0) return true;
    for (const solo of this.solos.values()) if (!solo.held && solo.buffer.size > 0) return true;
    return false;
  }

  #addMember(socket: WebSocket, afterEventId: number): void {
    this.members.set(socket, afterEventId);
    this.#membersAfter = Math.max(this.#membersAfter, afterEventId);
  }

  /**
   * v1: an event at or below some members' positions (read late: a lost wake-up, a reconnect's
   * backlog): those members leave the step, with what the group had buffered for them.
   */
  #split(eventId: number): void {
    let membersAfter = 0;
    for (const [socket, afterEventId] of this.members) {
      if (afterEventId >= eventId) {
        this.members.delete(socket);
        this.solos.set(socket, v1Solo(afterEventId, this.buffer.clone()));
      } else {
        membersAfter = Math.max(membersAfter, afterEventId);
      }
    }
    this.#membersAfter = membersAfter;
    if (this.members.size === 0) this.buffer.clear();
  }
}

/** A v1 socket out of step: the events after its outbox position. */
function v1Solo(afterEventId: number, buffer: EventBuffer): Solo {
  return { after: (event) => event.id > afterEventId, afterEventId, buffer, start: null, covered: true, held: false };
}
