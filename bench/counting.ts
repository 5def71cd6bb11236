// What bench/fanout.ts and bench/memory.ts share: the bare-ws reference server's start, and an
// EventCounter, the frame hook that makes a ClientPool's clients only count the events they
// receive — the `{` bytes of a message, one per event object: exact for messages of flat event
// objects, and ~15 µs per 100 KB where a JSON.parse takes ~300 µs — so the clients' work is small
// and the same whichever server they read. A few sampled clients keep their messages, to be
// parsed in full after a round.
import { fileURLToPath } from 'node:url';
import { Conditions } from '../harness/conditions.js';
import { ServerProcess } from '../harness/server-process.js';

/** Starts bench/reference-server.ts, the bare ws broadcaster, with `nodeFlags`. */
export function startReferenceServer(timeout: number, nodeFlags: readonly string[] = []): Promise<ServerProcess> {
  return ServerProcess.start({ script: fileURLToPath(new URL('./reference-server.ts', import.meta.url)), nodeFlags, timeout });
}

const OPEN_BRACE = 0x7b;

/** Events in one message (`{` bytes), or -1 when it is not a JSON array. */
function countEvents(message: Buffer): number {
  if (message[0] !== 0x5b || message[message.length - 1] !== 0x5d) return -1;
  let count = 0;
  for (let at = message.indexOf(OPEN_BRACE); at !== -1; at = message.indexOf(OPEN_BRACE, at + 1)) count++;
  return count;
}

/** How many clients keep their messages for {@link EventCounter.samples}. */
const SAMPLED = 5;

/**
 * The events each of `clients` clients received, round by round; hand `frame` and `closed` to
 * ClientPool.connect (with skipUTF8Validation: the frames are never decoded but for the samples).
 * {@link EventCounter.round} times one message to all of them.
 */
export class EventCounter {
  /** Events each client received in the current round. */
  readonly #counts: Int32Array;
  readonly #sampled = new Map<number, Buffer[]>();
  readonly #conditions = new Conditions();
  #expected = 0;
  #complete = 0;
  #lastCompleteAt = 0;
  #problem: string | null = null;

  constructor(readonly clients: number) {
    this.#counts = new Int32Array(clients);
    for (let i = 0; i < SAMPLED; i++) this.#sampled.set(Math.floor((i * clients) / SAMPLED), []);
  }

  /**
   * One round: every client must receive exactly `events` events from now on. Calls `trigger`
   * (which makes the server send them; it returns the start of the timing, wallClock()), then
   * resolves with the time from that start to the last client having all its events.
   */
  async round(events: number, timeout: number, trigger: () => Promise<number>): Promise<number> {
    this.#counts.fill(0);
    for (const messages of this.#sampled.values()) messages.length = 0;
    this.#expected = events;
    this.#complete = 0;
    const startedAt = await trigger();
    const done = (): boolean => this.#complete === this.clients || this.#problem !== null;
    await this.#conditions.waitFor(done, `${this.clients} clients to have ${events} events`, timeout).catch((error: Error) => {
      throw new Error(`${error.message}: ${this.#complete} complete`);
    });
    if (this.#problem) throw new Error(this.#problem);
    return this.#lastCompleteAt - startedAt;
  }

  /** The events the sampled clients received in the last round, parsed in full. */
  samples(): unknown[][] {
    return [...this.#sampled.values()].map((messages) => messages.flatMap((message) => JSON.parse(message.toString()) as unknown[]));
  }

  frame = (client: number, message: Buffer, receivedAt: number): void => {
    const events = countEvents(message);
    if (events === -1) return this.#fail(`client ${client} received a message that is not a JSON array`);
    this.#sampled.get(client)?.push(message);
    const count = (this.#counts[client] as number) + events;
    this.#counts[client] = count;
    if (count > this.#expected) return this.#fail(`client ${client} received ${count} events, ${this.#expected} expected`);
    if (count === this.#expected && count - events < this.#expected) {
      this.#complete++;
      if (this.#complete === this.clients) {
        this.#lastCompleteAt = receivedAt;
        this.#conditions.check();
      }
    }
  };

  closed = (client: number): void => this.#fail(`client ${client} was closed`);

  #fail(problem: string): void {
    this.#problem ??= problem;
    this.#conditions.check();
  }
}
