import type { WebSocket } from 'ws';

/**
 * Pings every tracked socket each `interval` ms; a socket that has not answered the previous ping
 * by then is terminated (a peer that vanished without a close: a laptop lid, a dead NAT entry).
 * A live client answers pings by itself (browsers and `ws` do), so it is never dropped.
 */
export class Heartbeat {
  readonly #sockets = new Set<WebSocket>();
  readonly #answered = new WeakSet<WebSocket>();
  readonly #timer: NodeJS.Timeout;
  readonly #onDead: (socket: WebSocket) => void;

  constructor(interval: number, onDead: (socket: WebSocket) => void) {
    this.#onDead = onDead;
    this.#timer = setInterval(() => this.#beat(), interval).unref();
  }

  track(socket: WebSocket): void {
    this.#sockets.add(socket);
    this.#answered.add(socket);
    socket.on('pong', () => this.#answered.add(socket));
    socket.once('close', () => this.#sockets.delete(socket));
  }

  close(): void {
    clearInterval(this.#timer);
    this.#sockets.clear();
  }

  #beat(): void {
    for (const socket of this.#sockets) {
      if (!this.#answered.has(socket)) {
        this.#sockets.delete(socket);
        this.#onDead(socket);
        socket.terminate();
        continue;
      }
      this.#answered.delete(socket);
      if (socket.readyState === socket.OPEN) socket.ping();
    }
  }
}
