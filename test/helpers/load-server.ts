// The plugin in a process of its own for the load test and bench (test/helpers/load.ts), so the
// server and the thousands of clients do not share one event loop. LOAD_DATABASE_URL names the
// database; LOAD_MESSAGE_TIME optionally sets messageTime. One JSON line per answer on stdout;
// on stdin, `stats` reports memory and the hub's counters (`stats gc`: after a full collection, when
// run with --expose-gc), `close` closes the app. Each message the hub sends is reported as `flushed`.
// bench/reference-server.ts speaks the same lines.
import Fastify from 'fastify';
import { createInterface } from 'node:readline';
import taskEvents from '../../lib/index.js';

const say = (message: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(message)}\n`);

const app = Fastify({ logger: false });
await app.register(taskEvents, {
  connectionString: process.env.LOAD_DATABASE_URL as string,
  rateLimit: false,
  // Thousands of clients of one user from one address: a load test, not an attack.
  maxConnectionsPerUser: 0,
  maxConnectionsPerIp: 0,
  maxConnections: 0,
  ...(process.env.LOAD_MESSAGE_TIME && { messageTime: Number(process.env.LOAD_MESSAGE_TIME) }),
});
// 5,000 handshakes at once would overflow Node's default backlog of 511 and stall on SYN retries.
await app.listen({ port: 0, host: '127.0.0.1', backlog: 8192 });
// When the hub has handed a message to every socket (wall clock, to compare with the parent's).
app.taskEvents.events.on('flushed', ({ events, sockets }: { events: number; sockets: number }) => say({ flushed: { at: Date.now(), events, sockets } }));
const address = app.server.address();
say({ ready: true, port: typeof address === 'object' && address ? address.port : 0 });

const input = createInterface({ input: process.stdin });
input.on('line', (line) => {
  const command = line.trim();
  if (command === 'stats' || command === 'stats gc') {
    if (command === 'stats gc') global.gc?.();
    const { rss, heapUsed } = process.memoryUsage();
    say({ stats: { rss, heapUsed, ...app.taskEvents.stats() } });
  } else if (command === 'close') {
    input.close();
    process.stdin.destroy();
    app.close().then(
      () => say({ closed: true }),
      (error: Error) => say({ closed: false, error: error.message }),
    );
  }
});
