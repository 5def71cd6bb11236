#!/usr/bin/env node
// `fastify-task-events`: the operator's side of the plugin (migrate, attach, detach, grant,
// status). It parses flags, calls what lib/ exports and prints the outcome; the work is in lib/.
// Exit codes: 0 ok, 1 failure, 2 usage.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import pg from 'pg';
import { attach, detach, type AttachOptions } from '../lib/attach.js';
import { migrate, migrationState } from '../lib/migrate.js';
import { grant, grantStatements } from '../lib/privileges.js';
import { status, type AttachedTable, type TaskEventsStatus } from '../lib/status.js';

const USAGE = `Usage: fastify-task-events <command> [flags]

Commands:
  migrate    apply the migrations (schema task_events)
  attach     attach the capture triggers to your tables
  detach     detach one tasks table (--tasks T), or every attached table
  grant      grant the plugin's runtime role what it needs (--role R; --print: only print the SQL)
  status     migrations, attached tables, outbox; exits 1 when something is missing
  help       this text

Flags of attach (each optional; left out, the default in parentheses):
  --tasks T                  the tasks table (public.tasks)
  --task-owners T|none       the owners table (public.task_owners); none: the app has none
  --task-assignees T|none    the assignees table (public.task_assignees); none: the app has none
  --id-column C              the tasks table's id column (id)
  --environment-column C     its environment (tenant) column (environment_id)
  --object-class-column C    its object class column (object_class_id)
  --status-column C|none     its status column (status); none: tasks have no status
  --ignored-columns C,C|none columns whose change is no event (updated_at, when there is one)
  --task-id-column C         the owners' and assignees' task column (task_id)

Everywhere:
  --database-url URL         the database (default: $DATABASE_URL)
  --verbose                  print stack traces
  -h, --help                 this text`;

const ATTACH_FLAGS = {
  tasks: 'tasks', 'task-owners': 'taskOwners', 'task-assignees': 'taskAssignees', 'id-column': 'idColumn',
  'environment-column': 'environmentColumn', 'object-class-column': 'objectClassColumn',
  'status-column': 'statusColumn', 'ignored-columns': 'ignoredColumns', 'task-id-column': 'taskIdColumn',
} as const satisfies Record<string, keyof AttachOptions>;

const OPTIONS = {
  'database-url': { type: 'string' }, verbose: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
  role: { type: 'string' }, print: { type: 'boolean' },
  ...Object.fromEntries(Object.keys(ATTACH_FLAGS).map((flag) => [flag, { type: 'string' }])),
} satisfies ParseArgsConfig['options'];

/** The flags each command takes, besides --database-url, --verbose and --help. */
const COMMANDS: Record<string, readonly string[]> = {
  migrate: [], attach: Object.keys(ATTACH_FLAGS), detach: ['tasks'], grant: ['role', 'print'], status: [], help: [],
};
const GLOBAL_FLAGS = ['database-url', 'verbose', 'help'];

type Flags = Partial<Record<string, string | boolean>>;

/** A mistake in the command line: exit 2, with the fix in the message. */
class UsageError extends Error {}

function parse(argv: string[]): { command: string; flags: Flags } {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const [command, ...extra] = parsed.positionals;
  const flags: Flags = parsed.values;
  if (flags.help || command === 'help' || command === undefined) return { command: 'help', flags };
  const allowed = COMMANDS[command];
  if (!allowed) throw new UsageError(`unknown command "${command}": use one of ${Object.keys(COMMANDS).join(', ')}`);
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}" after ${command}`);
  const foreign = Object.keys(flags).find((flag) => !allowed.includes(flag) && !GLOBAL_FLAGS.includes(flag));
  if (foreign) throw new UsageError(`--${foreign} is not a flag of ${command}`);
  return { command, flags };
}

/** attach()'s options from the flags: `none` is NULL (an empty list for --ignored-columns). */
function attachOptions(flags: Flags): AttachOptions {
  const options: Record<string, string | string[] | null> = {};
  for (const [flag, option] of Object.entries(ATTACH_FLAGS)) {
    const value = flags[flag];
    if (typeof value !== 'string') continue;
    if (option === 'ignoredColumns') {
      options[option] = value === 'none' ? [] : value.split(',').map((column) => column.trim()).filter(Boolean);
    } else {
      options[option] = value === 'none' && ['taskOwners', 'taskAssignees', 'statusColumn'].includes(option) ? null : value;
    }
  }
  return options as AttachOptions;
}

/** `3m 12s`: how long ago `iso` was, in its two largest units. */
function age(iso: string): string {
  let seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  const parts: string[] = [];
  for (const [unit, size] of [['d', 86_400], ['h', 3_600], ['m', 60], ['s', 1]] as const) {
    if (seconds < size && !(unit === 's' && parts.length === 0)) continue;
    parts.push(`${Math.floor(seconds / size)}${unit}`);
    seconds %= size;
  }
  return parts.slice(0, 2).join(' ');
}

