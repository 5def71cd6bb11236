// Faults from outside: the plugin's backends as pg_stat_activity shows them, terminating them, a
// role of its own that can be locked out, and a writer that keeps writing meanwhile.
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import PG from 'pg';
import type { Test } from 'tap';
import { grant } from '../../lib/privileges.js';
import { serverUrl, type TestDatabase } from './db.js';

/** `url` with `application_name` set, so the plugin's backends can be told from the test's own. */
export function withApplicationName(url: string, applicationName: string): string {
  const parsed = new URL(url);
  parsed.searchParams.set('application_name', applicationName);
  return parsed.toString();
}

/** A backend of the test database, as pg_stat_activity shows it. */
export interface Backend {
  pid: number;
  usename: string;
  applicationName: string;
  query: string;
}

/** Which backends: by application name, or by user (the app's own role). */
export type BackendFilter = { applicationName: string } | { user: string };

/** The client backends of `db` that match `filter` (never the querying connection itself). */
export async function backends(db: TestDatabase, filter: BackendFilter): Promise<Backend[]> {
  const [column, value] = 'user' in filter ? ['usename', filter.user] : ['application_name', filter.applicationName];
  const { rows } = await db.pool.query<{ pid: number; usename: string; application_name: string; query: string }>(
    `SELECT pid, usename, application_name, query FROM pg_stat_activity
     WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid() AND ${column} = $2`,
    [db.name, value],
  );
  return rows.map((row) => ({ pid: row.pid, usename: row.usename, applicationName: row.application_name, query: row.query }));
}

/**
 * The backend of the plugin's LISTEN connection: the one whose last statement was its LISTEN
 * (or pg-listen's periodic connection check, which only that connection runs).
 */
export async function listenBackend(db: TestDatabase, applicationName: string): Promise<Backend | undefined> {
  const all = await backends(db, { applicationName });
  return all.find((backend) => /^\s*LISTEN\b/i.test(backend.query) || backend.query === 'SELECT pg_backend_pid()');
}

/**
 * Terminates the backends matching `filter`, in one statement; returns their pids. The targets are
 * chosen first (a MATERIALIZED CTE): in a plain WHERE the planner may call pg_terminate_backend
 * before the other conditions, on every backend of the server.
 */
export async function terminateBackends(db: TestDatabase, filter: BackendFilter): Promise<number[]> {
  const [column, value] = 'user' in filter ? ['usename', filter.user] : ['application_name', filter.applicationName];
  const { rows } = await db.pool.query<{ pid: number }>(
    `WITH targets AS MATERIALIZED (
       SELECT pid FROM pg_stat_activity
       WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid() AND ${column} = $2)
     SELECT pid FROM targets WHERE pg_terminate_backend(pid)`,
    [db.name, value],
  );
  return rows.map((row) => row.pid);
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

/** Polls `condition` until it holds; rejects after `timeout` ms naming `what`. */
export async function waitUntil(condition: () => Promise<boolean> | boolean, what: string, timeout = 10_000, every = 25): Promise<void> {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, every));
  }
}

/** Waits until the plugin's LISTEN connection is up, and returns its backend. */
export async function waitForListenBackend(db: TestDatabase, applicationName: string, timeout = 10_000): Promise<Backend> {
  let found: Backend | undefined;
  await waitUntil(async () => (found = await listenBackend(db, applicationName)) !== undefined, 'the LISTEN backend', timeout);
  return found as Backend;
}

/** A login role of its own for the plugin, so a test can lock it out (`NOLOGIN`) and kill its backends. */
export interface AppRole {
  name: string;
  /** Grants what the plugin needs on `db`: exactly what `fastify-task-events grant` gives. */
  grant(db: TestDatabase): Promise<void>;
  /** A connection string to `db` as this role. */
  url(db: TestDatabase, applicationName?: string): string;
  /** `ALTER ROLE … LOGIN` / `NOLOGIN`. */
  setLogin(allowed: boolean): Promise<void>;
}

/**
 * Creates the role on the test server and drops it when the test ends. Call it before
 * `createTestDatabase`: teardowns run last-in first-out, and the role can only be dropped once the
 * database holding its grants is gone. It has a password, for servers that ask for one.
 */
export async function createAppRole(t: Test): Promise<AppRole> {
  const name = `te_app_${randomBytes(5).toString('hex')}`;
  const password = randomBytes(8).toString('hex');
  const admin = async (sql: string): Promise<void> => {
    const client = new PG.Client({ connectionString: serverUrl() });
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  };
  await admin(`CREATE ROLE ${name} LOGIN PASSWORD '${password}'`);
  t.teardown(() => admin(`DROP ROLE IF EXISTS ${name}`));
  return {
    name,
    grant: (db) => grant(db.pool, name),
    url: (db, applicationName) => {
      const url = new URL(db.url);
      url.username = name;
      url.password = password;
      if (applicationName) url.searchParams.set('application_name', applicationName);
      return url.toString();
    },
    setLogin: (allowed) => admin(`ALTER ROLE ${name} ${allowed ? 'LOGIN' : 'NOLOGIN'}`),
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
  const waiters = new Set<() => void>();
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
        for (const wake of [...waiters]) wake();
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
      new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (count < target) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out after ${timeout} ms waiting for ${target} writes (have ${count})`));
        }, timeout);
        waiters.add(check);
        check();
      }),
    stop: async () => {
      stopped = true;
      await loop;
    },
  };
}
