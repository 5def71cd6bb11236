// The plugin server of `npm run chaos`, in a process of its own: its memory is measured alone, and
// a crash shows as an exit. Driven by bench/chaos/server-process.ts, one JSON line each way:
//   stdin:  {"id":1,"op":"token","environmentId":1}  {"id":2,"op":"sample"}  {"op":"close"}
//   stdout: {"ready":true,"port":N}  {"id":1,"token":"…"}  {"id":2,"sample":{…}}
//           {"event":"connected"|"reconnecting"|"warning"|"slow-consumer"|"heartbeat-timeout",…}
//           {"closed":true,"ms":N}
import Fastify from 'fastify';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import taskEvents from '../../lib/index.js';

/** What the parent passes in CHAOS_SERVER_OPTIONS. */
export interface ChaosServerOptions {
  connectionString: string;
  messageTime: number;
  heartbeatInterval: number;
  pollInterval: number;
  /**
   * A host app's own async hook on every request (a session lookup, say) takes up to this many
   * milliseconds: it holds each handshake open between its outbox position and its join.
   */
  hostHookDelay: number;
}

/** One memory sample, with the plugin's counters at that moment. */
export interface ServerSample {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  connections: number;
  eventsReceived: number;
  messagesSent: number;
  slowConsumersClosed: number;
}

const say = (message: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(message)}\n`);

const options = JSON.parse(process.env.CHAOS_SERVER_OPTIONS ?? 'null') as ChaosServerOptions | null;
if (!options) throw new Error('bench/chaos/server.ts: CHAOS_SERVER_OPTIONS is not set (it is started by `npm run chaos`)');

const { hostHookDelay, ...pluginOptions } = options;
const app = Fastify({ logger: false });
app.addHook('preHandler', async () => {
  await delay(Math.random() * hostHookDelay);
});
await app.register(taskEvents, { ...pluginOptions, rateLimit: false });
const events = app.taskEvents.events;
events.on('connected', () => say({ event: 'connected' }));
events.on('reconnecting', (attempt: number) => say({ event: 'reconnecting', attempt }));
events.on('warning', (error: Error) => say({ event: 'warning', message: error.message, cause: (error.cause as Error | undefined)?.message }));
events.on('slow-consumer', (detail: unknown) => say({ event: 'slow-consumer', detail }));
events.on('heartbeat-timeout', () => say({ event: 'heartbeat-timeout' }));
await app.listen({ port: 0, host: '127.0.0.1' });
const address = app.server.address();
say({ ready: true, port: typeof address === 'object' && address ? address.port : 0 });

const input = createInterface({ input: process.stdin });
input.on('line', (line) => {
  const request = JSON.parse(line) as { id?: number; op: string; environmentId?: number };
  if (request.op === 'token') {
    const environmentId = request.environmentId ?? 1;
    app.taskEvents.issueToken({ environmentId, userId: environmentId }).then(
      (token) => say({ id: request.id, token }),
      (error: Error) => say({ id: request.id, error: error.message }),
    );
  } else if (request.op === 'sample') {
    const memory = process.memoryUsage();
    const sample: ServerSample = {
      rss: memory.rss,
      heapUsed: memory.heapUsed,
      heapTotal: memory.heapTotal,
      external: memory.external,
      ...app.taskEvents.stats(),
    };
    say({ id: request.id, sample });
  } else if (request.op === 'close') {
    // Nothing may keep the process alive after close(): the parent waits for it to exit by itself.
    input.close();
    process.stdin.destroy();
    const started = Date.now();
    app.close().then(
      () => say({ closed: true, ms: Date.now() - started }),
      (error: Error) => say({ closed: false, error: error.message }),
    );
  }
});
