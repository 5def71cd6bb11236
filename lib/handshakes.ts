import type { TaskEvent } from './buffer.js';

/** Marks the start of a handshake, so events published during it can be replayed to it. */
export interface Ticket {
  readonly id: number;
  /** How many batches had been published when the handshake started. */
  readonly seq: number;
  readonly at: number;
}

/** A handshake that never joins (the client vanished mid-upgrade) stops pinning batches after this. */
const TICKET_MAX_AGE = 60_000;

/**
 * The batches published while handshakes are under way. A handshake reads its outbox position
 * after it starts; events after that position may be published before the socket joins, and are
 * replayed to it from here. Nothing is kept while no handshake is under way.
 */
export class HandshakeHistory {
  readonly #tickets = new Map<number, Ticket>();
  #batches: { seq: number; events: readonly TaskEvent[] }[] = [];
  #seq = 0;
  #ticketIds = 0;

  /** Call at the start of a handshake, before its outbox position is read. */
  reserve(): Ticket {
    const ticket = { id: ++this.#ticketIds, seq: this.#seq, at: Date.now() };
    this.#tickets.set(ticket.id, ticket);
    return ticket;
  }

  /** Ends a handshake (joined, or not going to). */
  release(ticket: Ticket): void {
    this.#tickets.delete(ticket.id);
    const now = Date.now();
    let oldest = Infinity;
    for (const [id, pending] of this.#tickets) {
      if (now - pending.at > TICKET_MAX_AGE) this.#tickets.delete(id);
      else oldest = Math.min(oldest, pending.seq);
    }
    this.#batches = oldest === Infinity ? [] : this.#batches.filter((batch) => batch.seq > oldest);
  }

  /** Records a published batch (kept only while a handshake is under way). */
  record(events: readonly TaskEvent[]): void {
    this.#seq++;
    if (this.#tickets.size) this.#batches.push({ seq: this.#seq, events });
  }

  /** The events published since `ticket` was reserved, in publishing order. */
  *since(ticket: Ticket): Iterable<TaskEvent> {
    for (const batch of this.#batches) {
      if (batch.seq > ticket.seq) yield* batch.events;
    }
  }
}
