// Faults from outside: the app's backends as pg_stat_activity shows them, terminating them, and a
// login role of its own that can be locked out. Used by the fault tests and the chaos run.
import { randomBytes } from 'node:crypto';
import { grant } from '../lib/privileges.js';
import { asAdmin, type TestDatabase } from './db.js';
import type { Teardowns } from './teardown.js';

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

/** Polls `condition` until it holds; rejects after `timeout` ms naming `what`. */
export async function waitUntil(condition: () => Promise<boolean> | boolean, what: string, timeout = 10_000, every = 25): Promise<void> {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, every));
  }
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
export async function createAppRole(t: Teardowns): Promise<AppRole> {
  const name = `te_app_${randomBytes(5).toString('hex')}`;
  const password = randomBytes(8).toString('hex');
  await asAdmin(`CREATE ROLE ${name} LOGIN PASSWORD '${password}'`);
  t.teardown(() => asAdmin(`DROP ROLE IF EXISTS ${name}`));
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
    setLogin: (allowed) => asAdmin(`ALTER ROLE ${name} ${allowed ? 'LOGIN' : 'NOLOGIN'}`),
  };
}
