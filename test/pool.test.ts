// lib/pool.ts against a real PostgreSQL: ending a pool.
import t from 'tap';
import pg from 'pg';
import { createTestDatabase } from '../harness/db.js';
import { endPool } from '../lib/pool.js';

const db = await createTestDatabase(t, { schema: false, migrate: false });

/** A pool with `count` connections made, all idle, and the clients it made. */
async function poolWith(count: number): Promise<{ pool: pg.Pool; clients: pg.Client[] }> {
  const pool = new pg.Pool({ connectionString: db.url, max: count });
  const clients: pg.Client[] = [];
  pool.on('connect', (client) => clients.push(client as unknown as pg.Client));
  const checkedOut = await Promise.all(Array.from({ length: count }, () => pool.connect()));
  for (const client of checkedOut) client.release();
  return { pool, clients };
}

/** Whether a client's socket has closed. */
const socketClosed = (client: pg.Client): boolean => Boolean((client as unknown as { connection: { stream: { destroyed: boolean } } }).connection.stream.destroyed);

t.test("pg-pool's end() resolves while its connections are still closing", async (t) => {
  const { pool, clients } = await poolWith(3);
  await pool.end();
  t.ok(clients.some((client) => !socketClosed(client)), 'a socket still open when end() resolved');
});

t.test('endPool resolves once every connection of the pool has closed', async (t) => {
  const { pool, clients } = await poolWith(3);
  await endPool(pool);
  t.equal(clients.length, 3);
  t.ok(clients.every(socketClosed), 'every socket closed');
  await endPool(new pg.Pool({ connectionString: db.url }));
  t.pass('a pool that never connected ends at once');
});
