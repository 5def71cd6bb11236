import { EventEmitter } from 'node:events';
import type { WebSocket } from 'ws';
import { EventBuffer, serialize, type TaskEvent } from './buffer.js';
import { Group } from './group.js';
import { HandshakeHistory, type Ticket } from './handshakes.js';

export type { Ticket } from './handshakes.js';

/** What a socket subscribes to: one environment, optionally some object classes. */
export interface Subscription {
  environmentId: number;
  /** `null`: every class of the environment. */
  objectClassIds: ReadonlySet<number> | null;
  /** The outbox position read during the handshake: only events with a larger id are sent. */
  afterEventId: number;
  /** From {@link Hub.reserve}, taken before that position was read. */
  ticket: Ticket;
}

/** Batching rules of the contract. */
export interface HubOptions {
  messageTime: number;
  messageLimit: number;
  /** A socket with more unsent bytes than this after a send is closed with 1013. */
  maxBufferedBytes: number;
}

/** Close code for a client that does not keep up: "Try Again Later". */
const TRY_AGAIN_LATER = 1013;

/** A slow client gets this long to take its close frame before its socket is destroyed. */
const SLOW_CLOSE_GRACE = 5000;

/**
 * Groups of sockets per environment and filter, the flush timers, and one serialization per
 * message per group. Fed by {@link Hub.publish}; knows nothing of PostgreSQL.
 *
 * Emits `flushed` ({ group, events, sockets }) after each message, and `slow-consumer`
 * ({ environmentId, bufferedAmount }) when it closes a client that does not keep up.
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

  /** Call at the start of a handshake, before its outbox position is read. */
  reserve(): Ticket {
    return this.#handshakes.reserve();
  }

  /** Ends a handshake that will not join. */
  release(ticket: Ticket): void {
    this.#handshakes.release(ticket);
  }

  /** Adds an open socket; it receives the events after its position, from its next message on. */
  join(socket: WebSocket, subscription: Subscription): void {
    const { environmentId, objectClassIds, afterEventId, ticket } = subscription;
    const group = this.#group(environmentId, objectClassIds);
    // Events published since the handshake started may be after this socket's position.
    const missed = new EventBuffer();
    for (const event of this.#handshakes.since(ticket)) {
      if (event.id > afterEventId && group.accepts(event)) missed.push(event);
    }
    this.release(ticket);
    this.#groupOf.set(socket, group);
    group.add(socket, afterEventId, missed);
    if (group.hasWaiting()) this.#afterPush(group);
  }

  /** Removes a socket (closed, or closing); what was buffered for it alone is dropped. */
  leave(socket: WebSocket): void {
    const group = this.#groupOf.get(socket);
    if (!group) return;
    this.#groupOf.delete(socket);
    if (!group.remove(socket)) return;
    if (group.timer) clearTimeout(group.timer);
    this.#groups.delete(group.key);
    const groups = this.#byEnvironment.get(group.environmentId);
    groups?.delete(group);
    if (groups?.size === 0) this.#byEnvironment.delete(group.environmentId);
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

  #group(environmentId: number, objectClassIds: ReadonlySet<number> | null): Group {
    let group = this.#groups.get(Group.key(environmentId, objectClassIds));
    if (!group) {
      group = new Group(environmentId, objectClassIds);
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
      this.#send(group, group.members.keys(), group.buffer.take(messageLimit));
      sent = true;
    }
    for (const [socket, solo] of group.solos) {
      while (solo.buffer.size >= messageLimit) {
        this.#send(group, [socket], solo.buffer.take(messageLimit));
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

  /** `messageTime` passed: send all that waits; every socket is in step again. */
  #flush(group: Group): void {
    const { messageLimit } = this.#options;
    if (group.timer) clearTimeout(group.timer);
    group.timer = null;
    let sent = false;
    while (group.buffer.size > 0) {
      this.#send(group, group.members.keys(), group.buffer.take(messageLimit));
      sent = true;
    }
    for (const [socket, solo] of group.solos) {
      while (solo.buffer.size > 0) {
        this.#send(group, [socket], solo.buffer.take(messageLimit));
        sent = true;
      }
    }
    group.rejoin();
    if (sent) group.lastSentAt = Date.now();
  }

  #send(group: Group, sockets: Iterable<WebSocket>, chunk: TaskEvent[]): void {
    const frame = serialize(chunk);
    let count = 0;
    for (const socket of sockets) {
      if (socket.readyState !== socket.OPEN) continue;
      socket.send(frame, { binary: false });
      count++;
      if (socket.bufferedAmount > this.#options.maxBufferedBytes) this.#closeSlow(socket, group);
    }
    this.#messagesSent += count;
    this.emit('flushed', { group: group.key, events: chunk.length, sockets: count });
  }

  /**
   * A client that does not read holds our memory: it leaves its group at once (so it delays no
   * one and gets nothing more) and is closed; ws destroys the socket if the close is not answered.
   */
  #closeSlow(socket: WebSocket, group: Group): void {
    const bufferedAmount = socket.bufferedAmount;
    this.leave(socket);
    this.#slowConsumersClosed++;
    socket.close(TRY_AGAIN_LATER, `Client too slow: over ${this.#options.maxBufferedBytes} bytes unsent`);
    setTimeout(() => socket.terminate(), SLOW_CLOSE_GRACE).unref();
    this.emit('slow-consumer', { environmentId: group.environmentId, bufferedAmount });
  }
}
