import { EventEmitter } from 'node:events';
import type pg from 'pg';
import pgListen from 'pg-listen';
import { HostErrors } from './errors.js';
import { retryDelay } from './retry.js';

type Subscriber = ReturnType<typeof pgListen.default>;

/**
 * The LISTEN connection, outside the pool: kept open, and replaced when lost, forever (capped,
 * jittered) until {@link ListenConnection.close}. Knows nothing of the outbox.
 *
 * Emits `notification` (one per NOTIFY on its channel), `connected` (LISTEN is active: also after
 * each reconnect), `reconnecting` (attempt) and `warning` (error) for failures it will retry.
 */
export class ListenConnection extends EventEmitter {
  readonly #connection: pg.ClientConfig;
  readonly #channel: string;
  #closing = false;
  #subscriber: Subscriber | null = null;
  /** A connect under way; close() waits for it. */
  #subscribing: Promise<void> | null = null;
  #subscribeTimer: NodeJS.Timeout | null = null;

  constructor(connection: pg.ClientConfig, channel: string) {
    super();
    this.#connection = connection;
    this.#channel = channel;
  }

  /** Connects (in the background: failures are retried and reported as warnings). */
  start(): void {
    this.#startSubscribe(0);
  }

  /** Stops listening; waits for a connect under way. */
  async close(): Promise<void> {
    this.#closing = true;
    if (this.#subscribeTimer) clearTimeout(this.#subscribeTimer);
    await this.#subscribing;
    const subscriber = this.#subscriber;
    this.#subscriber = null;
    await subscriber?.close().catch(() => {});
  }

  #startSubscribe(attempt: number): void {
    this.#subscribing = this.#subscribe(attempt).finally(() => {
      this.#subscribing = null;
    });
  }

  /**
   * Connects the LISTEN connection. pg-listen is kept for its paranoid check (a query every 10 s
   * that notices a connection dead without a FIN, which a LISTEN alone never would); its own
   * reconnect is switched off (retryLimit 1: it gives up after 3 s by default, and its loop cannot
   * be cancelled while an attempt is under way), so a lost or failed connection is replaced by a
   * fresh subscriber here, after a capped, jittered delay, until close().
   */
  async #subscribe(attempt: number): Promise<void> {
    if (this.#closing) return;
    let abandoned = false;
    let connected = false;
    const subscriber = pgListen.default(this.#connection, {
      retryLimit: 1,
      paranoidChecking: 10_000,
      parse: (payload: string) => payload,
    });
    const replace = (error: unknown): void => {
      if (abandoned) return;
      abandoned = true;
      if (this.#subscriber === subscriber) this.#subscriber = null;
      void subscriber.close().catch(() => {});
      if (this.#closing) return;
      this.emit('warning', new HostErrors.LISTEN({ cause: error }));
      // After a connection that worked, the first retry comes quickly again.
      this.#retrySubscribe(connected ? 1 : attempt + 1);
    };
    // With retryLimit 1, pg-listen turns a lost connection straight into 'error'.
    subscriber.events.on('error', replace);
    subscriber.notifications.on(this.#channel, () => this.emit('notification'));
    try {
      await subscriber.connect();
      await subscriber.listenTo(this.#channel);
    } catch (error) {
      return replace(error);
    }
    if (abandoned) return;
    if (this.#closing) {
      abandoned = true;
      await subscriber.close().catch(() => {});
      return;
    }
    this.#subscriber = subscriber;
    connected = true;
    this.emit('connected');
  }

  #retrySubscribe(attempt: number): void {
    if (this.#closing) return;
    this.emit('reconnecting', attempt);
    this.#subscribeTimer = setTimeout(() => this.#startSubscribe(attempt), retryDelay(attempt));
  }
}
