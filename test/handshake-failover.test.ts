// The plugin's idle pool clients lose their backends (a failover, a restart, an administrator):
// the next handshakes are served on live connections, not answered 500 — the handshake's queries
// try again when their pooled connection turns out to be dead (lib/pool.ts onLiveConnection).
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { terminateBackends } from '../harness/backends.js';
import { createTestDatabase } from '../harness/db.js';
import { withApplicationName } from './helpers/backends.js';
import { startServer, TestClient } from './helpers/server.js';

t.test('handshakes right after every backend of the plugin was terminated all succeed', async (t) => {
  const db = await createTestDatabase(t);
  const applicationName = `te_failover_${randomBytes(3).toString('hex')}`;
  const server = await startServer(t, db, { connectionString: withApplicationName(db.appUrl as string, applicationName) });
  const statuses: Array<number | 'open'> = [];
  for (let round = 0; round < 10; round++) {
    // several idle clients in the pool, then their backends terminated, then handshakes at once
    await Promise.all(Array.from({ length: 4 }, async () => (await TestClient.connect(t, await server.endpoint())).socket.close()));
    const tokens = await Promise.all(Array.from({ length: 4 }, () => server.token()));
    t.ok((await terminateBackends(db, { applicationName })).length > 0, `round ${round}: backends terminated`);
    for (const token of tokens) {
      statuses.push(await TestClient.connect(t, server.wsUrl(`/ws/events/tasks/?uuid=${token}`)).then(
        () => 'open' as const, (error: { statusCode?: number }) => error.statusCode ?? -1));
    }
  }
  t.strictSame(statuses.filter((status) => status !== 'open'), [], 'no handshake refused (40 in all)');
});
