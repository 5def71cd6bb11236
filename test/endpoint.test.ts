import t from 'tap';
import { createTestDatabase } from './helpers/db.js';
import { startServer, TestClient } from './helpers/server.js';

t.test('a client receives the events of its environment', async (t) => {
  const db = await createTestDatabase(t);
  const server = await startServer(t, db);
  const client = await TestClient.connect(t, await server.endpoint());
  await db.pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'one'), (2, 4, 'other tenant')`);
  await db.pool.query(`UPDATE tasks SET status = 'done' WHERE name = 'one'`);
  const events = await client.waitForEvents(2);
  t.same(events.map((e) => e.event), ['task_created', 'task_status_changed']);
  t.match(events[0]?.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/);
});
