// The plugin in a process of its own, for what only a whole process shows (it never crashes; it
// exits by itself after `app.close()`: no timer or socket outlives it), for the load test and the
// benches (thousands of clients must not share the server's event loop), and for the chaos run
// (its memory is measured alone). Started by ServerProcess.startPlugin (server-process.ts) with
// its PluginServerOptions as JSON in PLUGIN_SERVER_OPTIONS; speaks the lines of lines.ts.
import Fastify from 'fastify';
import { setTimeout as delay } from 'node:timers/promises';
import taskEvents from '../lib/index.js';
import { answerRequests, LIFECYCLE_EVENTS, memory, report, type Line, type PluginServerOptions } from './lines.js';

const options = JSON.parse(process.env.PLUGIN_SERVER_OPTIONS ?? 'null') as PluginServerOptions | null;
if (!options) throw new Error('harness/plugin-server.ts: PLUGIN_SERVER_OPTIONS is not set (it is started by ServerProcess.startPlugin)');

/** An event's detail as fields of its line: an Error as its message and its cause's. */
function fields(detail: unknown): Line {
  if (detail instanceof Error) return { message: detail.message, cause: (detail.cause as Error | undefined)?.message };
  if (typeof detail === 'object' && detail !== null) return { ...detail };
  return detail === undefined ? {} : { detail };
}

const app = Fastify({ logger: false });
const hostHookDelay = options.hostHookDelay ?? 0;
if (hostHookDelay > 0) {
  app.addHook('preHandler', async () => {
    await delay(Math.random() * hostHookDelay);
  });
}
await app.register(taskEvents, { rateLimit: false, ...options.plugin });
for (const name of options.events ?? LIFECYCLE_EVENTS) app.taskEvents.events.on(name, (detail: unknown) => report(name, fields(detail)));
// 5,000 handshakes at once would overflow Node's default backlog of 511 and stall on SYN retries.
await app.listen({ port: 0, host: '127.0.0.1', backlog: 8192 });
const address = app.server.address();
report('ready', { port: typeof address === 'object' && address ? address.port : 0 });

// A deploy: SIGTERM flushes what is buffered, closes every socket with 1001, and exits.
process.once('SIGTERM', () => {
  void app.close().then(() => process.exit(0), () => process.exit(1));
});

answerRequests({
  token: async (request) => {
    const environmentId = Number(request.environmentId ?? 1);
    return { token: await app.taskEvents.issueToken({ environmentId, userId: environmentId }) };
  },
  stats: (request) => ({ stats: { ...memory(request.gc === true), ...app.taskEvents.stats() } }),
  close: async () => {
    const started = Date.now();
    await app.close();
    return { closed: true, ms: Date.now() - started };
  },
});
