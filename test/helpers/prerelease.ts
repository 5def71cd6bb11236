// The 0.1 pre-release migrations (squashed into 001–004 since), applied as a database of that
// time had them: the fixture files are kept as .sql.txt so they are not read as our SQL.
import { copyFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Postgrator from 'postgrator';
import type { TestDatabase } from '../../harness/db.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/prerelease-migrations/', import.meta.url));

/** Applies the pre-release migrations 001–005 to `db` with postgrator, as 0.1 did. */
export async function applyPrereleaseMigrations(db: TestDatabase): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'task-events-prerelease-'));
  const client = await db.pool.connect();
  try {
    for (const file of await readdir(FIXTURES)) await copyFile(join(FIXTURES, file), join(dir, file.replace(/\.txt$/, '')));
    await new Postgrator({
      migrationPattern: `${dir}/*.sql`,
      driver: 'pg',
      database: db.name,
      schemaTable: 'task_events.schemaversion',
      execQuery: (query) => client.query(query),
    }).migrate();
  } finally {
    client.release();
    await rm(dir, { recursive: true, force: true });
  }
}
