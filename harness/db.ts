// A fresh database per test file (or chaos run), on the server named by TEST_DATABASE_URL (set by
// test/run.ts, or by the chaos run), and what tests and benches write straight into it.
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import pg from 'pg';
import { migrate } from '../lib/migrate.js';
import { grant } from '../lib/privileges.js';
import type { Teardowns } from './teardown.js';

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

/** Runs one statement as the server's superuser, on its own connection. */
export async function asAdmin(sql: string): Promise<void> {
  const admin = new pg.Client({ connectionString: serverUrl() });
  await admin.connect();
  try {
    await admin.query(sql);
  } finally {
    await admin.end();
  }
}

/** A database of its own for one test file */
export interface TestDatabase {
  name: string;
  /** As the server's superuser: migrations, schema, the test's own writes. */
  url: string;
  /**
   * As a role of its own holding only what `grant` gives (the plugin's least privileges), with a
   * password; set once the migrations are applied. `startServer` connects the plugin with it.
   */
  appUrl?: string;
  /** A pool for the test's own writes and checks (not the plugin's). */
  pool: pg.Pool;
}

/**
 * Creates an empty database, applies our migrations and, unless `schema: false`, the reference
 * schema with `task_events.attach()`. Dropped when the test ends.
 */
export async function createTestDatabase(t: Teardowns, options: { schema?: boolean; migrate?: boolean } = {}): Promise<TestDatabase> {
  const name = `task_events_test_${randomBytes(5).toString('hex')}`;
  await asAdmin(`CREATE DATABASE ${name}`);

  const url = databaseUrl(name);
  const pool = new pg.Pool({ connectionString: url, max: 8 });
  pool.on('error', () => {}); // a test that kills backends must not crash on an idle client's error
  const role = `${name}_app`;
  t.teardown(async () => {
    await pool.end();
    await asAdmin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    // only once the database holding its grants is gone
    await asAdmin(`DROP ROLE IF EXISTS ${role}`);
  });
  if (options.migrate === false) return { name, url, pool };
  await migrate(pool);
  if (options.schema !== false) await applyReferenceSchema(pool);
  return { name, url, pool, appUrl: await createRuntimeRole(name, role, pool) };
}

/** A login role for the plugin with exactly what `grant` gives it (dropped with the database). */
async function createRuntimeRole(database: string, role: string, pool: pg.Pool): Promise<string> {
  const password = randomBytes(8).toString('hex');
  await asAdmin(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
  await grant(pool, role);
  const url = new URL(databaseUrl(database));
  url.username = role;
  url.password = password;
  return url.toString();
}

/** The example's reference schema and seed, with our triggers attached. */
export async function applyReferenceSchema(pool: pg.Pool): Promise<void> {
  const sql = await readFile(new URL('../example/schema.sql', import.meta.url), 'utf8');
  await pool.query(sql);
  await pool.query('SELECT task_events.attach()');
}

/** Mints `count` tokens of alice (environment 1) in one statement; only their hashes are stored. */
export async function issueTokens(pool: pg.Pool, count: number): Promise<string[]> {
  const { rows } = await pool.query<{ token: string }>(
    `WITH minted AS MATERIALIZED (SELECT gen_random_uuid()::text AS token FROM generate_series(1, $1::int)),
     stored AS (INSERT INTO task_events.tokens (token_hash, environment_id, user_id, expires_at)
                SELECT sha256(convert_to(token, 'UTF8')), 1, 1, now() + interval '30 minutes' FROM minted)
     SELECT token FROM minted`,
    [count],
  );
  return rows.map((row) => row.token);
}
