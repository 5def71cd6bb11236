// The plugin under test: in this process on port 0 (startServer), or in a process of its own
// (startServerProcess) for what only a whole process shows; and waits on its events.
import Fastify, { type FastifyInstance } from 'fastify';
import type { Test } from 'tap';
import taskEvents, { type TaskEventsOptions } from '../../lib/index.js';
import type { TestDatabase } from '../../harness/db.js';
import type { PluginServerOptions, PluginStats } from '../../harness/lines.js';
import { ServerProcess } from '../../harness/server-process.js';

// The client moved to harness/client.ts; re-exported for test/example.test.ts, which imports it from here.
export { TestClient, type ReceivedEvent } from '../../harness/client.js';

/** What every test server runs with unless told otherwise: short messages, no rate limit. */
const TEST_DEFAULTS = { messageTime: 100, rateLimit: false, pollInterval: 500 } as const;

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
  await app.register(taskEvents, { ...connection, ...TEST_DEFAULTS, ...options });
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

/**
 * Starts the plugin in a child process (harness/plugin-server.ts) against `connectionString`, with
 * the test defaults unless `options` says otherwise; killed, if still running, when the test ends.
 */
export function startServerProcess(t: Test, connectionString: string, options: PluginServerOptions['plugin'] = {}): Promise<ServerProcess<PluginStats>> {
  return ServerProcess.startPlugin({ plugin: { connectionString, ...TEST_DEFAULTS, ...options } }, { timeout: 20_000, teardown: t });
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
