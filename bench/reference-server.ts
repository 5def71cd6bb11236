// The reference of the fan-out and memory benches: a bare `ws` server, nothing else, in a process
// of its own. It holds one pre-serialized JSON array of 1,000 events shaped like ours
// (≈100 KB) and, on `send`, hands it to every client with a plain loop of `socket.send`. It speaks
// the lines of harness/lines.ts, so harness/server-process.ts's ServerProcess drives it: the
// `ready` event once listening; requests `stats` (`gc`: after a full collection, with
// --expose-gc), `send` (answered with `at` and `sockets`), `close`.
// Started by bench/fanout.ts and bench/memory.ts.
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';
import { answerRequests, memory, report } from '../harness/lines.js';

/** Events in the message: the plugin's messageLimit, which it too sends at once. */
const EVENTS = 1000;

/** A message like the plugin's: a JSON array of `count` task_created events. */
function referenceMessage(count: number): Buffer {
  const events: string[] = [];
  for (let i = 0; i < count; i++) {
    const timestamp = new Date(Date.UTC(2025, 0, 16, 11, 7, 57) + i).toISOString().replace('Z', '000+00:00');
    events.push(`{"task_id":${100_000 + i},"object_class_id":${1 + (i % 3)},"event":"task_created","timestamp":"${timestamp}"}`);
  }
  return Buffer.from(`[${events.join(',')}]`);
}

const message = referenceMessage(EVENTS);
const server = createServer();
const wss = new WebSocketServer({ server, perMessageDeflate: false });
await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1', backlog: 8192 }, resolve));
const address = server.address();
report('ready', { port: typeof address === 'object' && address ? address.port : 0 });

answerRequests({
  send: () => {
    // A text frame of the same bytes to everyone: the Buffer is not copied or re-encoded per client.
    for (const socket of wss.clients) socket.send(message, { binary: false });
    return { at: Date.now(), sockets: wss.clients.size };
  },
  stats: (request) => ({ stats: { ...memory(request.gc === true), connections: wss.clients.size } }),
  close: async () => {
    for (const socket of wss.clients) socket.terminate();
    wss.close();
    await new Promise((resolve) => server.close(resolve));
    return { closed: true };
  },
});
