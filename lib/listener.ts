import { EventEmitter } from 'node:events';
import type pg from 'pg';
import type { ReadSpan, TaskEvent } from './buffer.js';
import { HostErrors } from './errors.js';
import { ListenConnection } from './listen-connection.js';
import { currentSnapshot, doorbellTaken, outboxPosition, readOutbox } from './outbox.js';
import { checkout } from './pool.js';
import { retryDelay } from './retry.js';
import { visible, type Snapshot } from './snapshot.js';

/**
 * The channel the capture triggers notify (only the first writer after each read: the doorbell);
 * the payload is empty, the outbox holds the events.
 */
const CHANNEL = 'task_events';

/** What the listener needs; it knows nothing of sockets. */
export interface ListenerOptions {
  pool: pg.Pool;
  /** For the LISTEN connection, which lives outside the pool. */
  connection: pg.ClientConfig;
  /** Milliseconds between reads when nothing woke the listener. */
  pollInterval: number;
  /** Rows per FETCH. */
  readBatchSize: number;
  /** Receives the events of each read, in outbox order; called once per fetched batch. */
  onEvents: (events: TaskEvent[]) => void;
  /** After each read: every event it covers has been handed on. */
  onRead?: (read: ReadSpan) => void;
}

/**
 * Milliseconds before reading again while other transactions still hold the outbox: 100, and
 * {@link DOORBELL_CHECK} once a follow-up found nothing new (a long transaction stays open).
 */
const FOLLOW_UP_DELAY = 100;
/**
 * Milliseconds between looks at the doorbell: when a writer took it since the last read but no
 * NOTIFY came (the ringer is still open, or rolled back), read anyway. This bounds how late a
 * read can be while writes go on, so events stay within messageTime + 250 ms.
 */
const DOORBELL_CHECK = 200;

/**
 * Reads new outbox rows (lib/outbox.ts) and hands them on, in order, once each. A NOTIFY on
 * {@link CHANNEL} wakes it; so do every (re)connect of the LISTEN connection, a follow-up read
 * {@link FOLLOW_UP_DELAY} ms after a read that saw other transactions writing the outbox, a look
 * at the doorbell every {@link DOORBELL_CHECK} ms (a ringer that is slow or rolled back), and a
 * poll every `pollInterval`, so a wake-up lost some other way delays an event, never loses it.
 * Nothing here gives up: reads and the LISTEN connection retry forever (capped, jittered) until
 * {@link Listener.close}.
 *
 * Emits `connected` (LISTEN is active), `reconnecting` (attempt), `caught-up` ({ events }) after
 * each read, and `warning` (error) for failures it will retry.
 */
export class Listener extends EventEmitter {
  readonly #options: ListenerOptions;
  #snapshot: string | null = null;
  /**
   * What reads that failed half-way handed on: the events their snapshot `upto` sees, up to outbox
   * id `lastId` (a read hands on in id order). The retry must not hand them on again.
   */
  #handedOn: { upto: Snapshot; lastId: number }[] = [];
  #reading: Promise<void> | null = null;
  #readAgain = false;
  #readFailures = 0;
  #closing = false;
  readonly #listen: ListenConnection;
  #pollTimer: NodeJS.Timeout | null = null;
  #readRetryTimer: NodeJS.Timeout | null = null;
  #followUpTimer: NodeJS.Timeout | null = null;
  /** The last read found nothing new: a long transaction holds the outbox, so follow up slower. */
  #foundNothing = false;
  #doorbellTimer: NodeJS.Timeout | null = null;

