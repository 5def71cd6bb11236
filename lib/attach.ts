// attach() and detach() from JavaScript: thin calls of the SQL functions of migration 004, which
// hold all the logic, so that psql, a host's own migration tool and the CLI do exactly the same.
import type pg from 'pg';
import { HostErrors } from './errors.js';

/**
 * The arguments of `task_events.attach()`, named the JavaScript way. Each is optional: left out
 * (`undefined`), the SQL default applies (the reference schema's names); `null` passes NULL, which
 * means "the app has none" for `taskOwners`, `taskAssignees` and `statusColumn`, and "`updated_at`
 * when the table has it" for `ignoredColumns`.
 */
export interface AttachOptions {
  /** The tasks table (default `public.tasks`). */
  tasks?: string;
  /** The task owners table (default `public.task_owners`); `null` when the app has none. */
  taskOwners?: string | null;
  /** The task assignees table (default `public.task_assignees`); `null` when the app has none. */
  taskAssignees?: string | null;
  /** The tasks table's primary key column (default `id`). */
  idColumn?: string;
  /** The tasks table's tenant column (default `environment_id`). */
  environmentColumn?: string;
  /** The tasks table's class column (default `object_class_id`). */
  objectClassColumn?: string;
  /** The tasks table's status column (default `status`); `null` when tasks have no status. */
  statusColumn?: string | null;
  /** Columns whose change is no event; `[]` for none; `null` (default): `updated_at` if present. */
  ignoredColumns?: readonly string[] | null;
  /** The owners' and assignees' column naming the task (default `task_id`). */
  taskIdColumn?: string;
}

/** Each option and the SQL argument it is passed as (with its type when `unknown` will not do). */
const ARGUMENTS: ReadonlyArray<readonly [keyof AttachOptions, string, string]> = [
  ['tasks', 'tasks', 'text'],
  ['taskOwners', 'task_owners', 'text'],
  ['taskAssignees', 'task_assignees', 'text'],
  ['idColumn', 'id_column', 'text'],
  ['environmentColumn', 'environment_column', 'text'],
  ['objectClassColumn', 'object_class_column', 'text'],
  ['statusColumn', 'status_column', 'text'],
  ['ignoredColumns', 'ignored_columns', 'text[]'],
  ['taskIdColumn', 'task_id_column', 'text'],
];

/** A PostgreSQL error wrapped with a code, its own message kept as the readable part. */
function wrap(error: unknown): Error {
  const message = error instanceof Error ? error.message : String(error);
  return new HostErrors.ATTACH(message, { cause: error });
}

/**
 * Attaches the capture triggers to the host's tables (again, if attached already: do so after
 * renaming or dropping a column it names). Values go as bind parameters, never into the SQL text,
 * so a table name cannot inject anything. A missing table or column fails with PostgreSQL's
 * message, which names the argument (`task_owners => NULL` …), as the error's message; the
 * PostgreSQL error is its `cause`.
 */
export async function attach(pool: pg.Pool, options: AttachOptions = {}): Promise<void> {
  const named: string[] = [];
  const values: unknown[] = [];
  for (const [option, argument, type] of ARGUMENTS) {
    const value = options[option];
    if (value === undefined) continue;
    values.push(value);
    named.push(`${argument} => $${values.length}::${type}`);
  }
  try {
    await pool.query(`SELECT task_events.attach(${named.join(', ')})`, values);
  } catch (error) {
    throw wrap(error);
  }
}

/**
 * Detaches the tasks table `tasks` (with the owners and assignees tables it was attached with),
 * or, without it, every attached table; their data is untouched. Returns how many tasks tables
 * were detached: 0 when nothing was attached.
 */
export async function detach(pool: pg.Pool, tasks?: string): Promise<number> {
  try {
    const { rows } = await pool.query<{ detached: number }>(
      'SELECT task_events.detach(tasks => $1::text) AS detached', [tasks ?? null]);
    return rows[0]?.detached ?? 0;
  } catch (error) {
    throw wrap(error);
  }
}
