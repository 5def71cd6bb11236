import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import Postgrator from 'postgrator';
import { checkout } from './pool.js';

// lib/ when run from source, dist/lib/ when built: the migrations sit at the package root.
const MIGRATIONS_DIR = [new URL('../migrations/', import.meta.url), new URL('../../migrations/', import.meta.url)]
  .map((url) => fileURLToPath(url))
  .find((dir) => existsSync(dir)) as string;

/** Where the migration files are, for hosts that apply them with their own tool. */
export const migrationsDirectory = MIGRATIONS_DIR;

/**
 * Applies our migrations (schema `task_events`) with postgrator. Safe to run twice, or from
 * several processes at once: a session advisory lock lets one apply while the others wait and
 * then find nothing left to do.
 */
export async function migrate(pool: pg.Pool): Promise<void> {
  const client = await checkout(pool);
  try {
    await client.query(`SELECT pg_advisory_lock(hashtext('task_events.migrate'))`);
    try {
      const postgrator = new Postgrator({
        migrationPattern: `${MIGRATIONS_DIR}/*.sql`,
        driver: 'pg',
        database: client.database ?? '',
        schemaTable: 'task_events.schemaversion',
        execQuery: (query) => client.query(query),
      });
      await postgrator.migrate();
    } finally {
      await client.query(`SELECT pg_advisory_unlock(hashtext('task_events.migrate'))`);
    }
  } finally {
    client.giveBack();
  }
}
