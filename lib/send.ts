import type { WebSocket } from 'ws';

/** Close code for a client that does not keep up: "Try Again Later". */
const TRY_AGAIN_LATER = 1013;

/** A slow client gets this long to take its close frame before its socket is destroyed. */
const SLOW_CLOSE_GRACE = 5000;

/**
 * Sends one frame (serialized once) to every open socket; returns to how many. A socket with more
 * than `maxBufferedBytes` unsent after it is closed with 1013 (a client that does not read holds
 * our memory; ws destroys the socket if the close is not answered), after `onSlow` has seen it.
 */
export function sendToAll(
  sockets: Iterable<WebSocket>,
  frame: Buffer | string,
  maxBufferedBytes: number,
  onSlow: (socket: WebSocket, bufferedAmount: number) => void,
): number {
  let count = 0;
  for (const socket of sockets) {
    if (socket.readyState !== socket.OPEN) continue;
    socket.send(frame, { binary: false });
    count++;
    const { bufferedAmount } = socket;
    if (bufferedAmount <= maxBufferedBytes) continue;
    onSlow(socket, bufferedAmount);
    socket.close(TRY_AGAIN_LATER, `Client too slow: over ${maxBufferedBytes} bytes unsent`);
    setTimeout(() => socket.terminate(), SLOW_CLOSE_GRACE).unref();
  }
  return count;
}
