import type { WebSocket } from 'ws';
import { EventBuffer, type TaskEvent } from './buffer.js';

/** A socket with messages of its own until the group's next timed message. */
export interface Solo {
  afterEventId: number;
  buffer: EventBuffer;
}

/**
 * Sockets of one environment and filter, and what waits for them; pure, no I/O, no timers (the
 * hub sends and times). Members in step receive the same messages, serialized once. A socket gets
 * only events after its own outbox position, so a socket for which an event is not meant (it
 * joined later than the event's position, or the event is one it missed during its handshake)
 * leaves the step and gets its own messages ("solo") until the next timed message, after which
 * every socket is in step again.
 */
export class Group {
  readonly key: string;
  readonly environmentId: number;
  readonly objectClassIds: ReadonlySet<number> | null;
  /** In step: socket → its position (afterEventId). */
  readonly members = new Map<WebSocket, number>();
  /** Out of step until the next timed message. */
  readonly solos = new Map<WebSocket, Solo>();
  /** What waits for the members in step. */
  readonly buffer = new EventBuffer();
  timer: NodeJS.Timeout | null = null;
  lastSentAt = Date.now();
  /** The largest position of a member: events above it are for every member. */
  #membersAfter = 0;

  constructor(environmentId: number, objectClassIds: ReadonlySet<number> | null) {
    this.key = Group.key(environmentId, objectClassIds);
    this.environmentId = environmentId;
    this.objectClassIds = objectClassIds;
  }

  /** The key of the group of an environment and filter. */
  static key(environmentId: number, objectClassIds: ReadonlySet<number> | null): string {
    return `${environmentId}|${objectClassIds ? [...objectClassIds].sort((a, b) => a - b).join(',') : '*'}`;
  }

  /** True when the event is for this group's environment and filter. */
  accepts(event: TaskEvent): boolean {
    if (event.environmentId !== this.environmentId) return false;
    return this.objectClassIds === null || (event.objectClassId !== null && this.objectClassIds.has(event.objectClassId));
  }

  /** Adds a socket: in step when nothing waits, else solo with what it `missed` during its handshake. */
  add(socket: WebSocket, afterEventId: number, missed: EventBuffer): void {
    if (missed.size === 0 && this.buffer.size === 0) this.#addMember(socket, afterEventId);
    else this.solos.set(socket, { afterEventId, buffer: missed });
  }

  /** Removes a socket; true when the group is empty now. */
  remove(socket: WebSocket): boolean {
    this.members.delete(socket);
    this.solos.delete(socket);
    return this.members.size === 0 && this.solos.size === 0;
  }

  /** Buffers an accepted event for every socket it is meant for. */
  push(event: TaskEvent): void {
    if (event.id <= this.#membersAfter) this.#split(event.id);
    if (this.members.size) this.buffer.push(event);
    for (const solo of this.solos.values()) {
      if (event.id > solo.afterEventId) solo.buffer.push(event);
    }
  }

  /** After a timed message: every solo is in step again. */
  rejoin(): void {
    for (const [socket, solo] of this.solos) this.#addMember(socket, solo.afterEventId);
    this.solos.clear();
  }

  /** Events wait for some socket. */
  hasWaiting(): boolean {
    if (this.buffer.size > 0) return true;
    for (const solo of this.solos.values()) if (solo.buffer.size > 0) return true;
    return false;
  }

  #addMember(socket: WebSocket, afterEventId: number): void {
    this.members.set(socket, afterEventId);
    this.#membersAfter = Math.max(this.#membersAfter, afterEventId);
  }

  /**
   * An event at or below some members' positions (read late: a lost wake-up, a reconnect's
   * backlog): those members leave the step, with what the group had buffered for them.
   */
  #split(eventId: number): void {
    let membersAfter = 0;
    for (const [socket, afterEventId] of this.members) {
      if (afterEventId >= eventId) {
        this.members.delete(socket);
        this.solos.set(socket, { afterEventId, buffer: this.buffer.clone() });
      } else {
        membersAfter = Math.max(membersAfter, afterEventId);
      }
    }
    this.#membersAfter = membersAfter;
    if (this.members.size === 0) this.buffer.clear();
  }
}
