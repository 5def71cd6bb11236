import { EventEmitter } from 'node:events';
import type { WebSocket } from 'ws';
import { EventBuffer, serialize, type ReadSpan, type TaskEvent } from './buffer.js';
import { cursorAfter, cursorAt, type Cursor } from './cursor.js';
import { cursorFrame, eventsFrame } from './frames.js';
import { Group, type Filter, type Start } from './group.js';
import { HandshakeHistory, type Ticket } from './handshakes.js';
import { sendToAll } from './send.js';
import { visible } from './snapshot.js';

export type { Ticket } from './handshakes.js';

/** What a socket subscribes to, and where its stream starts. */
export interface Subscription extends Filter {
  /** v1: the outbox position read during the handshake; v2: the snapshot taken then. */
  start: Start;
  /** From {@link Hub.reserve}, taken before that position or snapshot was read. */
  ticket: Ticket;
  /** v2 resume: nothing live is sent until {@link Hub.unhold} (its backlog goes first). */
  held?: boolean;
}

/** Batching rules of the contract. */
export interface HubOptions {
  messageTime: number;
  messageLimit: number;
  /** A socket with more unsent bytes than this after a send is closed with 1013. */
  maxBufferedBytes: number;
  /** v2: an idle client gets a cursor frame at most this often (so its cursor never ages out). */
  cursorInterval: number;
  /** v2: signs a cursor. */
  encodeCursor: (cursor: Cursor) => string;
}

/**
 * Groups of sockets per protocol, environment and filter, the flush timers, and one serialization
 * per message per group. Fed by {@link Hub.publish} and {@link Hub.advance}; knows nothing of
 * PostgreSQL.
 *
 * Emits `flushed` ({ group, events, sockets, bytes, oldest }: lib/signals.ts) after each message,
 * and `slow-consumer` ({ environmentId, bufferedAmount }, socket) when it closes a client that
 * does not keep up.
 */
export class Hub extends EventEmitter {
  readonly #options: HubOptions;
  readonly #groups = new Map<string, Group>();
  readonly #byEnvironment = new Map<number, Set<Group>>();
  readonly #groupOf = new Map<WebSocket, Group>();
  readonly #handshakes = new HandshakeHistory();
  #eventsReceived = 0;
  #messagesSent = 0;
  #slowConsumersClosed = 0;

  constructor(options: HubOptions) {
    super();
    this.#options = options;
  }

  /** Counters for `app.taskEvents.stats()`. */
  stats(): { connections: number; eventsReceived: number; messagesSent: number; slowConsumersClosed: number } {
    return {
      connections: this.#groupOf.size,
      eventsReceived: this.#eventsReceived,
      messagesSent: this.#messagesSent,
      slowConsumersClosed: this.#slowConsumersClosed,
    };
  }

  /** Call at the start of a handshake, before its outbox position (or snapshot) is read. */
  reserve(): Ticket {
    return this.#handshakes.reserve();
  }

  /** Ends a handshake that will not join. */
  release(ticket: Ticket): void {
    this.#handshakes.release(ticket);
  }

  /** Adds an open socket; it receives the events of its stream, from its next message on. */
  join(socket: WebSocket, subscription: Subscription): void {
    const { start, ticket, held = false } = subscription;
    const group = this.#group(start.protocol, subscription);
    // Events published since the handshake started may be in this socket's stream.
    const missed = new EventBuffer();
    for (const event of this.#handshakes.since(ticket)) {
      if (group.accepts(event) && inStream(start, event)) missed.push(event);
    }
    this.release(ticket);
    this.#groupOf.set(socket, group);
    group.add(socket, start, missed, held);
    if (group.hasWaiting()) this.#afterPush(group);
  }

  /** v2 resume: the backlog has gone out; live events follow. */
  unhold(socket: WebSocket): void {
    const group = this.#groupOf.get(socket);
    const solo = group?.solos.get(socket);
    if (!group || !solo) return;
    solo.held = false;
    this.#afterPush(group);
  }

  /** Removes a socket (closed, or closing); what was buffered for it alone is dropped. */
  leave(socket: WebSocket): void {
    const group = this.#groupOf.get(socket);
    if (!group) return;
    this.#groupOf.delete(socket);
    if (!group.remove(socket)) return;
    if (group.timer) clearTimeout(group.timer);
    this.#groups.delete(group.key);
    const groups = this.#byEnvironment.get(group.filter.environmentId);
    groups?.delete(group);
    if (groups?.size === 0) this.#byEnvironment.delete(group.filter.environmentId);
  }

  /** Appends events read from the outbox, in the order they were read. */
  publish(events: readonly TaskEvent[]): void {
    this.#eventsReceived += events.length;
    this.#handshakes.record(events);
    const touched = new Set<Group>();
    for (const event of events) {
      const groups = this.#byEnvironment.get(event.environmentId);
      if (!groups) continue;
      for (const group of groups) {
        if (!group.accepts(event)) continue;
        group.push(event);
        touched.add(group);
      }
    }
    for (const group of touched) this.#afterPush(group);
  }

