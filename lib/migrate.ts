import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import Postgrator from 'postgrator';
import { HostErrors } from './errors.js';
import { checkout } from './pool.js';

// lib/ when run from source, dist/lib/ when built: the migrations sit at the package root.
const MIGRATIONS_DIR = [new URL('../migrations/', import.meta.url), new URL('../../migrations/', import.meta.url)]
  .map((url) => fileURLToPath(url))
  .find((dir) => existsSync(dir)) as string;

/** Where the migration files are, for hosts that apply them with their own tool. */
export const migrationsDirectory = MIGRATIONS_DIR;

const SCHEMA_TABLE = 'task_events.schemaversion';

/** Where a database stands against our migrations. */
export interface MigrationState {
  /** Versions applied, ascending. */
  applied: number[];
  /** Versions of our files not applied yet. */
  pending: number[];
  /** Applied versions that are not our files (other name or checksum): the 0.x pre-release set. */
  foreign: number[];
}

function postgrator(client: pg.ClientBase): Postgrator {
  return new Postgrator({
    migrationPattern: `${MIGRATIONS_DIR}/*.sql`,
    driver: 'pg',
    database: (client as pg.Client).database ?? '',
    schemaTable: SCHEMA_TABLE,
    execQuery: (query) => client.query(query),
  });
}

async function readState(client: pg.ClientBase): Promise<MigrationState> {
  const files = (await postgrator(client).getMigrations()).filter((migration) => migration.action === 'do');
  const { rows: [table] } = await client.query<{ exists: boolean }>(`SELECT to_regclass('${SCHEMA_TABLE}') IS NOT NULL AS exists`);
  const rows = table?.exists
    ? (await client.query<{ version: string; name: string | null; md5: string | null }>(
        `SELECT version, name, md5 FROM ${SCHEMA_TABLE} WHERE version > 0 ORDER BY version`)).rows
    : [];
  const applied = rows.map((row) => Number(row.version));
  const foreign = rows
    .filter((row) => !files.some((file) => file.version === Number(row.version) && file.name === row.name && file.md5 === row.md5))
    .map((row) => Number(row.version));
  const pending = files.map((file) => file.version).filter((version) => !applied.includes(version));
  return { applied, pending, foreign };
}

/** Where the plugin's database stands against our migrations (needs SELECT on task_events.schemaversion). */
export async function migrationState(pool: pg.Pool): Promise<MigrationState> {
  const client = await checkout(pool);
  try {
    return await readState(client);
  } finally {
    client.giveBack();
  }
}

/** The error for a database whose task_events schema is not ours (see README: 0.x databases). */
export function foreignSchemaError(state: MigrationState): Error {
  return new HostErrors.FOREIGN_SCHEMA(
    `schema task_events holds migrations ${state.foreign.join(', ')} that are not this version's (the 0.x pre-release schema); ` +
      'drop it and migrate again: `DROP SCHEMA task_events CASCADE` (this also removes the triggers on your tables), ' +
      'then `npx fastify-task-events migrate` and `attach` again');
}

/**
 * Applies our migrations (schema `task_events`) with postgrator. Safe to run twice, or from
 * several processes at once: a session advisory lock lets one apply while the others wait and
 * then find nothing left to do. A database with the 0.x pre-release schema is refused (the error
 * says how to re-create it), never half-upgraded.
 */
export async function migrate(pool: pg.Pool): Promise<void> {
  const client = await checkout(pool);
  try {
    await client.query(`SELECT pg_advisory_lock(hashtext('task_events.migrate'))`);
    try {
      const state = await readState(client);
      if (state.foreign.length > 0) throw foreignSchemaError(state);
      await postgrator(client).migrate();
    } finally {
      await client.query(`SELECT pg_advisory_unlock(hashtext('task_events.migrate'))`);
    }
  } finally {
    client.giveBack();
  }
}
