// The client against the real plugin (protocol v2) on port 0 and a fresh database: `ws` as the
// WebSocket, tokens minted by the plugin, events written with plain SQL.
import t, { type Test } from 'tap';
import WebSocket from 'ws';
import { Conditions } from '../harness/conditions.js';
import { createTestDatabase, type TestDatabase } from '../harness/db.js';
import {
  createTaskEventsClient, type ClientStatus, type GapInfo, type TaskEvent, type TaskEventName,
  type RetryInfo, type TaskEventsClientOptions, type TaskEventsError,
} from '../client/index.js';
import { startServer, type TestServer } from './helpers/server.js';

const PATH = '/ws/events/tasks/';

const describeRetries = (retries: RetryInfo[]): string => JSON.stringify(retries.slice(-3).map(({ error, ...retry }) =>
  ({ ...retry, error: error instanceof Error ? error.message : (error as { message?: string } | undefined)?.message })));

/** A client of `server` (or of whatever `url` gives) and everything it reported, with waits. */
function recordClient(t: Test, server: TestServer, options: Partial<TaskEventsClientOptions> = {}) {
  const conditions = new Conditions();
  const seen = {
    events: [] as TaskEvent[],
    /** 'events:<count>' and 'cursor:<cursor>' in the order they happened. */
    log: [] as string[],
    statuses: [] as ClientStatus[],
    errors: [] as TaskEventsError[],
    gaps: [] as GapInfo[],
    retries: [] as RetryInfo[],
  };
  const client = createTaskEventsClient({
    url: server.wsUrl(PATH),
    getToken: () => server.token(),
    WebSocket,
    onCursor: (cursor) => {
      seen.log.push(`cursor:${cursor}`);
      conditions.check();
    },
    ...options,
  });
  client.on('events', (events) => {
    seen.events.push(...events);
    seen.log.push(`events:${events.length}`);
    conditions.check();
  });
  client.on('status', (status) => {
    seen.statuses.push(status);
    conditions.check();
  });
  client.on('error', (error) => {
    seen.errors.push(error);
    conditions.check();
  });
  client.on('gap', (info) => {
    seen.gaps.push(info);
    conditions.check();
  });
  client.on('retry', (info) => seen.retries.push(info));
  t.teardown(() => client.close());
  const waitFor = (condition: () => boolean, what: string, timeout = 10_000): Promise<void> =>
    conditions.waitFor(condition, what, timeout, () => `statuses ${seen.statuses}, ${seen.events.length} events, errors ${seen.errors.map((e) => e.code)}, retries ${describeRetries(seen.retries)}`);
  const waitForEvents = (count: number, timeout?: number): Promise<void> => waitFor(() => seen.events.length >= count, `${count} events`, timeout);
  const waitForOpen = (): Promise<void> => waitFor(() => client.status === 'open', "status 'open'");
  return { client, seen, waitFor, waitForEvents, waitForOpen };
}

