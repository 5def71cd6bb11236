// The test-only side of faults from outside: the plugin's LISTEN backend, crashes caught before
// they take the runner along, and a writer that keeps writing meanwhile. Backends, their
// termination and the app's own role are in harness/backends.ts (the chaos run uses them too).
import type pg from 'pg';
import type { Test } from 'tap';
import { backends, waitUntil, type Backend } from '../../harness/backends.js';
import { Conditions } from '../../harness/conditions.js';
import type { TestDatabase } from '../../harness/db.js';

/** `url` with `application_name` set, so the plugin's backends can be told from the test's own. */
export function withApplicationName(url: string, applicationName: string): string {
  const parsed = new URL(url);
  parsed.searchParams.set('application_name', applicationName);
  return parsed.toString();
}

/**
 * The backend of the plugin's LISTEN connection: the one whose last statement was its LISTEN
 * (or pg-listen's periodic connection check, which only that connection runs).
 */
export async function listenBackend(db: TestDatabase, applicationName: string): Promise<Backend | undefined> {
  const all = await backends(db, { applicationName });
  return all.find((backend) => /^\s*LISTEN\b/i.test(backend.query) || backend.query === 'SELECT pg_backend_pid()');
}

/** Waits until the plugin's LISTEN connection is up, and returns its backend. */
export async function waitForListenBackend(db: TestDatabase, applicationName: string, timeout = 10_000): Promise<Backend> {
  let found: Backend | undefined;
  await waitUntil(async () => (found = await listenBackend(db, applicationName)) !== undefined, 'the LISTEN backend', timeout);
  return found as Backend;
}

/** Errors that escaped to the process (an `'error'` event nobody listened to, a throw in a callback). */
export interface CrashWatch {
  readonly errors: Error[];
  /** Resolves at the first one. */
  readonly crashed: Promise<void>;
  /**
   * Runs `body` until it ends or the process crashes. A crash has failed the test already (tap
   * catches it); the body, left to run on, must not fail the tests after it.
   */
  run(body: () => Promise<void>): Promise<void>;
}

/**
 * Watches for errors that would crash a real process. tap catches them and fails the test, but a
 * production server would exit: with this, a fault test stops at the crash instead of running on
 * against a torn-down database.
 */
export function watchForCrash(t: Test): CrashWatch {
  const errors: Error[] = [];
  let onCrash = (): void => {};
  const crashed = new Promise<void>((resolve) => (onCrash = resolve));
  const monitor = (error: Error): void => {
    errors.push(error);
    onCrash();
  };
  process.on('uncaughtExceptionMonitor', monitor);
  t.teardown(() => void process.off('uncaughtExceptionMonitor', monitor));
  return {
    errors,
    crashed,
    run: (body) => Promise.race([body(), crashed]),
  };
}

/** Writes task events from the test's own connection, one statement at a time, until stopped. */
export interface Writer {
  /** Statements committed so far. */
  readonly count: number;
  /** Resolves once `count` statements have committed. */
  waitForWrites(count: number, timeout?: number): Promise<void>;
  /** Stops after the statement under way; rejects with the writer's error, if it failed. */
  stop(): Promise<void>;
}

/**
 * Inserts tasks of `environmentId` and changes the status of every other one: a stream of
 * `task_created` and `task_status_changed` events, each statement its own transaction. Stopped at
 * the latest when the test ends.
 */
export function startWriter(t: Test, pool: pg.Pool, environmentId = 1, objectClassId = environmentId === 1 ? 1 : 4): Writer {
  let count = 0;
  let stopped = false;
  const conditions = new Conditions();
  const loop = (async () => {
    const client = await pool.connect();
    try {
      while (!stopped) {
        const { rows } = await client.query<{ id: string }>(
          'INSERT INTO tasks (environment_id, object_class_id, name) VALUES ($1, $2, $3) RETURNING id',
          [environmentId, objectClassId, `written ${count}`],
        );
        count++;
        if (count % 2 === 0) {
          await client.query(`UPDATE tasks SET status = 'done' WHERE id = $1`, [rows[0]?.id]);
          count++;
        }
        conditions.check();
      }
    } finally {
      client.release();
    }
  })();
  loop.catch(() => {}); // reported by stop()
  // A test that fails half-way must not leave it writing: the pool could never end.
  t.teardown(() => {
    stopped = true;
    return loop.catch(() => {});
  });
  return {
    get count() {
      return count;
    },
    waitForWrites: (target, timeout = 10_000) =>
      conditions.waitFor(() => count >= target, `${target} writes`, timeout, () => `have ${count}`),
    stop: async () => {
      stopped = true;
      await loop;
    },
  };
}
