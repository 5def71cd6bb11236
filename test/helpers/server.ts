// A real server (the plugin on port 0) and real `ws` clients, with waits that have deadlines.
import Fastify, { type FastifyInstance } from 'fastify';
import type { Test } from 'tap';
import WebSocket from 'ws';
import taskEvents, { type TaskEventsOptions } from '../../lib/index.js';
import { Conditions } from './conditions.js';
import type { TestDatabase } from './db.js';

/** A running server of the plugin. */
export interface TestServer {
  app: FastifyInstance;
  /** `ws://127.0.0.1:<port><path>` */
  wsUrl: (path: string) => string;
  /** A fresh token for a user of an environment (defaults: alice of Acme). */
  token: (environmentId?: number, userId?: number) => Promise<string>;
  /** The endpoint URL with a fresh token and an optional query. */
  endpoint: (query?: Record<string, string>, environmentId?: number) => Promise<string>;
}

/**
 * Starts the plugin on port 0 against `db` (short messageTime; no rate limit unless given), as the
 * database's least-privileged runtime role unless `options` names a connection of its own.
 */
export async function startServer(t: Test, db: TestDatabase, options: Partial<TaskEventsOptions> = {}): Promise<TestServer> {
  const app = Fastify({ logger: false });
  const connection = options.pool || options.connectionString ? {} : { connectionString: db.appUrl ?? db.url };
  await app.register(taskEvents, { ...connection, messageTime: 100, rateLimit: false, pollInterval: 500, ...options });
  await app.listen({ port: 0, host: '127.0.0.1' });
  t.teardown(() => app.close());
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const wsUrl = (path: string): string => `ws://127.0.0.1:${port}${path}`;
  const token = (environmentId = 1, userId = environmentId): Promise<string> => app.taskEvents.issueToken({ environmentId, userId });
  const endpoint = async (query: Record<string, string> = {}, environmentId = 1): Promise<string> =>
    wsUrl(`/ws/events/tasks/?${new URLSearchParams({ uuid: await token(environmentId), ...query })}`);
  return { app, wsUrl, token, endpoint };
}

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

  /** Opens a connection; resolves on `open` (the 101), rejects on an HTTP refusal. */
  static connect(t: Test, url: string, options: WebSocket.ClientOptions = {}): Promise<TestClient> {
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

/** Resolves with the first emission of `name` on `emitter` that satisfies `accept`. */
export function nextEvent<T = unknown>(emitter: NodeJS.EventEmitter, name: string, accept: (detail: T) => boolean = () => true, timeout = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(name, listener);
      reject(new Error(`timed out after ${timeout} ms waiting for '${name}'`));
    }, timeout);
    const listener = (detail: T): void => {
      if (!accept(detail)) return;
      clearTimeout(timer);
      emitter.off(name, listener);
      resolve(detail);
    };
    emitter.on(name, listener);
  });
}
