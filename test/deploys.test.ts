// Deploys and crashes, with the client module: two instances of the plugin (each a process of its
// own) on one database, 20 clients of `fastify-task-events/client` going wherever an instance is
// up, writes going on throughout, while each instance is stopped in turn by SIGTERM (a deploy)
// and by SIGKILL (a crash) and started again, and every backend of the plugin's role is
// terminated. At the end every client has every event of its tenant committed since it first
// connected, exactly once, and one writer's events in the order it committed them.
import t from 'tap';
import WebSocket from 'ws';
import { createTaskEventsClient, type TaskEvent, type TaskEventsClient } from '../client/index.js';
import { terminateBackends, waitUntil } from '../harness/backends.js';
import { createTestDatabase } from '../harness/db.js';
import type { PluginStats } from '../harness/lines.js';
import { ServerProcess } from '../harness/server-process.js';

const CLIENTS = 20;

t.test('two instances, SIGTERM and SIGKILL in turn, backends terminated: every client gets every event once, in order', async (t) => {
  const db = await createTestDatabase(t);
  const role = new URL(db.appUrl as string).username;
  const start = (): Promise<ServerProcess<PluginStats>> => ServerProcess.startPlugin(
    { plugin: { connectionString: db.appUrl as string, messageTime: 100, pollInterval: 500 } }, { teardown: t });
  const instances = [await start(), await start()];
  const live = (): ServerProcess<PluginStats>[] => instances.filter((instance) => instance.exit === null);
  const pick = (): ServerProcess<PluginStats> => {
    const up = live();
    if (up.length === 0) throw new Error('no instance up');
    return up[Math.floor(Math.random() * up.length)] as ServerProcess<PluginStats>;
  };

  const clients = Array.from({ length: CLIENTS }, (_, index) => {
    const environmentId = index % 4 === 3 ? 2 : 1;
    const record = { environmentId, firstCursor: '', events: [] as TaskEvent[], statuses: [] as string[], errors: [] as Error[] };
    const client: TaskEventsClient = createTaskEventsClient({
      url: () => `ws://127.0.0.1:${pick().port}/ws/events/tasks/`,
      getToken: () => pick().token(environmentId),
      WebSocket: WebSocket as never,
      onCursor: (cursor) => {
        if (!record.firstCursor) record.firstCursor = cursor;
      },
    });
    client.on('events', (events) => void record.events.push(...events));
    client.on('status', (status) => void record.statuses.push(status));
    client.on('error', (error) => void record.errors.push(error));
    t.teardown(() => client.close());
    return { client, record };
  });
  await waitUntil(() => clients.every(({ record }) => record.firstCursor !== ''), 'every client ready', 30_000);

  // One writer: one connection, transactions one after another, so its ids rise in commit order.
  const writes = { count: 0, stopped: false };
  const writer = (async () => {
    const connection = await db.pool.connect();
    try {
      while (!writes.stopped) {
        const environmentId = writes.count % 5 === 4 ? 2 : 1;
        await connection.query(
          `INSERT INTO tasks (environment_id, object_class_id, name) SELECT $1, $2, 'deploy ' || n FROM generate_series(1, $3::int) n`,
          [environmentId, environmentId === 1 ? 1 + (writes.count % 3) : 4, 1 + (writes.count % 3)]);
        writes.count++;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    } finally {
      connection.release();
    }
  })();
  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  const restart = async (index: number, how: 'SIGTERM' | 'SIGKILL'): Promise<void> => {
    const instance = instances[index] as ServerProcess<PluginStats>;
    if (how === 'SIGTERM') t.match(await instance.terminate(), { code: 0 }, `instance ${index} exits 0 on SIGTERM`);
    else instance.kill();
    await pause(400);
    instances[index] = await start();
  };

  await pause(800);
  await restart(0, 'SIGTERM');
  await pause(800);
  await restart(1, 'SIGKILL');
  await pause(800);
  t.ok((await terminateBackends(db, { user: role })).length > 0, 'the plugin\'s backends terminated');
  await pause(800);
  await restart(1, 'SIGTERM');
  await pause(800);
  await restart(0, 'SIGKILL');
  await pause(800);
  writes.stopped = true;
  await writer;
  t.ok(writes.count > 50, `writes went on throughout (${writes.count} transactions)`);

  // What each client is owed: its tenant's rows its first snapshot did not see.
  const owedIds = async (environmentId: number, cursor: string): Promise<number[]> => {
    const snapshot = Buffer.from(cursor.split('.')[0] as string, 'base64url').toString();
    const { rows } = await db.pool.query<{ task_id: string }>(
      `SELECT task_id FROM task_events.outbox WHERE environment_id = $1 AND NOT pg_visible_in_snapshot(xid, $2::pg_snapshot)
       ORDER BY id`, [environmentId, snapshot]);
    return rows.map((row) => Number(row.task_id));
  };
  for (const [index, { record }] of clients.entries()) {
    const owed = await owedIds(record.environmentId, record.firstCursor);
    await waitUntil(() => record.events.length >= owed.length, `client ${index}: ${owed.length} events`, 30_000).catch(() => {});
    const received = record.events.map((event) => event.task_id);
    t.equal(new Set(received).size, received.length, `client ${index}: no event twice`);
    t.strictSame([...received].sort((a, b) => a - b), owed, `client ${index}: every event it is owed (${owed.length}), nothing else`);
    t.strictSame(received, [...received].sort((a, b) => a - b), `client ${index}: the writer's events in its commit order`);
    t.strictSame(record.errors, [], `client ${index}: no terminal error`);
    t.ok(record.statuses.filter((status) => status === 'reconnecting').length >= 1, `client ${index}: it reconnected`);
  }
});
