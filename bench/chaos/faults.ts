// Faults on a schedule, from outside the app, only ever on the chaos run's own database and the
// app's own role (harness/backends.ts): every backend of the app terminated every 20–40 s,
// and every few minutes the app locked out (its role NOLOGIN, its backends terminated) for
// 10–15 s while the writers, another role, write on.
import { backends, terminateBackends, waitUntil, type AppRole } from '../../harness/backends.js';
import { TestClient } from '../../harness/client.js';
import type { TestDatabase } from '../../harness/db.js';
import type { ServerProcess } from '../../harness/server-process.js';
import { NO_TEARDOWN } from '../../harness/teardown.js';
import { sleep, type Random } from './random.js';

/** One fault, for the log and the result file. */
export interface FaultRecord {
  /** Seconds since the start of the run. */
  at: number;
  kind: 'terminate' | 'lockout';
  detail: string;
}

/** What the faults need from the run. */
export interface FaultContext {
  db: TestDatabase;
  role: AppRole;
  server: ServerProcess;
  signal: AbortSignal;
  /** Seconds since the start. */
  elapsed: () => number;
  /** The run's length in seconds. */
  duration: number;
  log: (text: string) => void;
}

/** A fault's effects on handshakes linger a little while the app reconnects. */
const AFTERMATH = 5;

/** The schedule, and what is happening now. */
export class Faults {
  readonly #context: FaultContext;
  readonly log: FaultRecord[] = [];
  #lockedOut = false;
  #lastTermination = -Infinity;
  /** Handshakes tried during lockouts with tokens minted before: the HTTP status of each. */
  readonly lockoutHandshakes: (number | string)[] = [];

  constructor(context: FaultContext) {
    this.#context = context;
  }

  /** What the faults are doing now (refusals and memory samples are labelled with it). */
  phase(): string {
    if (this.#lockedOut) return 'app locked out';
    if (this.#context.elapsed() - this.#lastTermination < AFTERMATH) return 'just after a termination';
    return 'no fault';
  }

  get lockedOut(): boolean {
    return this.#lockedOut;
  }

  /**
   * Terminates every backend of the app's role every 20–40 s, until the run's time is up. A round
   * that falls in a lockout waits until a few seconds after it: there is nothing to terminate then.
   */
  async runTerminations(random: Random): Promise<void> {
    const { db, role, signal, elapsed } = this.#context;
    for (;;) {
      await sleep(random.between(20_000, 40_000), signal);
      if (this.#lockedOut) {
        while (this.#lockedOut && !signal.aborted) await sleep(200, signal);
        await sleep(random.between(3000, 8000), signal);
      }
      if (signal.aborted) return;
      const pids = await terminateBackends(db, { user: role.name });
      this.#lastTermination = elapsed();
      this.#record('terminate', `${pids.length} backends of the app terminated`);
    }
  }

  /**
   * Locks the app out for 10–15 s: first at 40–70 s (or 40 % into a short run), then every
   * 150–240 s, never within 10 s of the end. Handshakes meanwhile must get HTTP 500.
   */
  async runLockouts(random: Random): Promise<void> {
    const { signal, elapsed, duration } = this.#context;
    let next = Math.min(random.between(40, 70), duration * 0.4);
    for (;;) {
      const length = random.between(10, 15);
      if (next + length > duration - 10) return;
      await sleep((next - elapsed()) * 1000, signal);
      if (signal.aborted) return;
      await this.#lockout(length);
      next = elapsed() + random.between(150, 240);
    }
  }

  async #lockout(seconds: number): Promise<void> {
    const { db, role, server, elapsed, log } = this.#context;
    // Tokens minted while the app can still reach its database, spent while it cannot.
    const tokens = await Promise.all([1, 2].map(() => server.token(1).catch(() => null)));
    const started = elapsed();
    await role.setLogin(false);
    this.#lockedOut = true;
    let reconnectedAfter = 'did not reconnect within 30 s';
    let loggedIn: number;
    const statuses: (number | string)[] = [];
    try {
      await terminateBackends(db, { user: role.name });
      await waitUntil(async () => (await backends(db, { user: role.name })).length === 0, 'the app to be cut off', 10_000).catch(() => {
        log('! the app still had backends 10 s into a lockout');
      });
      log(`lockout: the app's role is NOLOGIN for ${seconds.toFixed(1)} s`);
      for (const [index, token] of tokens.entries()) {
        await sleep(((index + 1) * seconds * 1000) / (tokens.length + 1) - (elapsed() - started) * 1000);
        statuses.push(token ? await this.#handshake(token) : 'no token minted');
      }
      await sleep((started + seconds - elapsed()) * 1000);
    } finally {
      const reconnected = new Promise<number>((resolve) => {
        const timer = setTimeout(() => resolve(-1), 30_000);
        server.once('connected', () => {
          clearTimeout(timer);
          resolve(elapsed());
        });
      });
      await role.setLogin(true);
      this.#lockedOut = false;
      loggedIn = elapsed();
      const at = await reconnected;
      if (at >= 0) reconnectedAfter = `LISTEN reconnected ${(at - loggedIn).toFixed(1)} s after`;
    }
    this.lockoutHandshakes.push(...statuses);
    this.#record('lockout', `app locked out for ${(loggedIn - started).toFixed(1)} s; handshakes meanwhile: ${statuses.join(', ') || 'none'}; ${reconnectedAfter}`, started);
  }

  /** A handshake with a token minted earlier: its HTTP status (101 when it opened). */
  async #handshake(token: string): Promise<number | string> {
    return TestClient.connect(NO_TEARDOWN, this.#context.server.url(token)).then(
      (client) => {
        client.socket.terminate();
        return 101;
      },
      (error: Error & { statusCode?: number }) => error.statusCode ?? error.message,
    );
  }

  #record(kind: FaultRecord['kind'], detail: string, at = this.#context.elapsed()): void {
    this.log.push({ at: Math.round(at * 10) / 10, kind, detail });
    this.#context.log(`${kind}: ${detail}`);
  }
}
