// The plugin in a process of its own, for tests of what only a whole process shows: that it exits
// by itself after `app.close()` (no timer or socket outlives it), and that it never crashes.
// Started by PluginProcess (plugin-child.ts); PLUGIN_DATABASE_URL names the database. It prints one
// JSON line per step on stdout; on stdin, `token <environmentId>` mints a token and `close` closes.
import Fastify from 'fastify';
import { createInterface } from 'node:readline';
import taskEvents from '../../lib/index.js';

const say = (message: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(message)}\n`);

const app = Fastify({ logger: false });
await app.register(taskEvents, {
  connectionString: process.env.PLUGIN_DATABASE_URL as string,
  messageTime: 100,
  rateLimit: false,
  pollInterval: Number(process.env.PLUGIN_POLL_INTERVAL ?? 500),
});
for (const name of ['connected', 'reconnecting']) app.taskEvents.events.on(name, () => say({ event: name }));
await app.listen({ port: 0, host: '127.0.0.1' });
const address = app.server.address();
say({ ready: true, port: typeof address === 'object' && address ? address.port : 0 });

const input = createInterface({ input: process.stdin });
input.on('line', (line) => {
  const [command, argument] = line.trim().split(/\s+/);
  if (command === 'token') {
    const environmentId = Number(argument);
    app.taskEvents.issueToken({ environmentId, userId: environmentId }).then(
      (token) => say({ token }),
      (error: Error) => say({ token: null, error: error.message }),
    );
    return;
  }
  if (command !== 'close') return;
  input.close();
  process.stdin.destroy();
  const started = Date.now();
  app.close().then(
    () => say({ closed: true, ms: Date.now() - started }),
    (error: Error) => say({ closed: false, error: error.message }),
  );
});
