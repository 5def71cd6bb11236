// The client side of bench/fanout.ts and bench/memory.ts: the bare-ws reference server's start, a
// wait for a server to count its connections, and a light pool of clients. A client only counts
// the events it receives — the `{` bytes of a message, one per event object: exact for messages of
// flat event objects, and ~15 µs per 100 KB where a JSON.parse takes ~300 µs — so the clients' work
// is small and the same whichever server they read. A few sampled clients keep their messages, to
// be parsed in full after a round.
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { ServerProcess, waitFor } from '../test/helpers/load.js';

/** Starts bench/reference-server.ts, the bare ws broadcaster, with `nodeFlags`. */
export function startReferenceServer(timeout: number, nodeFlags: string[] = []): Promise<ServerProcess> {
  return ServerProcess.start({ script: fileURLToPath(new URL('./reference-server.ts', import.meta.url)), nodeFlags, timeout });
}

/** Resolves when `server` counts exactly `count` connections (the plugin: joined to the hub). */
export async function untilServerCounts(server: ServerProcess, count: number, timeout: number): Promise<void> {
  const deadline = performance.now() + timeout;
  for (;;) {
    const { connections } = await server.stats();
    if (connections === count) return;
    if (performance.now() > deadline) throw new Error(`the server counts ${connections} of ${count} connections`);
    await sleep(50);
  }
}

const OPEN_BRACE = 0x7b;

/** Events in one message (`{` bytes), or -1 when it is not a JSON array. */
function countEvents(message: Buffer): number {
  if (message[0] !== 0x5b || message[message.length - 1] !== 0x5d) return -1;
  let count = 0;
  for (let at = message.indexOf(OPEN_BRACE); at !== -1; at = message.indexOf(OPEN_BRACE, at + 1)) count++;
  return count;
}

/** How many clients keep their messages for {@link ClientPool.samples}. */
const SAMPLED = 5;

/** Clients connected to one server; {@link ClientPool.round} times one message to all of them. */
export class ClientPool {
  readonly #sockets: WebSocket[] = [];
  /** Events each client received in the current round. */
  #counts = new Int32Array(0);
  readonly #sampled = new Map<number, Buffer[]>();
  readonly #waiters = new Set<() => void>();
  #expected = 0;
  #complete = 0;
  #lastCompleteAt = 0;
  #problem: string | null = null;
  #closing = false;

  /** Opens a client on each of `urls`, `concurrency` handshakes at a time. */
  static async connect(urls: readonly string[], concurrency: number, timeout: number): Promise<ClientPool> {
    const pool = new ClientPool();
    pool.#counts = new Int32Array(urls.length);
    for (let i = 0; i < SAMPLED; i++) pool.#sampled.set(Math.floor((i * urls.length) / SAMPLED), []);
    const deadline = performance.now() + timeout;
    let next = 0;
    try {
      await Promise.all(
        Array.from({ length: Math.min(concurrency, urls.length) }, async () => {
          while (next < urls.length) {
            if (performance.now() > deadline) throw new Error(`only ${pool.size} of ${urls.length} clients connected within ${timeout} ms`);
            const index = next++;
            await pool.#open(index, urls[index] as string);
          }
        }),
      );
    } catch (error) {
      pool.close();
      throw error;
    }
    return pool;
  }

  get size(): number {
    return this.#sockets.length;
  }

  /**
   * One round: every client must receive exactly `events` events from now on. Calls `trigger`
   * (which makes the server send them; it returns the start of the timing, performance.now()),
   * then resolves with the time from that start to the last client having all its events.
   */
  async round(events: number, timeout: number, trigger: () => Promise<number>): Promise<number> {
    this.#counts.fill(0);
    for (const messages of this.#sampled.values()) messages.length = 0;
    this.#expected = events;
    this.#complete = 0;
    const startedAt = await trigger();
    await waitFor(this.#waiters, () => this.#complete === this.size || this.#problem !== null, `${this.size} clients to have ${events} events`, timeout).catch(
      (error: Error) => {
        throw new Error(`${error.message}: ${this.#complete} complete`);
      },
    );
    if (this.#problem) throw new Error(this.#problem);
    return this.#lastCompleteAt - startedAt;
  }

  /** The events the sampled clients received in the last round, parsed in full. */
  samples(): unknown[][] {
    return [...this.#sampled.values()].map((messages) => messages.flatMap((message) => JSON.parse(message.toString()) as unknown[]));
  }

  close(): void {
    this.#closing = true;
    for (const socket of this.#sockets) socket.terminate();
  }

  #open(index: number, url: string): Promise<void> {
    return new Promise((resolve, reject) => {
      // Counting needs no text: skipping UTF-8 validation spares the clients ~10 µs per 100 KB.
      const socket = new WebSocket(url, { perMessageDeflate: false, skipUTF8Validation: true });
      const sample = this.#sampled.get(index);
      socket.on('message', (data: Buffer) => this.#received(index, data, sample));
      socket.on('close', () => this.#fail(`client ${index} was closed`));
      socket.once('error', reject);
      socket.once('open', () => {
        this.#sockets.push(socket);
        resolve();
      });
    });
  }

  #received(index: number, message: Buffer, sample: Buffer[] | undefined): void {
    const events = countEvents(message);
    if (events === -1) return this.#fail(`client ${index} received a message that is not a JSON array`);
    sample?.push(message);
    const count = (this.#counts[index] as number) + events;
    this.#counts[index] = count;
    if (count > this.#expected) return this.#fail(`client ${index} received ${count} events, ${this.#expected} expected`);
    if (count === this.#expected && count - events < this.#expected) {
      this.#complete++;
      if (this.#complete === this.size) {
        this.#lastCompleteAt = performance.now();
        this.#notify();
      }
    }
  }

  #fail(problem: string): void {
    if (this.#closing) return;
    this.#problem ??= problem;
    this.#notify();
  }

  #notify(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }
}
