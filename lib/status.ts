// Where a database stands, for an operator: the migrations, what is attached, the outbox. The
// CLI's `status` prints it; anything in `problems` is something to fix before events can flow.
import type pg from 'pg';
import { foreignSchemaError, migrationState, type MigrationState } from './migrate.js';

/** One row of task_events.attachments: a tasks table and what it was attached with. */
export interface AttachedTable {
  /** Schema-qualified (`crm.work_items`); `oid 16384` when the table was dropped since. */
  tasks: string;
  taskOwners: string | null;
  taskAssignees: string | null;
  idColumn: string;
  environmentColumn: string;
  objectClassColumn: string;
  statusColumn: string | null;
  ignoredColumns: string[];
  taskIdColumn: string;
  /** ISO 8601. */
  attachedAt: string;
  /** Whether the tasks table still exists (a dropped table leaves its row behind). */
  exists: boolean;
  /** The owners or assignees tables attached with it that were dropped since. */
  missingLinks: string[];
}

/** What `status()` found; `problems` is empty when the database is ready to produce events. */
export interface TaskEventsStatus {
  migrations: MigrationState;
  attached: AttachedTable[];
  outbox: {
    rows: number;
    /** `created_at` of the oldest row, ISO 8601; null when the outbox is empty. */
    oldest: string | null;
  };
  /** Each thing that is missing or wrong, with its fix. */
  problems: string[];
}

interface AttachmentRow {
  tasks: string;
  task_owners: string | null;
  task_assignees: string | null;
  id_column: string;
  environment_column: string;
  object_class_column: string;
  status_column: string | null;
  ignored_columns: string[];
  task_id_column: string;
  attached_at: Date;
  exists: boolean;
  missing_links: string[];
}

// A regclass as `schema.table`, or `oid N` once its table is gone (regclass::text would print a
// bare number then, and leave the schema out whenever the search_path finds the table).
const qualified = (regclass: string): string => `
  CASE WHEN ${regclass} IS NOT NULL THEN coalesce(
    (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = ${regclass}), 'oid ' || ${regclass}::oid) END`;

const exists = (regclass: string): string => `EXISTS (SELECT FROM pg_class c WHERE c.oid = ${regclass})`;

const ATTACHMENTS_SQL = `
  SELECT ${qualified('a.tasks')} AS tasks, ${qualified('a.task_owners')} AS task_owners,
         ${qualified('a.task_assignees')} AS task_assignees, a.id_column, a.environment_column,
         a.object_class_column, a.status_column, a.ignored_columns, a.task_id_column, a.attached_at,
         ${exists('a.tasks')} AS exists,
         ARRAY(SELECT ${qualified('link')} FROM unnest(ARRAY[a.task_owners, a.task_assignees]) AS link
               WHERE link IS NOT NULL AND NOT ${exists('link')}) AS missing_links
  FROM task_events.attachments a ORDER BY a.attached_at, 1`;

function toAttached(row: AttachmentRow): AttachedTable {
  return {
    tasks: row.tasks,
    taskOwners: row.task_owners,
    taskAssignees: row.task_assignees,
    idColumn: row.id_column,
    environmentColumn: row.environment_column,
    objectClassColumn: row.object_class_column,
    statusColumn: row.status_column,
    ignoredColumns: row.ignored_columns,
    taskIdColumn: row.task_id_column,
    attachedAt: row.attached_at.toISOString(),
    exists: row.exists,
    missingLinks: row.missing_links,
  };
}

/** The problems in `state` alone: nothing applied, pending migrations, a foreign schema. */
function migrationProblems(state: MigrationState): string[] {
  if (state.foreign.length > 0) return [foreignSchemaError(state).message];
  if (state.applied.length === 0) return ['no migrations applied: run `fastify-task-events migrate`'];
  if (state.pending.length > 0) {
    return [`migrations ${state.pending.join(', ')} pending: run \`fastify-task-events migrate\``];
  }
  return [];
}

/**
 * Where the database stands: migrations, attached tables (with the columns they were attached
 * with), outbox size and the age of its oldest row, and the problems among them. Works on a
 * database with nothing migrated: it then reads nothing of schema task_events. Read-only.
 */
export async function status(pool: pg.Pool): Promise<TaskEventsStatus> {
  const migrations = await migrationState(pool);
  const problems = migrationProblems(migrations);
  const result: TaskEventsStatus = { migrations, attached: [], outbox: { rows: 0, oldest: null }, problems };
  // A foreign (0.x) schema has tables of the same names and other columns: read none of them.
  if (migrations.foreign.length > 0) return result;

  const { rows: [present] } = await pool.query<{ attachments: boolean; outbox: boolean }>(
    `SELECT to_regclass('task_events.attachments') IS NOT NULL AS attachments,
            to_regclass('task_events.outbox') IS NOT NULL AS outbox`);
  if (present?.attachments) {
    const { rows } = await pool.query<AttachmentRow>(ATTACHMENTS_SQL);
    result.attached = rows.map(toAttached);
    if (rows.length === 0) {
      problems.push('no table attached, so no events are written: run `fastify-task-events attach --tasks <table> …`');
    }
    for (const table of result.attached) {
      if (!table.exists) {
        problems.push(`attached table ${table.tasks} no longer exists: run \`fastify-task-events detach\`, then attach its successor`);
      }
      for (const link of table.missingLinks) {
        problems.push(`${link}, attached with ${table.tasks}, no longer exists: attach ${table.tasks} again without it`);
      }
    }
  }
  if (present?.outbox) {
    const { rows: [outbox] } = await pool.query<{ rows: string; oldest: Date | null }>(
      'SELECT count(*) AS rows, min(created_at) AS oldest FROM task_events.outbox');
    result.outbox = { rows: Number(outbox?.rows ?? 0), oldest: outbox?.oldest?.toISOString() ?? null };
  }
  return result;
}