  /**
   * A read has been published in full. v2 sockets that started before it are past their start;
   * idle v2 members get a cursor frame now and then.
   */
  advance(read: ReadSpan): void {
    const now = Date.now();
    for (const group of this.#groups.values()) {
      if (group.protocol !== 2) continue;
      group.advance(read.upto);
      if (!group.timer) group.rejoin(); // nothing waits: the sockets past their start are in step now
      if (group.members.size === 0 || group.buffer.size > 0 || now - group.lastCursorAt < this.#options.cursorInterval) continue;
      group.lastCursorAt = now;
      this.#sendFrame(group, group.members.keys(), cursorFrame(this.#options.encodeCursor(cursorAt(read.upto))), 0);
    }
  }

  /** Sends everything buffered now, full messages and partial ones (shutdown). */
  flushAll(): void {
    for (const group of [...this.#groups.values()]) this.#flush(group);
  }

  /** Closes every socket with `code` (after what was sent to it). */
  closeAll(code: number, reason: string): void {
    for (const socket of [...this.#groupOf.keys()]) {
      this.leave(socket);
      socket.close(code, reason);
    }
  }

  #group(protocol: 1 | 2, filter: Filter): Group {
    let group = this.#groups.get(Group.key(protocol, filter));
    if (!group) {
      const { environmentId, objectClassIds, eventTypes } = filter;
      group = new Group(protocol, { environmentId, objectClassIds, eventTypes });
      this.#groups.set(group.key, group);
      let groups = this.#byEnvironment.get(environmentId);
      if (!groups) this.#byEnvironment.set(environmentId, (groups = new Set()));
      groups.add(group);
    }
    return group;
  }

  /** `messageLimit` waiting: send full messages at once; the rest waits for the timer. */
  #afterPush(group: Group): void {
    const { messageLimit, messageTime } = this.#options;
    let sent = false;
    while (group.buffer.size >= messageLimit) {
      this.#sendMessage(group, null, group.buffer, messageLimit);
      sent = true;
    }
    for (const [socket, solo] of group.solos) {
      while (!solo.held && solo.buffer.size >= messageLimit) {
        this.#sendMessage(group, socket, solo.buffer, messageLimit);
        sent = true;
      }
    }
    if (sent) {
      group.lastSentAt = Date.now();
      if (group.timer) clearTimeout(group.timer);
      group.timer = null;
    }
    if (!group.timer && group.hasWaiting()) {
      const delay = Math.max(0, group.lastSentAt + messageTime - Date.now());
      group.timer = setTimeout(() => this.#flush(group), delay);
    }
  }

  /** `messageTime` passed: send all that waits; sockets are in step again. */
  #flush(group: Group): void {
    const { messageLimit } = this.#options;
    if (group.timer) clearTimeout(group.timer);
    group.timer = null;
    let sent = false;
    while (group.buffer.size > 0) {
      this.#sendMessage(group, null, group.buffer, messageLimit);
      sent = true;
    }
    for (const [socket, solo] of group.solos) {
      while (!solo.held && solo.buffer.size > 0) {
        this.#sendMessage(group, socket, solo.buffer, messageLimit);
        sent = true;
      }
    }
    group.rejoin();
    if (sent) group.lastSentAt = Date.now();
  }

  /** One message from `buffer`: to the members in step (`solo` null), or to one solo socket. */
  #sendMessage(group: Group, solo: WebSocket | null, buffer: EventBuffer, limit: number): void {
    const { events, last } = buffer.takeMessage(limit);
    const sockets = solo ? [solo] : group.members.keys();
    const oldest = (events[0] as TaskEvent).timestamp; // in timestamp order
    if (group.protocol === 1) return this.#sendFrame(group, sockets, serialize(events), events.length, oldest);
    const start = solo ? (group.solos.get(solo)?.start ?? null) : null;
    if (!solo) group.lastCursorAt = Date.now();
    this.#sendFrame(group, sockets, eventsFrame(events, this.#options.encodeCursor(cursorAfter(last, start))), events.length, oldest);
  }

  #sendFrame(group: Group, sockets: Iterable<WebSocket>, frame: Buffer | string, events: number, oldest = ''): void {
    const count = sendToAll(sockets, frame, this.#options.maxBufferedBytes, (socket, bufferedAmount) => {
      // it leaves its group at once, so it delays no one and gets nothing more
      this.leave(socket);
      this.#slowConsumersClosed++;
      this.emit('slow-consumer', { environmentId: group.filter.environmentId, bufferedAmount }, socket);
    });
    if (events === 0) return;
    this.#messagesSent += count;
    this.emit('flushed', { group: group.key, events, sockets: count, bytes: Buffer.byteLength(frame), oldest });
  }
}

/** Whether an event is in the stream of a socket that starts at `start`. */
function inStream(start: Start, event: TaskEvent): boolean {
  return start.protocol === 1 ? event.id > start.afterEventId : !visible(start.snapshot, event.xid);
}
