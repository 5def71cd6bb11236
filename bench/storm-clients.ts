// The clients of bench/storm.ts: `count` raw v2 `ws` clients (harness/client-pool.ts) that keep
// their last cursor, as the client module does, and count what they receive as task ids above
// `base` (the writer's): how often each, in which order; once a mark is set, how many of the
// events up to it each has (caught up: all of them). Frames are read without a JSON.parse
// (bench/v2.ts): a thousand clients' parsing would weigh on the two cores the server shares.
import { setTimeout as sleep } from 'node:timers/promises';
import { ClientPool, wallClock } from '../harness/client-pool.js';
import { Conditions } from '../harness/conditions.js';
import type { ServerProcess } from '../harness/server-process.js';
import { cursorOf, eventsArray, forEachTaskId, frameType, V2, v2Url } from './v2.js';

/** Attempts of one client's connect before the bench gives up. */
const MAX_ATTEMPTS = 6;

/** p50, p90 and max of some times, ms. */
export interface Spread {
  p50: number;
  p90: number;
  max: number;
}

/** The p50, p90 and max of `times` (nearest rank), rounded to ms. */
export function spread(times: ArrayLike<number>): Spread {
  const sorted = Float64Array.from(times).sort();
  const at = (q: number): number => Math.round(sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)] as number);
  return { p50: at(0.5), p90: at(0.9), max: at(1) };
}

/** The clients, what each received, and when. */
export class StormClients {
  readonly conditions = new Conditions();
  /** Failed connect attempts, retried (none expected). */
  retries = 0;
  #sockets: ClientPool | null = null;
  readonly cursors: (string | null)[];
  readonly #seen: Uint8Array[];
  readonly #last: Float64Array;
  readonly #belowMark: Int32Array;
  readonly readyAt: Float64Array;
  /** When the client's last attempt began, and when it opened (the 101). */
  readonly attemptAt: Float64Array;
  readonly openAt: Float64Array;
  /** When the client had every event up to the mark. */
  readonly caughtUpAtOf: Float64Array;
  /** Events frames each client received. */
  readonly frames: Int32Array;
  outOfOrder = 0;
  errorFrames: string[] = [];
  /** While the server restarts: sockets closed, by close code. Otherwise a close is unexpected. */
  restarting = false;
  closed = 0;
  readonly closeCodes = new Map<number, number>();
  unexpectedCloses: string[] = [];
  #mark = Infinity;
  #toMark = 0;
  caughtUp = 0;
  caughtUpAt = 0;

  constructor(readonly count: number, readonly base: number, readonly timeout: number) {
    this.cursors = new Array<string | null>(count).fill(null);
    this.#seen = Array.from({ length: count }, () => new Uint8Array(4096));
    this.#last = new Float64Array(count);
    this.#belowMark = new Int32Array(count);
    this.readyAt = new Float64Array(count);
    this.attemptAt = new Float64Array(count);
    this.openAt = new Float64Array(count);
    this.caughtUpAtOf = new Float64Array(count);
    this.frames = new Int32Array(count);
  }

