// A fresh database per test file, on the server named by TEST_DATABASE_URL (set by test/run.ts).
import pg from 'pg';
import { randomBytes } from 'node:crypto';
import type { Test } from 'tap';
import { migrate } from '../../lib/migrate.js';

/** The server every test file works on. */
export function serverUrl(): string {
  const url = process.env.TEST_DATABASE_URL;
  if (!url) throw new Error('TEST_DATABASE_URL is not set: run the suite with `npm test`');
  return url;
}

/** A connection string naming `database` on the test server. */
export function databaseUrl(database: string): string {
  const url = new URL(serverUrl());
  url.pathname = `/${database}`;
  return url.toString();
}

/** A database of its own for one test file */
export interface TestDatabase {
  name: string;
  url: string;
  /** A pool for the test's own writes and checks (not the plugin's). */
  pool: pg.Pool;
}

/**
 * Creates an empty database, applies our migrations and, unless `schema: false`, the reference
 * schema with `task_events.attach()`. Dropped when the test ends.
 */
export async function createTestDatabase(t: Test, options: { schema?: boolean; migrate?: boolean } = {}): Promise<TestDatabase> {
  const name = `task_events_test_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl() });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();

  const url = databaseUrl(name);
  const pool = new pg.Pool({ connectionString: url, max: 8 });
  pool.on('error', () => {}); // a test that kills backends must not crash on an idle client's error
  t.teardown(async () => {
    await pool.end();
    const dropper = new pg.Client({ connectionString: serverUrl() });
    await dropper.connect();
    await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await dropper.end();
  });
  if (options.migrate !== false) await migrate(pool);
  if (options.schema !== false && options.migrate !== false) await applyReferenceSchema(pool);
  return { name, url, pool };
}

/** The example's reference schema and seed, with our triggers attached. */
export async function applyReferenceSchema(pool: pg.Pool): Promise<void> {
  const { readFile } = await import('node:fs/promises');
  const sql = await readFile(new URL('../../example/schema.sql', import.meta.url), 'utf8');
  await pool.query(sql);
  await pool.query('SELECT task_events.attach()');
}