/** Inserts `count` tasks of Acme, one statement each; their ids in order. */
async function insertTasks(db: TestDatabase, count: number, objectClassId = 1): Promise<number[]> {
  const ids: number[] = [];
  for (let i = 0; i < count; i++) {
    const { rows } = await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, $1, 'x') RETURNING id`, [objectClassId]);
    ids.push(Number(rows[0].id));
  }
  return ids;
}

t.test('the client against the plugin', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db);

  t.test('events arrive in order, each once; onCursor follows each message', async (t) => {
    const { client, seen, waitForEvents, waitForOpen } = recordClient(t, server);
    await waitForOpen();
    t.same(seen.statuses, ['open']);
    t.match(seen.log, [/^cursor:./], 'the ready frame gives a first cursor');
    const ids = await insertTasks(db, 5);
    await waitForEvents(5);
    t.same(seen.events.map((e) => [e.task_id, e.event]), ids.map((id) => [id, 'task_created']));
    t.same(seen.log.filter((line, i) => line.startsWith('events:') && !seen.log[i + 1]?.startsWith('cursor:')), [],
      'each message is followed by its cursor');
    t.equal(seen.log.at(-1), `cursor:${client.cursor}`);
  });

  t.test('filters: only the object classes and event types asked for', async (t) => {
    const { seen, waitForEvents, waitForOpen } = recordClient(t, server, { objectClassIds: [2], eventTypes: ['task_deleted'] });
    await waitForOpen();
    const [kept] = await insertTasks(db, 1, 2);
    const [skipped] = await insertTasks(db, 1, 1);
    await db.pool.query('DELETE FROM tasks WHERE id = ANY($1)', [[skipped, kept]]);
    await waitForEvents(1);
    t.same(seen.events.map((e) => [e.task_id, e.event]), [[kept, 'task_deleted']]);
  });

  t.test('a new client resumes from a saved cursor: the events written meanwhile, exactly once', async (t) => {
    const first = recordClient(t, server);
    await first.waitForOpen();
    await insertTasks(db, 2);
    await first.waitForEvents(2);
    const saved = first.client.cursor;
    first.client.close();
    const missed = await insertTasks(db, 3);
    const second = recordClient(t, server, { cursor: saved });
    await second.waitForEvents(3);
    const live = await insertTasks(db, 1);
    await second.waitForEvents(4);
    t.same(second.seen.events.map((e) => e.task_id), [...missed, ...live]);
  });

  t.test('the server closes and restarts: the client reconnects and gets every event written meanwhile, once', async (t) => {
    let current = await startServer(t, db);
    const { client, seen, waitFor, waitForEvents, waitForOpen } = recordClient(t, current, {
      url: () => current.wsUrl(PATH),
      getToken: () => current.token(),
    });
    await waitForOpen();
    const before = await insertTasks(db, 3);
    await waitForEvents(3);
    await current.app.close();
    await waitFor(() => client.status === 'reconnecting', "status 'reconnecting'");
    const meanwhile = await insertTasks(db, 3);
    current = await startServer(t, db);
    await waitFor(() => client.status === 'open', "status 'open' again", 30_000);
    const after = await insertTasks(db, 3);
    await waitForEvents(9);
    t.same(seen.events.map((e) => e.task_id), [...before, ...meanwhile, ...after], 'all of them, in order, none twice');
    t.same(seen.statuses.filter((status) => status !== 'reconnecting'), ['open', 'open']);
    t.same(seen.gaps, []);
  });

  t.test('a tampered cursor: a gap, then a fresh stream', async (t) => {
    const { seen, waitFor, waitForEvents } = recordClient(t, server, { cursor: 'tampered' });
    await waitFor(() => seen.gaps.length > 0 && seen.statuses.includes('open'), "a gap, then 'open'");
    t.same(seen.gaps, [{ reason: 'invalid_cursor', cursor: 'tampered' }]);
    const ids = await insertTasks(db, 1);
    await waitForEvents(1);
    t.same(seen.events.map((e) => e.task_id), ids);
  });

  t.test('an unknown event type is terminal: error ERR_INVALID_EVENT_TYPES, closed, no reconnect', async (t) => {
    let tokens = 0;
    const { client, seen, waitFor } = recordClient(t, server, {
      eventTypes: ['task_exploded' as TaskEventName],
      getToken: () => {
        tokens++;
        return server.token();
      },
    });
    await waitFor(() => client.status === 'closed', "status 'closed'");
    t.match(seen.errors, [{ name: 'TaskEventsError', code: 'ERR_INVALID_EVENT_TYPES', detail: /./ }]);
    t.same(seen.statuses, ['closed'], 'never open, never reconnecting');
    t.equal(tokens, 1, 'one attempt');
  });

  t.test('getToken failing with status 401 is terminal', async (t) => {
    const refusal = Object.assign(new Error('Unauthorized'), { status: 401 });
    const { client, seen, waitFor } = recordClient(t, server, { getToken: () => Promise.reject(refusal) });
    await waitFor(() => client.status === 'closed', "status 'closed'");
    t.match(seen.errors, [{ code: 'ERR_TOKEN_REJECTED', cause: refusal }]);
  });

  t.test('close() stops everything: no more events, status closed', async (t) => {
    const closing = recordClient(t, server);
    const witness = recordClient(t, server);
    await Promise.all([closing.waitForOpen(), witness.waitForOpen()]);
    closing.client.close();
    t.equal(closing.client.status, 'closed');
    await insertTasks(db, 2);
    await witness.waitForEvents(2);
    t.same(closing.seen.events, [], 'the closed client received nothing a live one did');
    t.same(closing.seen.statuses, ['open', 'closed']);
  });

  t.test('the async iterator yields the messages in order and ends on close()', async (t) => {
    const { client, waitForOpen } = recordClient(t, server);
    await waitForOpen();
    const iterator = client[Symbol.asyncIterator](); // buffers from here on
    const ids = await insertTasks(db, 3);
    const received: number[] = [];
    for await (const events of iterator) {
      received.push(...events.map((e) => e.task_id));
      if (received.length >= 3) client.close();
    }
    t.same(received, ids);
  });
});