  frame = (client: number, frame: Buffer, receivedAt: number): void => {
    const type = frameType(frame);
    if (type === 'ready' || type === 'cursor' || type === 'events') this.cursors[client] = cursorOf(frame);
    if (type === 'ready') this.readyAt[client] = receivedAt;
    else if (type === 'events') {
      this.frames[client] = (this.frames[client] as number) + 1;
      forEachTaskId(eventsArray(frame) as Buffer, (taskId) => this.#received(client, taskId, receivedAt));
    } else if (type !== 'cursor') this.errorFrames.push(`client ${client}: ${frame.toString().slice(0, 200)}`);
    this.conditions.check();
  };

  /** Told by the pool when a client's socket closes (not by the pool's own close). */
  close = (client: number, code: number): void => {
    if (this.restarting) {
      this.closeCodes.set(code, (this.closeCodes.get(code) ?? 0) + 1);
      this.closed++;
    } else this.unexpectedCloses.push(`client ${client} closed with ${code}`);
    this.conditions.check();
  };

  #received(client: number, taskId: number, receivedAt: number): void {
    const offset = taskId - this.base;
    if (offset < 0) return void this.errorFrames.push(`client ${client}: task ${taskId}, written before the clients connected`);
    let seen = this.#seen[client] as Uint8Array;
    if (offset >= seen.length) {
      const grown = new Uint8Array(Math.max(seen.length * 2, offset + 1));
      grown.set(seen);
      this.#seen[client] = seen = grown;
    }
    if (taskId < (this.#last[client] as number)) this.outOfOrder++;
    this.#last[client] = taskId;
    const times = Math.min((seen[offset] as number) + 1, 255);
    seen[offset] = times;
    if (times > 1 || taskId > this.#mark) return;
    const have = (this.#belowMark[client] as number) + 1;
    this.#belowMark[client] = have;
    if (have === this.#toMark) {
      this.caughtUp++;
      this.caughtUpAt = receivedAt;
      this.caughtUpAtOf[client] = receivedAt;
    }
  }

  /** From now on, a client is caught up once it has each of the `toMark` events up to task `mark`. */
  setMark(mark: number, toMark: number): void {
    this.#mark = mark;
    this.#toMark = toMark;
    this.caughtUp = 0;
    const now = wallClock();
    for (let client = 0; client < this.count; client++) {
      const seen = this.#seen[client] as Uint8Array;
      let have = 0;
      for (let offset = 0; offset <= Math.min(mark - this.base, seen.length - 1); offset++) if (seen[offset]) have++;
      this.#belowMark[client] = have;
      if (have === toMark) this.caughtUp++;
      this.caughtUpAtOf[client] = have === toMark ? now : 0;
    }
    this.caughtUpAt = now;
  }

  /** The most events up to task `mark` that a client lacks. */
  largestGap(mark: number, toMark: number): number {
    let largest = 0;
    for (let client = 0; client < this.count; client++) {
      const seen = this.#seen[client] as Uint8Array;
      let have = 0;
      for (let offset = 0; offset <= Math.min(mark - this.base, seen.length - 1); offset++) if (seen[offset]) have++;
      largest = Math.max(largest, toMark - have);
    }
    return largest;
  }

  /** Each client against `taskIds` (every event written, ascending): lost, duplicated, unexpected. */
  check(taskIds: readonly number[]): { lost: number; duplicated: number; unexpected: number } {
    const expected = new Uint8Array(Math.max(...this.#seen.map((seen) => seen.length), ...taskIds.map((taskId) => taskId - this.base + 1)));
    for (const taskId of taskIds) expected[taskId - this.base] = 1;
    let lost = 0;
    let duplicated = 0;
    let unexpected = 0;
    for (const seen of this.#seen) {
      for (let offset = 0; offset < expected.length; offset++) {
        const times = seen[offset] ?? 0;
        if (expected[offset] && times === 0) lost++;
        else if (expected[offset] && times > 1) duplicated += times - 1;
        else if (!expected[offset]) unexpected += times;
      }
    }
    return { lost, duplicated, unexpected };
  }

  /** Resolves when `condition` holds; rejects after `timeout` with `what`, or at the first error frame or unexpected close. */
  async until(condition: () => boolean, what: string): Promise<void> {
    const failed = (): boolean => this.errorFrames.length > 0 || this.unexpectedCloses.length > 0;
    await this.conditions.waitFor(() => condition() || failed(), what, this.timeout);
    if (failed()) throw new Error(`waiting for ${what}: ${[...this.errorFrames, ...this.unexpectedCloses].slice(0, 3).join('; ')}`);
  }

  /**
   * Opens every client on `server` (from its last cursor, if any), each after 0–`jitter` ms, a
   * failed attempt again with a fresh token and a doubled bound; resolves when every client has
   * opened (the 101).
   */
  async connectAll(server: ServerProcess, tokens: readonly string[], jitter: number, freshToken: () => Promise<string>): Promise<void> {
    this.#sockets ??= await ClientPool.connect([], { concurrency: 1, timeout: this.timeout, protocol: V2, skipUTF8Validation: true, onFrame: this.frame, onClose: this.close });
    const sockets = this.#sockets;
    const attempt = async (client: number, tries: number): Promise<void> => {
      await sleep(Math.random() * jitter * 2 ** tries);
      const token = tries === 0 ? (tokens[client] as string) : await freshToken();
      this.attemptAt[client] = wallClock();
      try {
        await sockets.open(client, v2Url(server, token, this.cursors[client] ?? null));
        this.openAt[client] = wallClock();
      } catch (error) {
        this.retries++;
        if (tries + 1 >= MAX_ATTEMPTS) throw new Error(`client ${client} could not connect in ${MAX_ATTEMPTS} attempts`, { cause: error });
        await attempt(client, tries + 1);
      }
    };
    await Promise.all(Array.from({ length: this.count }, (_, client) => attempt(client, 0)));
  }

  /** Terminates every client (not told as a close). */
  closeAll(): void {
    this.#sockets?.close();
  }
}
