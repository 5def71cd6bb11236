// What bench/latency.ts and bench/bulk.ts share: the plugin server in a child process of its own
// (test/helpers/load-server.ts: no rate limit, no connection caps), so it never shares an event
// loop with the clients; clients that hand each frame to the bench with its arrival time; and a
// wall clock fine enough for milliseconds across processes.
import type pg from 'pg';
import WebSocket from 'ws';
import { issueTokens, ServerProcess } from '../test/helpers/load.js';
import { untilServerCounts } from './clients.js';

/** Epoch milliseconds with sub-millisecond resolution, comparable between threads and processes. */
export function wallClock(): number {
  return performance.timeOrigin + performance.now();
}

/** Starts the plugin server (its own process) with `messageTime`; resolves once it listens. */
export function startPluginServer(databaseUrl: string, messageTime: number, timeout: number): Promise<ServerProcess> {
  return ServerProcess.start({ env: { LOAD_DATABASE_URL: databaseUrl, LOAD_MESSAGE_TIME: String(messageTime) }, timeout });
}

/** Called with each text frame a client receives and the wall-clock time it arrived. */
export type OnFrame = (client: number, frame: Buffer, receivedAt: number) => void;

/**
 * Opens `count` clients of alice (environment 1) on `server`, `concurrency` handshakes at a time,
 * and resolves once the server counts them all as joined. `onClose` is told of any client closed
 * later; the caller terminates the returned sockets.
 */
export async function openClients(
  server: ServerProcess,
  pool: pg.Pool,
  count: number,
  options: { concurrency: number; timeout: number; onFrame: OnFrame; onClose: (client: number) => void },
): Promise<WebSocket[]> {
  const tokens = await issueTokens(pool, count);
  const sockets: WebSocket[] = [];
  const url = `ws://127.0.0.1:${server.port}/ws/events/tasks/?uuid=`;
  const open = (client: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const socket = new WebSocket(url + tokens[client], { perMessageDeflate: false });
      sockets.push(socket);
      socket.on('message', (frame: Buffer) => options.onFrame(client, frame, wallClock()));
      socket.on('error', reject); // after the open, 'close' follows and tells
      socket.once('open', () => {
        socket.on('close', () => options.onClose(client));
        resolve();
      });
    });
  const deadline = performance.now() + options.timeout;
  let next = 0;
  const connectSome = async (): Promise<void> => {
    while (next < count) {
      if (performance.now() > deadline) throw new Error(`only ${next} of ${count} clients connected within ${options.timeout} ms`);
      await open(next++);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(options.concurrency, count) }, connectSome));
    await untilServerCounts(server, count, Math.max(0, deadline - performance.now()));
  } catch (error) {
    for (const socket of sockets) socket.terminate();
    throw error;
  }
  return sockets;
}
