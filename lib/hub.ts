import { EventEmitter } from 'node:events';
import type { WebSocket } from 'ws';
import { EventBuffer, serialize, type TaskEvent } from './buffer.js';

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

/** Marks the start of a handshake, so events published during it can be replayed to it. */
export interface Ticket {
  readonly id: number;
  /** How many batches had been published when the handshake started. */
  readonly seq: number;
  readonly at: number;
}

interface Joiner {
  afterEventId: number;
  buffer: EventBuffer;
}

/** Sockets of one environment and filter: they receive the same messages, serialized once. */
interface Group {
  readonly key: string;
  readonly environmentId: number;
  readonly objectClassIds: ReadonlySet<number> | null;
  readonly members: Set<WebSocket>;
  /**
   * Sockets that joined since the group's last timed message. They started at their own outbox
   * position, so until then they get their own messages; after it they are members.
   */
  readonly joiners: Map<WebSocket, Joiner>;
  readonly buffer: EventBuffer;
  timer: NodeJS.Timeout | null;
  lastSentAt: number;
}

/** Batching rules of the contract. */
export interface HubOptions {
  messageTime: number;
  messageLimit: number;
}

/** A handshake that never joins (the client vanished mid-upgrade) stops pinning history after this. */
const TICKET_MAX_AGE = 60_000;

/**
 * Groups of sockets per environment and filter, the flush timers, and one serialization per
 * message per group. Fed by {@link Hub.publish}; knows nothing of PostgreSQL.
 *
 * Emits `flushed` (group key, events sent) after each message.
 */
export class Hub extends EventEmitter {
  readonly #options: HubOptions;
  readonly #groups = new Map<string, Group>();
  readonly #byEnvironment = new Map<number, Set<Group>>();
  readonly #groupOf = new Map<WebSocket, Group>();
  readonly #tickets = new Map<number, Ticket>();
  #history: { seq: number; events: readonly TaskEvent[] }[] = [];
  #seq = 0;
  #ticketIds = 0;
  #eventsReceived = 0;
  #messagesSent = 0;

  constructor(options: HubOptions) {
    super();
    this.#options = options;
  }

