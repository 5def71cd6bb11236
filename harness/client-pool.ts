// Many light `ws` clients at once, for the load test and the benches: opened `concurrency`
// handshakes at a time, each frame handed to a hook with its arrival time, nothing kept. What a
// client does with its frames (parse them, time them, count their events) is the hook's business.
import WebSocket from 'ws';
import type { ServerProcess } from './server-process.js';

/** Epoch milliseconds with sub-millisecond resolution, comparable between threads and processes. */
export function wallClock(): number {
  return performance.timeOrigin + performance.now();
}

/** Called with each frame a client receives (its index in the pool) and the wall-clock time it arrived. */
export type OnFrame = (client: number, frame: Buffer, receivedAt: number) => void;

/** How a {@link ClientPool} connects and what it tells. */
export interface ClientPoolOptions {
  /** Handshakes in flight at once. */
  concurrency: number;
  /** Deadline of connecting them all, ms. */
  timeout: number;
  onFrame?: OnFrame;
  /**
   * Told of a client closed after it opened (by the server or the network, not by `close()`),
   * with the close code (1006 when the connection was cut).
   */
  onClose?: (client: number, code: number) => void;
  /** For hooks that never decode the text: skipping UTF-8 validation spares ~10 µs per 100 KB. */
  skipUTF8Validation?: boolean;
  /** The subprotocol each client offers, e.g. `task-events.v2`; none by default (protocol v1). */
  protocol?: string;
}

/** Clients connected to one server, one per URL; client `i` is the one of `urls[i]`. */
export class ClientPool {
  readonly #options: ClientPoolOptions;
  readonly #sockets: WebSocket[] = [];
  #opened = 0;
  #closing = false;

  private constructor(options: ClientPoolOptions) {
    this.#options = options;
  }

  /** Opens a client on each of `urls`; rejects (every client closed) at the first that fails. */
  static async connect(urls: readonly string[], options: ClientPoolOptions): Promise<ClientPool> {
    const pool = new ClientPool(options);
    const deadline = performance.now() + options.timeout;
    let next = 0;
    const connectSome = async (): Promise<void> => {
      while (next < urls.length && !pool.#closing) {
        if (performance.now() > deadline) throw new Error(`only ${pool.size} of ${urls.length} clients connected within ${options.timeout} ms`);
        const index = next++;
        await pool.#open(index, urls[index] as string);
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(options.concurrency, urls.length) }, connectSome));
    } catch (error) {
      pool.close();
      throw error;
    }
    return pool;
  }

  /**
   * Opens client `index` on `url`: one more client, or a new connection of one whose socket has
   * closed (a resume), its frames told under the same index. Resolves at the open (the 101);
   * rejects when the handshake fails (refused, or the HTTP status when it is not a 101).
   */
  open(index: number, url: string): Promise<void> {
    if (this.#closing) return Promise.reject(new Error('the pool is closed'));
    return this.#open(index, url);
  }

  /** Connections opened (a client opened again counts again). */
  get size(): number {
    return this.#opened;
  }

  /** Terminates every client. */
  close(): void {
    this.#closing = true;
    for (const socket of this.#sockets) socket.terminate();
  }

  #open(index: number, url: string): Promise<void> {
    const { onFrame, onClose, skipUTF8Validation = false, protocol } = this.#options;
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url, protocol === undefined ? [] : [protocol], { perMessageDeflate: false, skipUTF8Validation });
      this.#sockets.push(socket);
      if (onFrame) socket.on('message', (frame: Buffer) => onFrame(index, frame, wallClock()));
      // After the open, an error is followed by 'close', which tells.
      socket.on('error', (error) => reject(new Error(`client ${index} failed to connect (${this.size} open)`, { cause: error })));
      socket.once('open', () => {
        this.#opened++;
        if (onClose) socket.on('close', (code) => this.#closing || onClose(index, code));
        resolve();
      });
    });
  }
}

/**
 * Opens a client of the plugin server for each of `tokens`, and resolves once the server counts
 * them all as joined. Given several servers (instances on one database), client `i` goes to
 * server `i % servers.length`, and each must count its share. The caller closes the pool.
 */
export async function openClients(server: ServerProcess | readonly ServerProcess[], tokens: readonly string[], options: ClientPoolOptions): Promise<ClientPool> {
  const servers = Array.isArray(server) ? server : [server as ServerProcess];
  const deadline = performance.now() + options.timeout;
  const pool = await ClientPool.connect(tokens.map((token, index) => (servers[index % servers.length] as ServerProcess).url(token)), options);
  try {
    const remaining = (): number => Math.max(0, deadline - performance.now());
    await Promise.all(servers.map((each, index) => each.untilConnections(Math.ceil((tokens.length - index) / servers.length), remaining())));
  } catch (error) {
    pool.close();
    throw error;
  }
  return pool;
}