function printAttached(table: AttachedTable): void {
  console.log(`  ${table.tasks}${table.exists ? '' : ' (NO LONGER EXISTS)'}, attached ${table.attachedAt}`);
  console.log(`    owners: ${table.taskOwners ?? 'none'}; assignees: ${table.taskAssignees ?? 'none'}; ` +
    `task id column: ${table.taskIdColumn}`);
  console.log(`    id: ${table.idColumn}; environment: ${table.environmentColumn}; ` +
    `object class: ${table.objectClassColumn}; status: ${table.statusColumn ?? 'none'}; ` +
    `ignored: ${table.ignoredColumns.join(', ') || 'none'}`);
}

function printStatus(report: TaskEventsStatus): void {
  const list = (versions: number[]): string => versions.join(', ') || 'none';
  console.log(`migrations: applied ${list(report.migrations.applied)}; pending ${list(report.migrations.pending)}` +
    (report.migrations.foreign.length > 0 ? `; foreign ${list(report.migrations.foreign)}` : ''));
  console.log(report.attached.length === 0 ? 'attached: none' : 'attached:');
  report.attached.forEach(printAttached);
  const { rows, oldest } = report.outbox;
  console.log(`outbox: ${rows} row${rows === 1 ? '' : 's'}${oldest ? `, the oldest ${age(oldest)} old (${oldest})` : ''}`);
  if (report.problems.length > 0) console.log(`problems:\n${report.problems.map((problem) => `  - ${problem}`).join('\n')}`);
}

/** Runs `command` against the database; returns the exit code. */
async function run(command: string, flags: Flags, pool: pg.Pool): Promise<number> {
  switch (command) {
    case 'migrate': {
      const before = await migrationState(pool);
      await migrate(pool);
      const after = await migrationState(pool);
      const applied = after.applied.filter((version) => !before.applied.includes(version));
      console.log(applied.length > 0
        ? `applied migrations ${applied.join(', ')}`
        : `nothing to apply: migrations ${after.applied.join(', ')} were applied already`);
      return 0;
    }
    case 'attach': {
      await attach(pool, attachOptions(flags));
      const { attached } = await status(pool);
      const latest = attached.reduce<AttachedTable | undefined>(
        (found, table) => (!found || table.attachedAt >= found.attachedAt ? table : found), undefined);
      console.log('attached:');
      if (latest) printAttached(latest);
      return 0;
    }
    case 'detach': {
      const detached = await detach(pool, flags.tasks as string | undefined);
      console.log(detached === 0 ? 'nothing was attached' : `detached ${detached} table${detached === 1 ? '' : 's'}`);
      return 0;
    }
    case 'grant': {
      const role = flags.role as string;
      await grant(pool, role);
      console.log(`${grantStatements(role).join('\n')}\n-- granted to ${role}`);
      return 0;
    }
    default: {
      const report = await status(pool);
      printStatus(report);
      return report.problems.length > 0 ? 1 : 0;
    }
  }
}

/** The readable part of an error: pg's connection errors can be AggregateErrors with no message. */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  if (error.message) return error.message;
  if (error instanceof AggregateError) return error.errors.map(describe).join('; ');
  return (error as { code?: string }).code ?? error.name;
}

/** PostgreSQL's HINT, if the error or its cause has one, and the CLI's spelling of `x => NULL`. */
function hints(error: unknown): string[] {
  const found: string[] = [];
  for (let current = error; current instanceof Error; current = current.cause) {
    const { hint } = current as { hint?: string };
    if (hint) found.push(hint);
  }
  const message = describe(error);
  for (const [, argument] of message.matchAll(/\b([a-z_]+) => NULL\b/g)) {
    found.push(`with this CLI: --${argument?.replaceAll('_', '-')} none`);
  }
  return found;
}

async function main(argv: string[]): Promise<number> {
  let verbose = argv.includes('--verbose');
  try {
    const { command, flags } = parse(argv);
    verbose = flags.verbose === true;
    if (command === 'help') {
      console.log(USAGE);
      return 0;
    }
    if (command === 'grant' && typeof flags.role !== 'string') {
      throw new UsageError('missing --role: pass the role the plugin connects as, e.g. --role crm_app');
    }
    if (command === 'grant' && flags.print) {
      console.log(grantStatements(flags.role as string).join('\n'));
      return 0;
    }
    const url = (flags['database-url'] as string | undefined) ?? process.env.DATABASE_URL;
    if (!url) throw new UsageError('no database: pass --database-url or set DATABASE_URL');
    const pool = new pg.Pool({ connectionString: url, max: 2, connectionTimeoutMillis: 15_000 });
    pool.on('error', () => {}); // an idle client's error: the query under way, if any, reports it
    try {
      return await run(command, flags, pool);
    } finally {
      await pool.end();
    }
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`error: ${error.message}\nrun \`fastify-task-events --help\` for usage`);
      return 2;
    }
    console.error(`error: ${describe(error)}`);
    for (const hint of hints(error)) console.error(`hint: ${hint}`);
    if (verbose) console.error(error);
    return 1;
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
  // Everything is closed by now; should a socket linger, it must not keep an operator waiting.
  setTimeout(() => process.exit(code), 2_000).unref();
});