  /** Counters for `app.taskEvents.stats()`. */
  stats(): { connections: number; eventsReceived: number; messagesSent: number } {
    return { connections: this.#groupOf.size, eventsReceived: this.#eventsReceived, messagesSent: this.#messagesSent };
  }

  /** Call at the start of a handshake, before its outbox position is read. */
  reserve(): Ticket {
    const ticket = { id: ++this.#ticketIds, seq: this.#seq, at: Date.now() };
    this.#tickets.set(ticket.id, ticket);
    return ticket;
  }

  /** Ends a handshake that will not join. */
  release(ticket: Ticket): void {
    this.#tickets.delete(ticket.id);
    this.#trimHistory();
  }

  /** Adds an open socket; it receives the events after its position, from its next message on. */
  join(socket: WebSocket, subscription: Subscription): void {
    const { environmentId, objectClassIds, afterEventId, ticket } = subscription;
    const group = this.#group(environmentId, objectClassIds);
    // Events published since the handshake started may be after this socket's position.
    const missed: TaskEvent[] = [];
    for (const batch of this.#history) {
      if (batch.seq <= ticket.seq) continue;
      for (const event of batch.events) {
        if (event.id > afterEventId && accepts(group, event)) missed.push(event);
      }
    }
    this.release(ticket);
    this.#groupOf.set(socket, group);
    if (group.members.size === 0 && group.joiners.size === 0 && group.buffer.size === 0) {
      group.members.add(socket);
      for (const event of missed) group.buffer.push(event);
    } else {
      const buffer = new EventBuffer();
      for (const event of missed) buffer.push(event);
      group.joiners.set(socket, { afterEventId, buffer });
    }
    if (missed.length) this.#afterPush(group);
  }

  /** Removes a socket (closed, or closing); what was buffered for it alone is dropped. */
  leave(socket: WebSocket): void {
    const group = this.#groupOf.get(socket);
    if (!group) return;
    this.#groupOf.delete(socket);
    group.members.delete(socket);
    group.joiners.delete(socket);
    if (group.members.size === 0 && group.joiners.size === 0) {
      if (group.timer) clearTimeout(group.timer);
      this.#groups.delete(group.key);
      const groups = this.#byEnvironment.get(group.environmentId);
      groups?.delete(group);
      if (groups?.size === 0) this.#byEnvironment.delete(group.environmentId);
    }
  }

  /** Appends events read from the outbox, in the order they were read. */
  publish(events: readonly TaskEvent[]): void {
    this.#seq++;
    this.#eventsReceived += events.length;
    if (this.#tickets.size) this.#history.push({ seq: this.#seq, events });
    const touched = new Set<Group>();
    for (const event of events) {
      const groups = this.#byEnvironment.get(event.environmentId);
      if (!groups) continue;
      for (const group of groups) {
        if (!accepts(group, event)) continue;
        group.buffer.push(event);
        for (const joiner of group.joiners.values()) {
          if (event.id > joiner.afterEventId) joiner.buffer.push(event);
        }
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
    const key = `${environmentId}|${objectClassIds ? [...objectClassIds].sort((a, b) => a - b).join(',') : '*'}`;
    let group = this.#groups.get(key);
    if (!group) {
      group = {
        key, environmentId, objectClassIds,
        members: new Set(), joiners: new Map(), buffer: new EventBuffer(),
        timer: null, lastSentAt: Date.now(),
      };
      this.#groups.set(key, group);
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
      this.#send(group, group.members, group.buffer.take(messageLimit));
      sent = true;
    }
    for (const [socket, joiner] of group.joiners) {
      while (joiner.buffer.size >= messageLimit) {
        this.#send(group, [socket], joiner.buffer.take(messageLimit));
        sent = true;
      }
    }
    if (sent) {
      group.lastSentAt = Date.now();
      if (group.timer) clearTimeout(group.timer);
      group.timer = null;
    }
    if (!group.timer && hasWaiting(group)) {
      const delay = Math.max(0, group.lastSentAt + messageTime - Date.now());
      group.timer = setTimeout(() => this.#flush(group), delay);
    }
  }

  /** `messageTime` passed: send all that waits, and joiners become members. */
  #flush(group: Group): void {
    const { messageLimit } = this.#options;
    if (group.timer) clearTimeout(group.timer);
    group.timer = null;
    let sent = false;
    while (group.buffer.size > 0) {
      this.#send(group, group.members, group.buffer.take(messageLimit));
      sent = true;
    }
    for (const [socket, joiner] of group.joiners) {
      while (joiner.buffer.size > 0) {
        this.#send(group, [socket], joiner.buffer.take(messageLimit));
        sent = true;
      }
      group.members.add(socket);
    }
    group.joiners.clear();
    if (sent) group.lastSentAt = Date.now();
  }

  #send(group: Group, sockets: Iterable<WebSocket>, chunk: TaskEvent[]): void {
    const frame = serialize(chunk);
    let count = 0;
    for (const socket of sockets) {
      if (socket.readyState !== socket.OPEN) continue;
      socket.send(frame, { binary: false });
      count++;
    }
    this.#messagesSent += count;
    this.emit('flushed', { group: group.key, events: chunk.length, sockets: count });
  }

  #trimHistory(): void {
    const now = Date.now();
    let oldest = Infinity;
    for (const [id, ticket] of this.#tickets) {
      if (now - ticket.at > TICKET_MAX_AGE) this.#tickets.delete(id);
      else oldest = Math.min(oldest, ticket.seq);
    }
    this.#history = oldest === Infinity ? [] : this.#history.filter((batch) => batch.seq > oldest);
  }
}

function accepts(group: Group, event: TaskEvent): boolean {
  return group.objectClassIds === null || (event.objectClassId !== null && group.objectClassIds.has(event.objectClassId));
}

function hasWaiting(group: Group): boolean {
  if (group.buffer.size > 0) return true;
  for (const joiner of group.joiners.values()) if (joiner.buffer.size > 0) return true;
  return false;
}
