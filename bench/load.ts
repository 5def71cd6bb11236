// `npm run bench:load [-- --clients 5000 --tasks 1000 --concurrency 200 --message-time 5000]`:
// N clients on one plugin server, ONE statement creating M tasks, every client must receive exactly
// those M events. Prints the figures and writes them as JSON to bench/results/ (git-ignored).
// Runs against a fresh database on TEST_DATABASE_URL (or DATABASE_URL), dropped after; with neither
// set, a throwaway embedded PostgreSQL.
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { startEmbeddedPostgres } from '../example/embedded.js';
import { migrate } from '../lib/migrate.js';
import { applyReferenceSchema } from '../test/helpers/db.js';
import { mib, runLoad, type LoadResult } from '../test/helpers/load.js';

const RESULTS = new URL('./results/', import.meta.url);

function positive(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isSafeInteger(parsed) || parsed < 1) throw new Error(`--${name} must be a positive integer, got '${value}'`);
  return parsed;
}

/** A database of its own on `serverUrl`, with migrations and the reference schema; `drop` removes it. */
async function createDatabase(serverUrl: string): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `task_events_bench_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const pool = new pg.Pool({ connectionString: url.toString(), max: 2 });
  try {
    await migrate(pool);
    await applyReferenceSchema(pool);
  } finally {
    await pool.end();
  }
  return {
    url: url.toString(),
    drop: async () => {
      const dropper = new pg.Client({ connectionString: serverUrl });
      await dropper.connect();
      await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await dropper.end();
    },
  };
}

function report(result: LoadResult): void {
  const lines = [
    ['clients', String(result.clients)],
    ['events per client', String(result.tasks)],
    ['connect (all open and joined)', `${(result.connectMs / 1000).toFixed(2)} s`],
    ['statement (INSERT … generate_series)', `${result.statementMs} ms`],
    ['commit → server sent the last message', result.commitToServerSentMs === null ? 'n/a' : `${result.commitToServerSentMs} ms`],
    ['commit → first client complete', `${result.commitToFirstCompleteMs} ms`],
    ['commit → all received', `${result.commitToAllReceivedMs} ms`],
    ['messages per client', `${result.messagesPerClient.min}–${result.messagesPerClient.max}`],
    ['server RSS idle / connected / after', `${mib(result.serverRss.idle)} / ${mib(result.serverRss.connected)} / ${mib(result.serverRss.after)}`],
    ['client process RSS after', mib(result.clientRss)],
    ['clients with exactly the events', `${result.exact} of ${result.clients}`],
    ['lost / duplicated / unexpected / out of order / closed early', Object.values(result.problems).join(' / ')],
  ];
  const width = Math.max(...lines.map(([label]) => (label as string).length));
  for (const [label, value] of lines) console.log(`${(label as string).padEnd(width)}  ${value}`);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { clients: { type: 'string' }, tasks: { type: 'string' }, concurrency: { type: 'string' }, 'message-time': { type: 'string' } },
  });
  const clients = positive('clients', values.clients, 5000);
  const tasks = positive('tasks', values.tasks, 1000);
  const connectConcurrency = positive('concurrency', values.concurrency, 200);
  const messageTime = values['message-time'] === undefined ? undefined : positive('message-time', values['message-time'], 0);

  let serverUrl = process.env.TEST_DATABASE_URL || process.env.DATABASE_URL;
  let stopEmbedded = async (): Promise<void> => {};
  if (!serverUrl) {
    const embedded = await startEmbeddedPostgres({ persistent: false });
    serverUrl = embedded.url;
    stopEmbedded = embedded.stop;
    console.log('# embedded PostgreSQL (set TEST_DATABASE_URL to use another server)');
  }
  try {
    const database = await createDatabase(serverUrl);
    try {
      const started = new Date();
      const elapsed = (): string => `[${((Date.now() - started.getTime()) / 1000).toFixed(1)} s]`;
      const result = await runLoad({ databaseUrl: database.url, clients, tasks, connectConcurrency, messageTime, phaseTimeout: 120_000, log: (line) => console.log(`# ${elapsed()} ${line}`) });
      report(result);
      const machine = { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.release()}` };
      await mkdir(RESULTS, { recursive: true });
      const file = new URL(`load-${started.toISOString().replace(/[:.]/g, '-')}.json`, RESULTS);
      await writeFile(file, `${JSON.stringify({ startedAt: started.toISOString(), machine, options: { clients, tasks, connectConcurrency, messageTime: messageTime ?? 'default' }, result }, null, 2)}\n`);
      console.log(`# written to ${file.pathname}`);
      const clean = result.exact === result.clients && Object.values(result.problems).every((count) => count === 0);
      return clean ? 0 : 1;
    } finally {
      await database.drop();
    }
  } finally {
    await stopEmbedded();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
