// A raw TCP client for what a `ws` client will not send: malformed upgrades, garbage, half-sent
// requests, hand-made frames. Every wait has a deadline.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { Test } from 'tap';
import { Conditions } from '../../harness/conditions.js';

/** One TCP connection to 127.0.0.1 that records every byte it receives and when it closed. */
export class RawConnection {
  readonly socket: net.Socket;
  /** Everything received so far. */
  received = Buffer.alloc(0);
  /** ms from connect to close; `null` while open. */
  closedAfter: number | null = null;
  readonly #openedAt = Date.now();
  readonly #conditions = new Conditions();

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk]);
      this.#conditions.check();
    });
    socket.on('error', () => {}); // a reset is a close here; the test looks at what arrived
    socket.on('close', () => {
      this.closedAfter = Date.now() - this.#openedAt;
      this.#conditions.check();
    });
  }

  /** Connects to `port` on 127.0.0.1; destroyed when the test ends. */
  static async open(t: Test, port: number): Promise<RawConnection> {
    const socket = net.connect({ port, host: '127.0.0.1' });
    t.teardown(() => void socket.destroy());
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawConnection(socket);
  }

  /** What was received, as text (HTTP heads are ASCII). */
  get text(): string {
    return this.received.toString('latin1');
  }

  /** The status code of the first HTTP response received, or `null`. */
  get status(): number | null {
    const match = /^HTTP\/1\.1 (\d{3}) /.exec(this.text);
    return match ? Number(match[1]) : null;
  }

  /** The bytes after the first response head (`\r\n\r\n`): WebSocket frames after a 101. */
  get afterHead(): Buffer {
    const end = this.received.indexOf('\r\n\r\n');
    return end === -1 ? Buffer.alloc(0) : this.received.subarray(end + 4);
  }

  write(data: string | Buffer): void {
    if (this.socket.writable) this.socket.write(data);
  }

  /** Resolves when `condition` holds; rejects after `timeout` ms, naming `what`. */
  waitFor(condition: () => boolean, what: string, timeout = 10_000): Promise<void> {
    return this.#conditions.waitFor(condition, what, timeout, () => `received: ${JSON.stringify(this.text.slice(0, 300))}`);
  }

  /** Waits until the server closes the connection; resolves with ms from connect to close. */
  async waitForClose(timeout = 10_000): Promise<number> {
    await this.waitFor(() => this.closedAfter !== null, 'the server to close the connection', timeout);
    return this.closedAfter as number;
  }
}

/** A WebSocket upgrade request for `path`; `headers` override (or, with `null`, remove) the defaults. */
export function upgradeRequest(path: string, headers: Record<string, string | null> = {}): string {
  const defaults: Record<string, string> = {
    Host: '127.0.0.1',
    Connection: 'Upgrade',
    Upgrade: 'websocket',
    'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
    'Sec-WebSocket-Version': '13',
  };
  const lines = Object.entries({ ...defaults, ...headers })
    .filter((entry): entry is [string, string] => entry[1] !== null)
    .map(([name, value]) => `${name}: ${value}`);
  return `GET ${path} HTTP/1.1\r\n${lines.join('\r\n')}\r\n\r\n`;
}

/** The header of a masked client frame announcing `length` payload bytes (none of which follow). */
export function frameHeader(opcode: number, length: number): Buffer {
  const header = Buffer.alloc(14);
  header[0] = 0x80 | opcode; // FIN
  header[1] = 0x80 | 127; // masked, 64-bit length
  header.writeBigUInt64BE(BigInt(length), 2);
  randomBytes(4).copy(header, 10);
  return header;
}

/** The code of the first close frame among server `frames` (unmasked), or `null`. */
export function closeCode(frames: Buffer): number | null {
  let offset = 0;
  while (offset + 2 <= frames.length) {
    const opcode = (frames[offset] as number) & 0x0f;
    let length = (frames[offset + 1] as number) & 0x7f;
    let start = offset + 2;
    if (length === 126) {
      length = frames.readUInt16BE(start);
      start += 2;
    } else if (length === 127) {
      length = Number(frames.readBigUInt64BE(start));
      start += 8;
    }
    if (opcode === 0x8) return length >= 2 && start + 2 <= frames.length ? frames.readUInt16BE(start) : null;
    offset = start + length;
  }
  return null;
}
