// The least privileges the plugin's runtime role needs, declared once: `grant` writes them as
// SQL, and the plugin checks them at ready() so a missing one fails startup with the fix instead
// of `permission denied` in the logs twice a second.
import type pg from 'pg';

/** One object of schema task_events and what the runtime role does with it. */
interface Privilege {
  kind: 'SCHEMA' | 'TABLE' | 'SEQUENCE' | 'FUNCTION';
  object: string;
  privileges: readonly string[];
  /** Why the plugin needs it. */
  why: string;
}

/** What the plugin's role needs on schema task_events, and nothing else. */
export const RUNTIME_PRIVILEGES: readonly Privilege[] = Object.freeze([
  { kind: 'SCHEMA', object: 'task_events', privileges: ['USAGE'], why: 'every object below' },
  { kind: 'TABLE', object: 'task_events.outbox', privileges: ['SELECT', 'DELETE'], why: 'reads events; prunes old rows' },
  { kind: 'SEQUENCE', object: 'task_events.outbox_id_seq', privileges: ['SELECT'], why: 'the outbox position of a handshake' },
  { kind: 'TABLE', object: 'task_events.tokens', privileges: ['SELECT', 'INSERT', 'UPDATE', 'DELETE'], why: 'one-time tokens' },
  { kind: 'TABLE', object: 'task_events.prune_horizon', privileges: ['SELECT', 'INSERT', 'DELETE'], why: 'the pruner\'s marks' },
  { kind: 'TABLE', object: 'task_events.schemaversion', privileges: ['SELECT'], why: 'the migration check at startup' },
  { kind: 'TABLE', object: 'task_events.attachments', privileges: ['SELECT'], why: 'the attach check at startup' },
  { kind: 'TABLE', object: 'task_events.cursor_key', privileges: ['SELECT'], why: 'signs and checks v2 cursors' },
  { kind: 'FUNCTION', object: 'task_events.before_read()', privileges: ['EXECUTE'], why: 'arms the doorbell before a read' },
  { kind: 'FUNCTION', object: 'task_events.doorbell_taken()', privileges: ['EXECUTE'], why: 'looks at the doorbell' },
]);

/** `"crm_app"`: a role name quoted as an SQL identifier. */
export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** The GRANT statements that give `role` what the plugin needs at run time (and no more). */
export function grantStatements(role: string): string[] {
  const grantee = quoteIdentifier(role);
  return RUNTIME_PRIVILEGES.map(({ kind, object, privileges }) => `GRANT ${privileges.join(', ')} ON ${kind} ${object} TO ${grantee};`);
}

/** Grants `role` what the plugin needs, in one transaction. */
export async function grant(pool: pg.Pool, role: string): Promise<void> {
  await pool.query(['BEGIN;', ...grantStatements(role), 'COMMIT;'].join('\n'));
}

/** How to ask whether an object exists, and whether the current role holds a privilege on it. */
const CHECKS = {
  SCHEMA: { exists: 'to_regnamespace', holds: 'has_schema_privilege' },
  TABLE: { exists: 'to_regclass', holds: 'has_table_privilege' },
  SEQUENCE: { exists: 'to_regclass', holds: 'has_sequence_privilege' },
  FUNCTION: { exists: 'to_regprocedure', holds: 'has_function_privilege' },
} as const;

/** What the current role of `pool` holds of {@link RUNTIME_PRIVILEGES}. */
export interface PrivilegeCheck {
  role: string;
  /** Privileges it lacks, as `SELECT on task_events.outbox`. */
  missing: string[];
  /** Objects that do not exist (the migrations are not all applied). */
  absent: string[];
}

/** Checks the pool's role against {@link RUNTIME_PRIVILEGES}; works on a database with nothing migrated. */
export async function missingPrivileges(pool: pg.Pool): Promise<PrivilegeCheck> {
  const checks = RUNTIME_PRIVILEGES.flatMap(({ kind, object, privileges }) =>
    privileges.map((privilege) => ({ kind, object, privilege })));
  // Without USAGE on the schema nothing in it can even be looked up: everything is missing.
  const { rows: [schema] } = await pool.query<{ role: string; exists: boolean; usage: boolean | null }>(
    `SELECT current_user AS role, to_regnamespace('task_events') IS NOT NULL AS exists,
            CASE WHEN to_regnamespace('task_events') IS NOT NULL THEN has_schema_privilege('task_events', 'USAGE') END AS usage`);
  if (!schema?.exists) return { role: String(schema?.role), missing: [], absent: ['task_events'] };
  if (!schema.usage) {
    return { role: schema.role, missing: checks.map(({ privilege, object }) => `${privilege} on ${object}`), absent: [] };
  }
  const columns = checks.map(({ kind, privilege }, index) =>
    `CASE WHEN ${CHECKS[kind].exists}($${index + 1}) IS NOT NULL THEN ${CHECKS[kind].holds}($${index + 1}, '${privilege}') END AS "${index}"`);
  const { rows } = await pool.query<Record<string, boolean | string | null>>(
    `SELECT current_user AS role, ${columns.join(', ')}`,
    checks.map((check) => check.object),
  );
  const row = rows[0] ?? {};
  const result = (index: number): boolean | string | null | undefined => row[String(index)];
  return {
    role: String(row.role),
    missing: checks.filter((_, index) => result(index) === false).map(({ privilege, object }) => `${privilege} on ${object}`),
    absent: [...new Set(checks.filter((_, index) => result(index) === null).map(({ object }) => object))],
  };
}
