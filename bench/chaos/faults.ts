// Faults on a schedule, from outside the app, only ever on the chaos run's own database, the
// app's own role (harness/backends.ts) and its own processes: every backend of the app terminated
// every 20–40 s; every few minutes the app locked out (its role NOLOGIN, its backends terminated)
// for 10–15 s while the writers, another role, write on; and every few minutes an instance
// restarted, by SIGTERM (a deploy) and by SIGKILL (a crash) in turn. One fault at a time: a
// restart waits for a lockout to end and the other way round (an instance cannot start while its
// role may not log in), and terminations wait for both.
import { backends, terminateBackends, waitUntil, type AppRole } from '../../harness/backends.js';
import { TestClient } from '../../harness/client.js';
import type { TestDatabase } from '../../harness/db.js';
import { NO_TEARDOWN } from '../../harness/teardown.js';
import type { Instances, RestartRecord, Stop } from './instances.js';
import { sleep, type Random } from './random.js';

/** One fault, for the log and the result file. */
export interface FaultRecord {
  /** Seconds since the start of the run. */
  at: number;
  kind: 'terminate' | 'lockout' | 'restart';
  detail: string;
}

/** What the faults need from the run. */
export interface FaultContext {
  db: TestDatabase;
  role: AppRole;
  instances: Instances;
  signal: AbortSignal;
  /** Seconds since the start. */
  elapsed: () => number;
  /** The run's length in seconds. */
  duration: number;
  log: (text: string) => void;
}

/** A fault's effects on handshakes linger a little while the app reconnects. */
const AFTERMATH = 5;

/** Which slot each restart stops, and how, in turn: each slot gets both a deploy and a crash. */
const RESTARTS: readonly (readonly [slot: string, how: Stop])[] = [['a', 'deploy'], ['b', 'crash'], ['b', 'deploy'], ['a', 'crash']];

/** The schedule, and what is happening now. */
export class Faults {
  readonly #context: FaultContext;
  readonly log: FaultRecord[] = [];
  #lockedOut = false;
  /** From when a lockout is due (it mints its tokens first) until it ends. */
  #lockingOut = false;
  #restarting: string | null = null;
  #lastTermination = -Infinity;
  #lastRestart = -Infinity;
  /** Handshakes tried during lockouts with tokens minted before: the HTTP status of each. */
  readonly lockoutHandshakes: (number | string)[] = [];

  constructor(context: FaultContext) {
    this.#context = context;
  }

  /** What the faults are doing now (refusals and memory samples are labelled with it). */
  phase(): string {
    if (this.#lockedOut) return 'app locked out';
    if (this.#restarting) return this.#restarting;
    if (this.#context.elapsed() - this.#lastRestart < AFTERMATH) return 'just after a restart';
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
      if (this.#lockingOut || this.#restarting) {
        while ((this.#lockingOut || this.#restarting) && !signal.aborted) await sleep(200, signal);
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
      while (this.#restarting && !signal.aborted) await sleep(200, signal);
      if (signal.aborted) return;
      this.#lockingOut = true;
      await this.#lockout(length).finally(() => (this.#lockingOut = false));
      next = elapsed() + random.between(150, 240);
    }
  }

  /**
   * Restarts an instance every `every` seconds (0.75–1.25 times that; the first after 0.5–1 times
   * it, or a quarter into a short run), never within 15 s of the end: the slots and the ways in
   * turn (RESTARTS). A restart due during a lockout waits until a few seconds after it.
   */
  async runRestarts(random: Random, every: number): Promise<void> {
    const { instances, signal, elapsed, duration } = this.#context;
    let next = Math.min(random.between(every * 0.5, every), duration * 0.25);
    for (let index = 0; ; index++) {
      await sleep((next - elapsed()) * 1000, signal);
      if (this.#lockingOut) {
        while (this.#lockingOut && !signal.aborted) await sleep(200, signal);
        await sleep(random.between(3000, 8000), signal);
      }
      if (signal.aborted || elapsed() > duration - 15) return;
      const [slot, how] = RESTARTS[index % RESTARTS.length] as (typeof RESTARTS)[number];
      this.#restarting = `instance ${slot} restarting (${how})`;
      let record: RestartRecord;
      try {
        record = await instances.restart(slot, how);
      } finally {
        this.#restarting = null;
        this.#lastRestart = elapsed();
      }
      this.log.push({ at: record.at, kind: 'restart', detail: `${how === 'deploy' ? 'SIGTERM' : 'SIGKILL'} to ${record.stopped} (${record.clients} sockets): ${record.detail}` });
      next = elapsed() + random.between(every * 0.75, every * 1.25);
    }
  }

  async #lockout(seconds: number): Promise<void> {
    const { db, role, instances, elapsed, log } = this.#context;
    // Tokens minted while the app can still reach its database, spent while it cannot.
    const tokens = await Promise.all([1, 2].map(() => instances.pick().server.token(1).catch(() => null)));
    const started = elapsed();
    await role.setLogin(false);
    this.#lockedOut = true;
    let reconnectedAfter: string;
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
      const reconnected = instances.reconnected(30_000);
      await role.setLogin(true);
      this.#lockedOut = false;
      loggedIn = elapsed();
      const took = [...(await reconnected)].map(([name, ms]) => `${name} ${ms === null ? 'not within 30 s' : `${(ms / 1000).toFixed(1)} s`}`);
      reconnectedAfter = `LISTEN reconnected: ${took.join(', ')} after`;
    }
    this.lockoutHandshakes.push(...statuses);
    this.#record('lockout', `app locked out for ${(loggedIn - started).toFixed(1)} s; handshakes meanwhile: ${statuses.join(', ') || 'none'}; ${reconnectedAfter}`, started);
  }

  /** A handshake with a token minted earlier: its HTTP status (101 when it opened). */
  async #handshake(token: string): Promise<number | string> {
    return TestClient.connect(NO_TEARDOWN, this.#context.instances.pick().server.url(token)).then(
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
