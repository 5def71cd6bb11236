// Load (issue 3, item 9), at a size the suite can afford: 1,000 clients on one plugin server (its own
// process), one statement creating 1,000 tasks, and every client receives exactly those 1,000 events,
// each once, in order. `npm run bench:load` runs the same with 5,000 clients and prints the figures.
import t from 'tap';
import { createTestDatabase } from '../harness/db.js';
import { runLoad } from '../harness/load.js';

const CLIENTS = Number(process.env.LOAD_TEST_CLIENTS ?? 1000);
const TASKS = 1000;

t.test(`${CLIENTS} clients each receive the ${TASKS} events of one statement exactly once`, async (t) => {
  const db = await createTestDatabase(t);
  // messageTime 1 s instead of 5 s: the check's last event then waits 1 s for its timed message.
  const result = await runLoad({ databaseUrl: db.url, clients: CLIENTS, tasks: TASKS, messageTime: 1000, phaseTimeout: 30_000 });
  t.comment(
    `connect ${result.connectMs} ms, commit → all received ${result.commitToAllReceivedMs} ms, ` +
      `server sent ${result.commitToServerSentMs} ms after, ${result.messagesPerClient.min}-${result.messagesPerClient.max} messages per client, ` +
      `server rss ${Math.round(result.serverRss.idle / 2 ** 20)} → ${Math.round(result.serverRss.after / 2 ** 20)} MiB`,
  );
  t.same(result.problems, { lost: 0, duplicated: 0, unexpected: 0, outOfOrder: 0, closedEarly: 0 }, 'no event lost, repeated, foreign or out of order; no client dropped');
  t.equal(result.exact, CLIENTS, 'every client received exactly the statement\'s events');
});
