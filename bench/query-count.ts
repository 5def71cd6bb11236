// Imported into the plugin server process of bench/storm.ts (`node --import`, after tsx): counts
// the SQL statements the process's pg clients send (the plugin's pool and its LISTEN connection:
// every query goes through pg.Client#query), by what each is for, and the transactions they make,
// and prints them as one event line of harness/lines.ts when the process exits:
//   {"event":"queries","at":…,"statements":{"token":N,"streamPoint":N,"backlog":N,"other":N},
//    "backlogReads":N,"transactions":N,"other":{"<first line>":N,…}}
// Why not pg_stat_statements: it needs shared_preload_libraries, a restart of a shared server.
// The kinds are told by the plugin's SQL text (lib/tokens.ts, lib/outbox.ts, lib/backlog.ts):
// the bench fails when a resume's kinds go uncounted, so a change of that text cannot hide here.
import pg from 'pg';

/** What a statement is for: a v2 handshake's two queries, a resume's backlog read, anything else. */
type Kind = 'token' | 'streamPoint' | 'backlog' | 'other';

/** The backlog read opens its transaction with exactly this (the listener's read adds statements after it). */
const BACKLOG_BEGIN = 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY';

const statements: Record<Kind, number> = { token: 0, streamPoint: 0, backlog: 0, other: 0 };
const other = new Map<string, number>();
let backlogReads = 0;
let transactions = 0;
/** Clients inside an explicit transaction, and whether it is a backlog read. */
const open = new WeakMap<pg.Client, { backlog: boolean }>();

function kindOf(client: pg.Client, text: string): Kind {
  const transaction = open.get(client);
  if (transaction) {
    if (/^\s*(COMMIT|ROLLBACK)\b/i.test(text)) {
      open.delete(client);
      transactions++;
    }
    return transaction.backlog ? 'backlog' : 'other';
  }
  if (/^\s*BEGIN\b/i.test(text)) {
    const backlog = text === BACKLOG_BEGIN;
    open.set(client, { backlog });
    if (backlog) backlogReads++;
    return backlog ? 'backlog' : 'other';
  }
  transactions++; // autocommit: one statement (or one simple-query text), one transaction
  if (text.includes('UPDATE task_events.tokens SET used_at')) return 'token';
  if (text.includes('pg_current_snapshot()') && text.includes('AS horizon')) return 'streamPoint';
  return 'other';
}

const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
pg.Client.prototype.query = function countedQuery(this: pg.Client, ...args: unknown[]): unknown {
  const [config] = args;
  const text = typeof config === 'string' ? config : String((config as { text?: unknown } | undefined)?.text ?? '');
  const kind = kindOf(this, text);
  statements[kind]++;
  if (kind === 'other') {
    const head = text.trim().split('\n')[0]?.slice(0, 60) ?? '';
    other.set(head, (other.get(head) ?? 0) + 1);
  }
  return query.apply(this, args);
} as typeof pg.Client.prototype.query;

// Synchronous on a pipe (Linux): the line is out before the process is.
process.on('exit', () => {
  process.stdout.write(`${JSON.stringify({ event: 'queries', at: Date.now(), statements, backlogReads, transactions, other: Object.fromEntries(other) })}\n`);
});