  constructor(options: ListenerOptions) {
    super();
    this.#options = options;
    this.#listen = new ListenConnection(options.connection, CHANNEL);
    this.#listen.on('notification', () => this.wake());
    this.#listen.on('connected', () => {
      this.emit('connected');
      // Whatever committed while we were not listening is in the outbox: read it now.
      this.wake();
    });
    for (const name of ['reconnecting', 'warning']) this.#listen.on(name, (detail) => this.emit(name, detail));
  }

  /**
   * Fixes the starting point (nothing committed before it is read) and starts listening.
   * Rejects when the database cannot be reached now; after that, failures are retried.
   */
  async start(): Promise<void> {
    this.#snapshot = await currentSnapshot(this.#options.pool);
    this.#pollTimer = setInterval(() => this.wake(), this.#options.pollInterval).unref();
    this.#doorbellTimer = setInterval(() => void this.#checkDoorbell(), DOORBELL_CHECK).unref();
    this.#listen.start();
  }

  /**
   * The outbox position now: events with a larger id were created after this call. A handshake
   * reads it so that a new connection gets exactly the events created after it opened.
   */
  position(): Promise<number> {
    return outboxPosition(this.#options.pool);
  }

  /** Asks for a read; reads never overlap, and wake-ups during one fold into one more. */
  wake(): void {
    if (this.#closing || this.#snapshot === null) return;
    if (this.#reading) {
      this.#readAgain = true;
      return;
    }
    this.#reading = this.#readUntilQuiet().finally(() => {
      this.#reading = null;
    });
  }

  /** Stops listening and reading; waits for a read under way. */
  async close(): Promise<void> {
    this.#closing = true;
    if (this.#pollTimer) clearInterval(this.#pollTimer);
    if (this.#readRetryTimer) clearTimeout(this.#readRetryTimer);
    if (this.#followUpTimer) clearTimeout(this.#followUpTimer);
    if (this.#doorbellTimer) clearInterval(this.#doorbellTimer);
    await this.#reading;
    await this.#listen.close();
  }

  async #readUntilQuiet(): Promise<void> {
    do {
      this.#readAgain = false;
      try {
        const { count, writing, read } = await this.#read();
        this.#readFailures = 0;
        this.#options.onRead?.(read);
        this.emit('caught-up', { events: count });
        this.#foundNothing = count === 0;
        if (writing) this.#followUp();
      } catch (error) {
        this.emit('warning', new HostErrors.READ({ cause: error }));
        if (this.#closing) return;
        this.#readRetryTimer = setTimeout(() => this.wake(), retryDelay(++this.#readFailures));
        return;
      }
    } while (this.#readAgain && !this.#closing);
  }

  /** Reads again shortly: transactions that held the outbox during the last read may commit unrung. */
  #followUp(): void {
    if (this.#followUpTimer || this.#closing) return;
    const delay = this.#foundNothing ? DOORBELL_CHECK : FOLLOW_UP_DELAY;
    this.#followUpTimer = setTimeout(() => {
      this.#followUpTimer = null;
      this.wake();
    }, delay);
  }

  /** Reads when a writer took the doorbell since the last read (its NOTIFY may be late or lost). */
  async #checkDoorbell(): Promise<void> {
    if (this.#reading || this.#closing || this.#snapshot === null) return;
    try {
      if (await doorbellTaken(this.#options.pool)) this.wake();
    } catch {
      // the read's own retries report database trouble; a missed look is made up by the next one
    }
  }

  /** Whether a read that failed half-way handed `event` on. */
  #wasHandedOn(event: TaskEvent): boolean {
    return this.#handedOn.some(({ upto, lastId }) => event.id <= lastId && visible(upto, event.xid));
  }

  /** One read: the events committed since the last one, and whether others were writing. */
  async #read(): Promise<{ count: number; writing: boolean; read: ReadSpan }> {
    const { pool, readBatchSize, onEvents } = this.#options;
    const client = await checkout(pool);
    let count = 0;
    let handedOn: { upto: Snapshot; lastId: number } | null = null;
    try {
      const { snapshot, read, writing } = await readOutbox(client, this.#snapshot as string, readBatchSize, (batch) => {
        const events = this.#handedOn.length === 0 ? batch : batch.filter((event) => !this.#wasHandedOn(event));
        handedOn = { upto: (batch[0] as TaskEvent).read.upto, lastId: (batch.at(-1) as TaskEvent).id };
        if (events.length === 0) return;
        count += events.length;
        onEvents(events);
      });
      this.#snapshot = snapshot;
      this.#handedOn = [];
      client.giveBack();
      return { count, writing, read };
    } catch (error) {
      if (handedOn) this.#handedOn.push(handedOn);
      client.giveBack(error as Error);
      throw error;
    }
  }
}
