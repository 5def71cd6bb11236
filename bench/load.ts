// `npm run bench:load [-- --clients 5000 --tasks 1000 --concurrency 200 --message-time 5000]`:
// N clients on one plugin server, ONE statement creating M tasks, every client must receive exactly
// those M events. Prints the figures and writes them as JSON to bench/results/ (git-ignored).
// Runs against a fresh database on TEST_DATABASE_URL (or DATABASE_URL), dropped after; with neither
// set, a throwaway embedded PostgreSQL.
import { parseArgs } from 'node:util';
import { mib, runLoad, type LoadResult } from '../harness/load.js';
import { positive, printRows, withBenchDatabase, writeResult } from './support.js';

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
  printRows(lines as [string, string][]);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { clients: { type: 'string' }, tasks: { type: 'string' }, concurrency: { type: 'string' }, 'message-time': { type: 'string' } },
  });
  const clients = positive('clients', values.clients, 5000);
  const tasks = positive('tasks', values.tasks, 1000);
  const connectConcurrency = positive('concurrency', values.concurrency, 200);
  const messageTime = values['message-time'] === undefined ? undefined : positive('message-time', values['message-time'], 0);

  return withBenchDatabase(async (database) => {
    const started = new Date();
    const elapsed = (): string => `[${((Date.now() - started.getTime()) / 1000).toFixed(1)} s]`;
    const result = await runLoad({ databaseUrl: database.url, clients, tasks, connectConcurrency, messageTime, phaseTimeout: 120_000, log: (line) => console.log(`# ${elapsed()} ${line}`) });
    report(result);
    const file = await writeResult('load', started, { options: { clients, tasks, connectConcurrency, messageTime: messageTime ?? 'default' }, result });
    console.log(`# written to ${file}`);
    const clean = result.exact === result.clients && Object.values(result.problems).every((count) => count === 0);
    return clean ? 0 : 1;
  });
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
