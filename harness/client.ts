// A real `ws` client that records every frame and its close, with waits that have deadlines.
import WebSocket from 'ws';
import { Conditions } from './conditions.js';
import type { Teardowns } from './teardown.js';

/** One event as the client receives it. */
export interface ReceivedEvent {
  task_id: number;
  object_class_id: number;
  event: string;
  timestamp: string;
}

/** A `ws` client that records every frame and its close. */
export class TestClient {
  readonly socket: WebSocket;
  /** Every text frame, parsed, in arrival order. */
  readonly frames: unknown[] = [];
  closed: { code: number; reason: string } | null = null;
  readonly #conditions = new Conditions();

  private constructor(socket: WebSocket) {
    this.socket = socket;
    socket.on('message', (data) => {
      this.frames.push(JSON.parse(String(data)));
      this.#conditions.check();
    });
    socket.on('close', (code, reason) => {
      this.closed = { code, reason: String(reason) };
      this.#conditions.check();
    });
  }

  /**
   * Opens a connection; resolves on `open` (the 101), rejects on an HTTP refusal. The socket is
   * terminated when `t` tears down (NO_TEARDOWN: the caller closes it).
   */
  static connect(t: Teardowns, url: string, options: WebSocket.ClientOptions = {}): Promise<TestClient> {
    const socket = new WebSocket(url, options);
    const client = new TestClient(socket);
    t.teardown(() => socket.terminate());
    return new Promise((resolve, reject) => {
      socket.once('open', () => resolve(client));
      socket.once('unexpected-response', (_request, response) => reject(Object.assign(new Error(`HTTP ${response.statusCode}`), { statusCode: response.statusCode })));
      socket.once('error', reject);
    });
  }

  /** Every event received so far, across messages, in order. */
  get events(): ReceivedEvent[] {
    return (this.frames.filter(Array.isArray) as ReceivedEvent[][]).flat();
  }

  /** Messages (arrays) received so far. */
  get messages(): ReceivedEvent[][] {
    return this.frames.filter(Array.isArray) as ReceivedEvent[][];
  }

  /** Resolves when `condition` holds; rejects after `timeout` ms with `what` in the message. */
  waitFor(condition: () => boolean, what: string, timeout = 10_000): Promise<void> {
    return this.#conditions.waitFor(condition, what, timeout, () => `frames: ${JSON.stringify(this.frames).slice(0, 500)}`);
  }

  /** Waits until `count` events have arrived. */
  waitForEvents(count: number, timeout?: number): Promise<ReceivedEvent[]> {
    return this.waitFor(() => this.events.length >= count, `${count} events (have ${this.events.length})`, timeout).then(() => this.events);
  }

  /** Waits for the close frame. */
  async waitForClose(timeout?: number): Promise<{ code: number; reason: string }> {
    await this.waitFor(() => this.closed !== null, 'close', timeout);
    return this.closed as { code: number; reason: string };
  }
}
