// What ready() checks before the listener starts: a database the plugin can actually serve from.
// A missing migration or privilege fails startup with the fix, instead of `permission denied`
// logged twice a second forever.
import type { FastifyBaseLogger } from 'fastify';
import type pg from 'pg';
import { HostErrors } from './errors.js';
import { foreignSchemaError, migrationState } from './migrate.js';
import { missingPrivileges, type PrivilegeCheck } from './privileges.js';

/**
 * Fails with a coded error naming the fix when the migrations are not applied (or are the 0.x
 * pre-release set) or the pool's role lacks a runtime privilege; logs one warning when no table
 * is attached (the plugin then serves, but nothing writes events).
 */
export async function checkDatabase(pool: pg.Pool, log: FastifyBaseLogger): Promise<void> {
  let privileges: PrivilegeCheck;
  try {
    privileges = await missingPrivileges(pool);
  } catch (error) {
    throw new HostErrors.DATABASE(`the database could not be checked: ${(error as Error).message}`, { cause: error });
  }
  if (privileges.absent.length > 0) throw new HostErrors.NOT_MIGRATED(`${privileges.absent.join(', ')} missing`);
  if (privileges.missing.length > 0) {
    throw new HostErrors.PRIVILEGES(privileges.role, privileges.missing.join(', '), privileges.role);
  }
  const state = await migrationState(pool);
  if (state.foreign.length > 0) throw foreignSchemaError(state);
  if (state.pending.length > 0) throw new HostErrors.NOT_MIGRATED(`migrations ${state.pending.join(', ')} are not applied`);
  const { rows } = await pool.query<{ attached: number }>('SELECT count(*)::int AS attached FROM task_events.attachments');
  if (!rows[0]?.attached) {
    log.warn('task events: no table is attached, so no events will be written; run `npx fastify-task-events attach` (see README)');
  }
}
